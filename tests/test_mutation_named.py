"""The named mutants of scripts/mutation-named.toml still apply (``scripts/mutation --named``
runs them; that takes minutes, so the suite only checks they have not gone stale)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mutation_named", ROOT / "scripts" / "mutation_named.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation_named", module)
    spec.loader.exec_module(module)
    return module


named = _module()
MUTANTS = named.load()


def test_there_are_named_mutants_with_unique_ids() -> None:
    assert len(MUTANTS) >= 30
    assert len({m.id for m in MUTANTS}) == len(MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_named_mutant_still_applies(mutant: object) -> None:
    """Its code is still in its file (once, or at its ``nth`` place), the change still
    compiles (so a kill is never a syntax error), and its tests exist and are not slow."""
    source = (ROOT / mutant.file).read_text("utf-8")  # type: ignore[attr-defined]
    mutated = mutant.apply(source)  # type: ignore[attr-defined]
    assert mutated != source
    compile(mutated, mutant.file, "exec")  # type: ignore[attr-defined]
    for test in mutant.tests:  # type: ignore[attr-defined]
        path = ROOT / test.partition("::")[0]
        assert path.exists(), test
        if path.is_file():
            assert "pytest.mark.slow" not in path.read_text("utf-8"), test


def test_a_stale_named_mutant_is_an_error() -> None:
    mutant = named.Named("x", "f.py", "absent", "present", ("tests/",), "what")
    with pytest.raises(named.NamedError, match="occurs 0 times"):
        mutant.apply("source")
    twice = named.Named("x", "f.py", "a", "b", ("tests/",), "what")
    with pytest.raises(named.NamedError, match="occurs 2 times"):
        twice.apply("a a")
    assert named.Named("x", "f.py", "a", "b", ("tests/",), "what", nth=2).apply("a a") == "a b"
    with pytest.raises(named.NamedError, match="not at least 3"):
        named.Named("x", "f.py", "a", "b", ("tests/",), "what", nth=3).apply("a a")


def test_named_mutants_are_listed_by_the_command() -> None:
    """``scripts/mutation --named ID`` refuses an unknown id before running anything."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mutation.py"), "--named", "no-such-mutant"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "unknown named mutant(s): no-such-mutant" in done.stderr
