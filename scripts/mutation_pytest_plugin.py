"""pytest plugin loaded only by scripts/mutation (``-p scripts.mutation_pytest_plugin``).

A mutant that breaks a Hypothesis property is killed as soon as the first failing example is
found; shrinking that example to a minimal one, which helps a person reading the failure, can
take minutes under a mutant and would only turn kills into timeouts. No example database
either: each mutant starts from the same fixed seed, so a run is repeatable.
"""

from __future__ import annotations

from hypothesis import Phase, settings

settings.register_profile(
    "mutation",
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    database=None,
    deadline=None,
)
settings.load_profile("mutation")
