"""Mutation testing of keyguard's security-relevant modules, in one command.

Usage (from the repository root, with the ``mutation`` extra installed)::

    scripts/mutation                  # every module listed in pyproject.toml
    scripts/mutation keys policy      # only these modules
    scripts/mutation --list           # show the module list and exit
    scripts/mutation --named          # the hand-written mutants of scripts/mutation-named.toml

For each module listed under ``[tool.keyguard.mutation]`` in ``pyproject.toml``, mutmut
generates every mutant of the module's functions and runs it against the module's *own* tests
(fast: a mutant there is usually killed in well under a second). The mutants that survive are
then run against the whole suite minus slow tests, in one shared mutmut run, so that a mutant
killed only by, say, the adapter tests still counts as killed. Each phase runs in its own copy
of the working tree under ``build/mutation/`` (mutmut keeps its state in ``mutants/`` beside
its configuration, so the repository itself is never touched).

A module's score is the share of its mutants that some test kills, raw and excluding the
equivalent and message-only mutants listed (each with its reason) in ``docs/mutation.md``.
An exclusion names the function and the changed code; it excludes at most ``count``
survivors, so a new survivor never hides behind an old justification. The table goes to
stdout, every detail (survivors with their diffs, exclusions used, timings) to a JSON file.
The exit status is 0 when every module reaches the goal, 1 when one does not, 2 on errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "mutation.md"
EXCLUSIONS_MARKER = "# mutation-exclusions"
#: mutmut's exit codes that mean "the tests noticed the mutant": a test failed (1), pytest
#: failed internally (3), collection failed (2: e.g. the package no longer imports; the clean
#: run before passed, so the mutant is the cause), the run raised (255: mutmut reports an
#: exception in its worker as -1, e.g. conftest failing to import), it ran out of time or
#: crashed. Everything else (survived, no tests, suspicious, skipped) is a survivor.
DETECTED = {1: "killed", 3: "killed", 2: "error", 255: "error", 36: "timeout", 24: "timeout",
            -24: "timeout", 152: "timeout", -11: "crashed", -9: "crashed"}  # fmt: skip

# Run inside a phase's work directory: print the diff of each named mutant as JSON.
_DIFF_HELPER = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names, path = json.loads(sys.stdin.read())
print(json.dumps({n: get_diff_for_mutant(n, path=path) for n in names}))
"""


class ToolError(Exception):
    """A problem the user must fix (configuration, missing mutmut, a failed mutmut run)."""


@dataclasses.dataclass(frozen=True)
class Module:
    name: str
    paths: tuple[str, ...]  # files, relative to the root (globs allowed)
    tests: tuple[str, ...]
    # Node-id prefixes left out of the own-tests phase only (long tests that cover nearly
    # every function, such as memory floods); they still run in the whole-suite phase.
    deselect: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.paths:
            found.extend(p for p in sorted(ROOT.glob(pattern)) if p.suffix == ".py")
        return found

    def test_args(self) -> list[str]:
        """The own tests as pytest arguments: globs expanded, node ids kept as given."""
        args: list[str] = []
        for pattern in self.tests:
            path, sep, node = pattern.partition("::")
            matches = sorted(ROOT.glob(path)) if any(c in path for c in "*?[") else []
            args.extend(p.relative_to(ROOT).as_posix() + sep + node for p in matches)
            if not matches and (ROOT / path).exists():
                args.append(pattern)
        return args


@dataclasses.dataclass
class Exclusion:
    module: str
    function: str
    before: str
    after: str
    kind: str
    why: str
    count: int
    matched: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Mutant:
    name: str
    module: str
    file: str  # relative path of the mutated file
    function: str  # Class.method or function
    status: str = "not checked"
    killed_by: str = ""  # "own tests" or "whole suite"
    diff: str = ""
    excluded: Exclusion | None = None

    @property
    def detected(self) -> bool:
        return self.killed_by != ""


@dataclasses.dataclass
class Settings:
    modules: list[Module]
    whole_suite: list[str]
    deselect: list[str]  # node-id prefixes left out of both phases
    pytest_args: list[str]
    also_copy: list[str]
    goal: float
    workdir: Path
    report: Path


# -- configuration -----------------------------------------------------------------------------


