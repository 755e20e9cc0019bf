"""Every adapter's case table runs twice: with the default problem+json bodies, and as a process
started with ``KEYGUARD_ERROR_FORMAT=platform`` would answer (the platform-compatible preset).

The table itself is not duplicated: each ``test_*case_table*`` test is parametrized with the
``error_format`` fixture, which gives the default renderer every adapter uses the state
:meth:`ProblemRenderer.from_env` builds for that format, for the duration of the test.
:func:`tests.adapters.cases.check` then asserts the preset's ``error`` and ``message`` fields
(or their absence) on every denial.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer

ERROR_FORMATS = ("problem", "platform")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames and "case_table" in metafunc.function.__name__:
        metafunc.parametrize("error_format", ERROR_FORMATS, indirect=True)


@pytest.fixture(autouse=True)
def error_format(request: pytest.FixtureRequest) -> Iterator[str]:
    fmt: str = getattr(request, "param", "problem")
    if fmt == "problem":
        yield fmt
        return
    preset = ProblemRenderer.from_env({"KEYGUARD_ERROR_FORMAT": fmt})
    with pytest.MonkeyPatch.context() as mp:
        for slot in ProblemRenderer.__slots__:
            mp.setattr(DEFAULT_RENDERER, slot, getattr(preset, slot))
        yield fmt
