"""Named mutants: apply each hand-written change of ``scripts/mutation-named.toml`` to a copy
of the working tree and check that its tests fail (``scripts/mutation --named``).

mutmut's generated mutants measure a module as a whole; these are the specific changes that
once passed the whole suite (issue 16), each a security property a test must hold. A mutant is
*killed* when pytest fails on it (a failed test, or a collection error: the clean tree passed
first); it *survived* when its tests pass. The copy lives in ``build/mutation/_named/``, so
the repository itself is never touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMED = ROOT / "scripts" / "mutation-named.toml"
#: pytest's exit codes: 1 tests failed, 2 interrupted (a collection error counts: the mutant
#: broke an import the clean run needed). 0 passed: survived. Anything else is a tool error.
KILLED = {1, 2}


class NamedError(Exception):
    """A named mutant that cannot be applied, or a run that could not be judged."""


@dataclasses.dataclass(frozen=True)
class Named:
    id: str
    file: str
    before: str
    after: str
    tests: tuple[str, ...]
    what: str
    nth: int = 0  # 1-based; 0: ``before`` must occur exactly once

    def apply(self, source: str) -> str:
        """``source`` with this mutant applied."""
        count = source.count(self.before)
        if self.nth == 0:
            if count != 1:
                raise NamedError(
                    f"{self.id}: {self.before!r} occurs {count} times in {self.file} "
                    "(must be once, or name the occurrence with nth)"
                )
            return source.replace(self.before, self.after)
        if not 1 <= self.nth <= count:
            raise NamedError(
                f"{self.id}: {self.before!r} occurs {count} times in {self.file}, "
                f"not at least {self.nth}"
            )
        at = -1
        for _ in range(self.nth):
            at = source.index(self.before, at + 1)
        return source[:at] + self.after + source[at + len(self.before) :]


def load(path: Path = NAMED) -> list[Named]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NamedError(f"{path}: {exc}") from None
    found: list[Named] = []
    seen: set[str] = set()
    for entry in data.get("mutant", []):
        try:
            named = Named(
                id=entry["id"],
                file=entry["file"],
                before=entry["before"],
                after=entry["after"],
                tests=tuple(entry["tests"]),
                what=entry["what"],
                nth=int(entry.get("nth", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NamedError(f"{path}: bad entry {entry!r}: {exc}") from None
        if named.id in seen:
            raise NamedError(f"{path}: the id {named.id!r} repeats")
        if named.before == named.after or not named.tests:
            raise NamedError(f"{path}: {named.id}: no change, or no tests")
        seen.add(named.id)
        found.append(named)
    return found


def _copy_tree(workdir: Path, files: Sequence[str]) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    for rel in files:
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)


def _pytest(workdir: Path, tests: Sequence[str], pytest_args: Sequence[str]) -> int:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(workdir)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", *pytest_args, *tests],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return done.returncode


def run(
    mutants: Sequence[Named], files: Sequence[str], workdir: Path, pytest_args: Sequence[str]
) -> list[tuple[Named, str, float]]:
    """Apply each mutant in turn to one copy of the tree; (mutant, outcome, seconds) each."""
    _copy_tree(workdir, files)
    # The copy must import its own keyguard, not the installed (editable) one.
    probe = subprocess.run(
        [sys.executable, "-c", "import keyguard; print(keyguard.__file__)"],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(workdir)},
        capture_output=True,
        text=True,
        check=False,
    )
    if not probe.stdout.strip().startswith(str(workdir)):
        raise NamedError(f"the copy in {workdir} imports keyguard from {probe.stdout.strip()!r}")
    results: list[tuple[Named, str, float]] = []
    sources: dict[str, str] = {}
    for named in mutants:
        sources.setdefault(named.file, (workdir / named.file).read_text("utf-8"))
        named.apply(sources[named.file])  # fail early on a stale entry
    clean = _pytest(workdir, sorted({t for m in mutants for t in m.tests}), pytest_args)
    if clean != 0:
        raise NamedError(f"the unmutated tests fail (pytest exit {clean}): fix them first")
    for named in mutants:
        target = workdir / named.file
        target.write_text(named.apply(sources[named.file]), "utf-8")
        started = time.monotonic()
        try:
            code = _pytest(workdir, named.tests, pytest_args)
        finally:
            target.write_text(sources[named.file], "utf-8")
        if code in KILLED:
            outcome = "killed"
        elif code == 0:
            outcome = "SURVIVED"
        else:
            outcome = f"error (pytest exit {code})"
        elapsed = time.monotonic() - started
        print(f"{outcome:<9} {elapsed:5.0f} s  {named.id}", flush=True)
        results.append((named, outcome, elapsed))
    return results