def load_settings() -> tuple[Settings, dict[str, Any]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    base = data.get("tool", {}).get("mutmut", {})
    cfg = data.get("tool", {}).get("keyguard", {}).get("mutation")
    if not cfg or not cfg.get("modules"):
        raise ToolError("pyproject.toml has no [[tool.keyguard.mutation.modules]] entries")
    modules = []
    for entry in cfg["modules"]:
        try:
            modules.append(
                Module(
                    entry["name"],
                    tuple(entry["paths"]),
                    tuple(entry.get("tests", ())),
                    tuple(entry.get("deselect", ())),
                )
            )
        except (KeyError, TypeError) as exc:
            raise ToolError(f"bad module entry {entry!r} in pyproject.toml: {exc}") from None
    settings = Settings(
        modules=modules,
        whole_suite=list(cfg.get("whole_suite", ["tests/"])),
        deselect=list(cfg.get("deselect", [])),
        pytest_args=list(base.get("pytest_add_cli_args", [])),
        also_copy=list(base.get("also_copy", [])),
        goal=float(cfg.get("goal", 98.0)),
        workdir=ROOT / cfg.get("workdir", "build/mutation"),
        report=ROOT / cfg.get("report", "build/mutation/report.json"),
    )
    return settings, base


def load_exclusions(path: Path = DOCS) -> list[Exclusion]:
    """The ``toml`` blocks of docs/mutation.md that start with ``# mutation-exclusions``."""
    if not path.exists():
        return []
    text = path.read_text("utf-8")
    found: list[Exclusion] = []
    for block in re.findall(r"^```toml\n(.*?)^```", text, flags=re.M | re.S):
        if not block.startswith(EXCLUSIONS_MARKER):
            continue
        try:
            entries = tomllib.loads(block).get("exclude", [])
        except tomllib.TOMLDecodeError as exc:
            raise ToolError(f"{path}: an exclusions block is not valid TOML: {exc}") from None
        for e in entries:
            try:
                kind = e["kind"]
                if kind not in ("equivalent", "message-only"):
                    raise ValueError(f"kind must be 'equivalent' or 'message-only', not {kind!r}")
                if not e["why"].strip():
                    raise ValueError("an exclusion needs a reason ('why')")
                found.append(
                    Exclusion(
                        module=e["module"],
                        function=e["function"],
                        before=e["before"],
                        after=e.get("after", ""),
                        kind=kind,
                        why=e["why"],
                        count=int(e.get("count", 1)),
                    )
                )
            except (KeyError, ValueError, TypeError) as exc:
                raise ToolError(f"{path}: bad exclusion {e!r}: {exc}") from None
    return found


def mutmut_table(base: dict[str, Any], **overrides: list[str]) -> str:
    """A ``[tool.mutmut]`` table: the project's settings with this phase's overrides."""
    table = {**base, **overrides}
    lines = ["[tool.mutmut]"]
    for key, value in table.items():
        lines.append(f"{key} = {json.dumps(value)}")  # JSON strings/lists/bools are TOML too
    return "\n".join(lines) + "\n"


def without_mutmut_table(pyproject: str) -> str:
    out: list[str] = []
    skipping = False
    for line in pyproject.splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


# -- running mutmut ----------------------------------------------------------------------------


def project_files() -> list[str]:
    """Tracked and new (not ignored) files: the working tree as the developer sees it."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def prepare(workdir: Path, base: dict[str, Any], **overrides: list[str]) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    for rel in project_files():
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    pyproject = workdir / "pyproject.toml"
    text = without_mutmut_table(pyproject.read_text("utf-8"))
    pyproject.write_text(text + "\n" + mutmut_table(base, **overrides), "utf-8")


def mutmut(workdir: Path, args: Sequence[str], jobs: int) -> None:
    exe = Path(sys.executable).with_name("mutmut")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mutmut"]
    log = workdir / "mutmut.log"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as fh:
        done = subprocess.run(
            [*cmd, "run", "--max-children", str(jobs), *args],
            cwd=workdir,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text("utf-8", errors="replace")[-3000:]
        raise ToolError(f"mutmut failed in {workdir} (exit {done.returncode}); log tail:\n{tail}")


def read_results(workdir: Path, files: Iterable[Path]) -> dict[str, tuple[str, int | None]]:
    """mutant name -> (relative file, mutmut exit code) for the given source files."""
    results: dict[str, tuple[str, int | None]] = {}
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        meta = workdir / "mutants" / (rel + ".meta")
        if not meta.exists():
            continue  # mutmut found nothing to mutate in this file
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        for name, code in codes.items():
            results[name] = (rel, code)
    return results


def read_diffs(workdir: Path, names_by_file: dict[str, list[str]]) -> dict[str, str]:
    diffs: dict[str, str] = {}
    for rel, names in names_by_file.items():
        done = subprocess.run(
            [sys.executable, "-c", _DIFF_HELPER],
            cwd=workdir,
            input=json.dumps([names, rel]),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ToolError(f"could not read mutant diffs in {workdir}:\n{done.stderr[-2000:]}")
        diffs.update(json.loads(done.stdout))
    return diffs


def function_of(name: str) -> str:
    """``m.xǁClsǁmeth__mutmut_3`` -> ``Cls.meth``; ``m.x_func__mutmut_3`` -> ``func``."""
    local = name.rsplit("__mutmut_", 1)[0]
    marker = local.find(".xǁ")
    if marker >= 0:
        return ".".join(p for p in local[marker + 2 :].split("ǁ") if p)
    return local.rpartition(".x_")[2]


def changed_lines(diff: str) -> tuple[str, str]:
    """The removed and the added code of a diff, each line stripped, joined by newlines."""
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return "\n".join(removed), "\n".join(added)


def apply_exclusions(mutants: list[Mutant], exclusions: list[Exclusion]) -> None:
    for m in mutants:
        if m.detected:
            continue
        removed, added = changed_lines(m.diff)
        for e in exclusions:
            if (
                e.module == m.module
                and e.function == m.function
                and e.before in removed
                and e.after in added
                and len(e.matched) < e.count
            ):
                e.matched.append(m.name)
                m.excluded = e
                break


# -- the run -----------------------------------------------------------------------------------


def run(
    settings: Settings,
    base: dict[str, Any],
    modules: list[Module],
    jobs: int,
    whole: bool,
    rerun: bool = True,
    own: bool = True,
) -> dict[str, Any]:
    """Run both phases (or, with ``rerun=False``, score the results of the last run again;
    with ``own=False``, reuse each module's own-tests results and run the whole-suite phase
    again)."""
    exclusions = load_exclusions()
    mutants: dict[str, Mutant] = {}
    timings: dict[str, float] = {}
    skipped: dict[str, str] = {}
    whole_seconds = 0.0
    if not rerun:
        try:
            last = json.loads(settings.report.read_text("utf-8"))
        except (OSError, ValueError):
            last = {}
        whole_seconds = float(last.get("seconds_whole_suite", 0.0))
        for name, row in last.get("modules", {}).items():
            timings[name] = float(row.get("seconds_own_tests", 0.0))
    for module in modules:
        files = module.files()
        if not files:
            skipped[module.name] = f"no file matches {', '.join(module.paths)}"
            print(f"[{module.name}] skipped: {skipped[module.name]}", flush=True)
            continue
        tests = module.test_args()
        if not tests:
            raise ToolError(f"module {module.name!r}: none of its tests exist ({module.tests})")
        workdir = settings.workdir / module.name
        if rerun and own:
            print(f"[{module.name}] own tests: {' '.join(tests)} ...", flush=True)
            started = time.monotonic()
            deselect = _deselect([*settings.deselect, *module.deselect])
            prepare(
                workdir,
                base,
                only_mutate=[f.relative_to(ROOT).as_posix() for f in files],
                pytest_add_cli_args_test_selection=tests + deselect,
            )
            mutmut(workdir, [], jobs)
            timings[module.name] = time.monotonic() - started
        elif not (workdir / "mutants").is_dir():
            raise ToolError(f"no results for {module.name!r} in {workdir}: run it first")
        for name, (rel, code) in read_results(workdir, files).items():
            m = Mutant(name, module.name, rel, function_of(name))
            m.status = DETECTED.get(code, "") or _status(code)
            if code in DETECTED:
                m.killed_by = "own tests"
            mutants[name] = m
        left = sum(1 for m in mutants.values() if m.module == module.name and not m.detected)
        if rerun and own:
            print(f"[{module.name}] done in {timings[module.name]:.0f} s, {left} left", flush=True)

    survivors = [m for m in mutants.values() if not m.detected]
    if whole and survivors:
        workdir = settings.workdir / "_whole-suite"
        files = sorted({m.file for m in survivors})
        if rerun:
            print(f"[whole suite] {len(survivors)} survivors: {' '.join(settings.whole_suite)}")
            started = time.monotonic()
            prepare(
                workdir,
                base,
                only_mutate=files,
                pytest_add_cli_args_test_selection=settings.whole_suite
                + _deselect(settings.deselect),
            )
            mutmut(workdir, [m.name for m in survivors], jobs)
        results = read_results(workdir, [ROOT / f for f in files])
        for m in survivors:
            code = results.get(m.name, ("", None))[1]
            if code in DETECTED:
                m.killed_by, m.status = "whole suite", DETECTED[code]
            else:
                m.status = _status(code)
        if rerun:
            whole_seconds = time.monotonic() - started
            print(f"[whole suite] done in {whole_seconds:.0f} s", flush=True)

    survivors = [m for m in mutants.values() if not m.detected]
    by_workdir: dict[tuple[Path, str], list[str]] = {}
    for m in survivors:
        wd = settings.workdir / m.module
        by_workdir.setdefault((wd, m.file), []).append(m.name)
    for (wd, rel), names in by_workdir.items():
        for name, diff in read_diffs(wd, {rel: names}).items():
            mutants[name].diff = diff
    apply_exclusions(survivors, exclusions)
    return build_report(settings, modules, mutants, exclusions, timings, whole_seconds, skipped)


def _deselect(nodes: Iterable[str]) -> list[str]:
    return [arg for node in nodes for arg in ("--deselect", node)]


def _status(code: int | None) -> str:
    return {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}.get(
        code, f"suspicious (exit {code})"
    )


def build_report(
    settings: Settings,
    modules: list[Module],
    mutants: dict[str, Mutant],
    exclusions: list[Exclusion],
    timings: dict[str, float],
    whole_seconds: float,
    skipped: dict[str, str],
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for module in modules:
        if module.name in skipped:
            rows[module.name] = {"skipped": skipped[module.name]}
            continue
        ms = [m for m in mutants.values() if m.module == module.name]
        total = len(ms)
        detected = sum(m.detected for m in ms)
        excluded = [m for m in ms if m.excluded is not None]
        counted = total - len(excluded)
        raw = 100.0 * detected / total if total else 100.0
        score = 100.0 * detected / counted if counted else 100.0
        rows[module.name] = {
            "paths": list(module.paths),
            "tests": list(module.tests),
            "mutants": total,
            "killed_by_own_tests": sum(m.killed_by == "own tests" for m in ms),
            "killed_by_whole_suite": sum(m.killed_by == "whole suite" for m in ms),
            "timeouts": sum(m.status == "timeout" for m in ms),
            "errors": sum(m.status == "error" for m in ms),
            "survived": total - detected - len(excluded),
            "excluded": len(excluded),
            "raw_score": round(raw, 1),
            "score": round(score, 1),
            "meets_goal": score >= settings.goal,
            "seconds_own_tests": round(timings.get(module.name, 0.0), 1),
            "survivors": [
                {"name": m.name, "function": m.function, "status": m.status, "diff": m.diff}
                for m in ms
                if not m.detected and m.excluded is None
            ],
            "excluded_mutants": [
                {
                    "name": m.name,
                    "function": m.function,
                    "kind": m.excluded.kind,
                    "why": m.excluded.why,
                    "diff": m.diff,
                }
                for m in excluded
                if m.excluded is not None
            ],
        }
    ran = {m.name for m in modules if m.name not in skipped}
    stale = [
        {
            "module": e.module,
            "function": e.function,
            "before": e.before,
            "count": e.count,
            "matched": len(e.matched),
        }
        for e in exclusions
        if e.module in ran and len(e.matched) < e.count
    ]
    return {
        "goal": settings.goal,
        "command": "scripts/mutation " + " ".join(sys.argv[1:]),
        "mutmut": _mutmut_version(),
        "whole_suite": settings.whole_suite,
        "seconds_whole_suite": round(whole_seconds, 1),
        "modules": rows,
        "stale_exclusions": stale,
    }


def _mutmut_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mutmut")
    except PackageNotFoundError:
        return "not installed"


def print_report(report: dict[str, Any], verbose: bool) -> None:
    header = (
        f"{'module':<14}{'mutants':>8}{'own':>6}{'suite':>6}{'err':>5}{'t/o':>5}{'left':>6}{'excl':>6}"
        f"{'raw %':>8}{'score %':>9}{'time s':>8}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, row in report["modules"].items():
        if "skipped" in row:
            print(f"{name:<14}  skipped: {row['skipped']}")
            continue
        mark = "" if row["meets_goal"] else "  < goal"
        print(
            f"{name:<14}{row['mutants']:>8}{row['killed_by_own_tests']:>6}"
            f"{row['killed_by_whole_suite']:>6}{row['errors']:>5}{row['timeouts']:>5}"
            f"{row['survived']:>6}"
            f"{row['excluded']:>6}"
            f"{row['raw_score']:>8.1f}{row['score']:>9.1f}{row['seconds_own_tests']:>8.0f}{mark}"
        )
    print(
        f"(own = killed by the module's own tests; suite = killed only by the whole suite minus "
        f"slow tests, {report['seconds_whole_suite']:.0f} s for all modules; err, t/o = of "
        f"those kills, the import/collection errors and the timeouts; score excludes the "
        f"justified mutants of docs/mutation.md; goal {report['goal']:.0f} %)"
    )
    for name, row in report["modules"].items():
        for s in row.get("survivors", []):
            print(f"\nSURVIVED [{name}] {s['function']} ({s['status']}): {s['name']}")
            if verbose or len(s["diff"]) < 2000:
                print("\n".join(s["diff"].splitlines()[2:]))
    for e in report["stale_exclusions"]:
        print(
            f"\nSTALE EXCLUSION [{e['module']}] {e['function']}: {e['before']!r} matched "
            f"{e['matched']} of {e['count']} survivors: update docs/mutation.md"
        )


def run_named(settings: Settings, ids: Sequence[str]) -> int:
    """``--named``: every hand-written mutant (or those named) must fail its tests."""
    import mutation_named as named

    try:
        mutants = named.load()
        unknown = set(ids) - {m.id for m in mutants}
        if unknown:
            raise ToolError(f"unknown named mutant(s): {', '.join(sorted(unknown))}")
        chosen = [m for m in mutants if not ids or m.id in ids]
        print(f"[named] {len(chosen)} mutants from {named.NAMED.relative_to(ROOT)}", flush=True)
        results = named.run(
            chosen, project_files(), settings.workdir / "_named", settings.pytest_args
        )
    except named.NamedError as exc:
        raise ToolError(str(exc)) from None
    left = [m for m, outcome, _ in results if outcome != "killed"]
    print(f"\n{len(results) - len(left)} of {len(results)} named mutants killed")
    for m in left:
        print(f"  not killed: {m.id} ({m.file}): {m.what}")
    return 1 if left else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/mutation", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("modules", nargs="*", help="module names from pyproject.toml (all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel mutants")
    parser.add_argument("--json", type=Path, help="where to write the JSON report")
    parser.add_argument("--own-tests-only", action="store_true", help="skip the whole-suite pass")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="run nothing: score the last run's results again (after editing docs/mutation.md)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the last run's own-tests results and run only the whole-suite phase again",
    )
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument(
        "--named",
        action="store_true",
        help="check the hand-written mutants of scripts/mutation-named.toml instead "
        "(positional arguments: their ids)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every diff in full")
    args = parser.parse_args(argv)
    try:
        settings, base = load_settings()
        if args.list:
            for m in settings.modules:
                state = "" if m.files() else "   (not present)"
                print(f"{m.name:<14}{' '.join(m.paths)}  <- {' '.join(m.tests)}{state}")
            return 0
        if args.named:
            return run_named(settings, args.modules)
        known = {m.name: m for m in settings.modules}
        unknown = [n for n in args.modules if n not in known]
        if unknown:
            raise ToolError(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if args.jobs < 1:
            raise ToolError("--jobs must be at least 1")
        modules = [known[n] for n in args.modules] or settings.modules
        if _mutmut_version() == "not installed":
            raise ToolError("mutmut is not installed: pip install -e '.[mutation]'")
        report = run(
            settings,
            base,
            modules,
            args.jobs,
            whole=not args.own_tests_only,
            rerun=not args.rescore,
            own=not args.resume,
        )
    except ToolError as exc:
        print(f"scripts/mutation: {exc}", file=sys.stderr)
        return 2
    out = args.json or settings.report
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    print_report(report, args.verbose)
    print(f"\nJSON report: {out}")
    rows = report["modules"].values()
    return 1 if any("skipped" not in r and not r["meets_goal"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
