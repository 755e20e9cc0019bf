"""The benchmark suite cannot rot: its noise rule and goals are unit-tested here, and a quick
run of the whole suite (``benchmarks/run.py --quick``, marked slow) must finish, write its
JSON and judge every goal. Timing goals are never asserted: only that they were measured."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _labels as L
from benchmarks.compare import compare, judge
from benchmarks.goals import evaluate
from benchmarks.profile_e2e import charge, component
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


# -- the noise rule ------------------------------------------------------------------------------
STEADY = [10.0, 10.1, 10.2, 10.1, 10.3, 10.2, 10.1]


def test_a_row_slower_than_its_old_spread_is_a_regression() -> None:
    verdict, band = judge(STEADY, [x + 1.0 for x in STEADY], False, 1.5, 0.03)
    assert verdict == "REGRESSION"
    assert band == pytest.approx(0.03 * 10.1)  # the IQR (0.15 x 1.5) is under the 3 % floor


def test_a_slower_median_within_the_old_spread_is_noise() -> None:
    noisy = [10.0, 12.0, 9.5, 14.0, 10.5, 13.0, 11.0]
    # New minimum 11.5 < old median 11.0 + 1.5 x IQR: not a regression, however slow its median.
    verdict, _ = judge(noisy, [11.5, 12.5, 13.0, 12.0, 14.0], False, 1.5, 0.03)
    assert verdict == "same"


def test_only_the_new_minimum_decides_a_regression() -> None:
    # One undisturbed repeat as fast as before: the change did not make the code slower.
    verdict, _ = judge(STEADY, [10.1, 20.0, 20.0, 20.0, 20.0], False, 1.5, 0.03)
    assert verdict == "same"


def test_a_faster_median_beyond_the_band_is_an_improvement() -> None:
    verdict, _ = judge(STEADY, [x - 1.0 for x in STEADY], False, 1.5, 0.03)
    assert verdict == "improved"


def test_higher_is_better_rows_are_judged_the_other_way() -> None:
    rps = [10_000.0, 10_100.0, 10_050.0]
    assert judge(rps, [8_000.0, 8_100.0, 8_050.0], True, 1.5, 0.03)[0] == "REGRESSION"
    assert judge(rps, [12_000.0, 12_100.0, 12_050.0], True, 1.5, 0.03)[0] == "improved"
    assert judge(rps, [10_000.0, 9_950.0, 10_020.0], True, 1.5, 0.03)[0] == "same"


def test_too_few_repeats_are_not_judged() -> None:
    assert judge([10.0, 10.0], [20.0, 20.0], False, 1.5, 0.03)[0].startswith("not judged")


def _run(rows: list[dict[str, Any]], goals: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "format": 1,
        "environment": {"date": "today", "platform": "here", "cpu": "x"},
        "groups": {"asgi": {"group": "asgi", "rows": rows}},
        "goals": goals or [],
    }


def _row(label: str, runs: list[float], baseline: str | None = None) -> dict[str, Any]:
    return {"label": label, "unit": "µs", "better": "lower", "runs": runs, "baseline": baseline}


def test_compare_matches_rows_by_label_and_reports_lost_goals() -> None:
    old = _run(
        [_row("bare", STEADY), _row("guard", STEADY, "bare"), _row("gone", STEADY)],
        [{"id": "g", "text": "a goal", "met": True}],
    )
    new = _run(
        [_row("bare", STEADY), _row("guard", [x + 2 for x in STEADY], "bare"), _row("new", STEADY)],
        [{"id": "g", "text": "a goal", "met": False}],
    )
    results, lost = compare(old, new)
    verdicts = {r["label"]: r["verdict"] for r in results}
    assert verdicts == {"bare": "same", "guard": "REGRESSION", "new": "new row", "gone": "gone"}
    assert lost == ["a goal"]


def test_relative_comparison_cancels_a_uniformly_slower_machine() -> None:
    old = _run([_row("bare", STEADY), _row("guard", [2 * x for x in STEADY], "bare")])
    slower = [1.5 * x for x in STEADY]  # everything 50 % slower, the guard's share unchanged
    new = _run([_row("bare", slower), _row("guard", [2 * x for x in slower], "bare")])
    absolute = {r["label"]: r["verdict"] for r in compare(old, new)[0]}
    relative = {r["label"]: r["verdict"] for r in compare(old, new, relative=True)[0]}
    assert absolute["guard"] == "REGRESSION"
    assert relative["guard"] == "same"


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<args>`` from the repository root, its output captured as text."""
    return subprocess.run(
        [sys.executable, f"benchmarks/{args[0]}", *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def test_compare_cli_exits_1_on_a_regression(tmp_path: Path) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_run([_row("guard", STEADY)])))
    new.write_text(json.dumps(_run([_row("guard", [x + 5 for x in STEADY])])))
    same = _script("compare.py", str(old), str(old))
    worse = _script("compare.py", str(old), str(new))
    assert same.returncode == 0
    assert worse.returncode == 1
    assert "REGRESSION" in worse.stdout


def test_compare_cli_names_package_versions_that_differ(tmp_path: Path) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    before, after = _run([_row("guard", STEADY)]), _run([_row("guard", STEADY)])
    before["environment"]["packages"] = {"starlette": "1.9.0", "fastapi": "0.160.0"}
    after["environment"]["packages"] = {"starlette": "1.10.0", "fastapi": "0.160.0"}
    old.write_text(json.dumps(before))
    new.write_text(json.dumps(after))
    differ = _script("compare.py", str(old), str(new))
    assert differ.returncode == 0
    assert "package versions differ: starlette 1.9.0 -> 1.10.0" in differ.stdout
    assert "fastapi" not in differ.stdout
    assert "package versions" not in _script("compare.py", str(old), str(old)).stdout


def test_a_run_records_the_versions_it_measured() -> None:
    from benchmarks._results import PACKAGES, environment

    found = environment()["packages"]
    assert set(found) == set(PACKAGES)
    assert found["starlette"][0].isdigit()  # the test extra installs it


def test_compare_cli_refuses_a_file_that_is_not_a_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    proc = _script("compare.py", str(bad), str(bad))
    assert proc.returncode != 0
    assert "not a keyguard benchmark JSON file" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- goals ---------------------------------------------------------------------------------------
def _measured(label: str, value: float, overhead: float | None = None) -> dict[str, Any]:
    return {"label": label, "min": value, "median": value, "overhead_min": overhead}


def test_goals_are_ratios_of_rows_of_the_run() -> None:
    groups = {
        "asgi": {
            "rows": [
                _measured(L.S_FLOOR, 12.0, 2.0),
                _measured(L.S_KG_FULL, 13.9, 3.9),  # x1.95 the floor: met
                _measured(L.S_KG_NO_HEADERS, 13.1, 3.1),  # x1.55: missed
            ]
        }
    }
    goals = {g.id: g for g in evaluate(groups)}
    assert goals["asgi-full-path"].met is True
    assert goals["asgi-full-path"].value == pytest.approx(1.95)
    assert goals["asgi-headers-off"].met is False
    # Rows not measured: not met, not missed.
    assert goals["denial-429"].met is None
    assert "not measured" in goals["denial-429"].measured
    assert goals["e2e-throughput"].met is None


def test_the_end_to_end_goal_is_keyguard_over_bare_and_names_the_floor_beside_it() -> None:
    def rows(**rps: float) -> list[dict[str, Any]]:
        out = []
        for label, value in rps.items():
            out.append(_measured(f"{label}: requests/s", value))
            out.append(_measured(f"{label}: p99 latency", 1e4 / value))
        return out

    groups = {"e2e": {"rows": rows(**{L.E_BARE: 1000.0, L.E_KG: 850.0, L.E_FLOOR: 950.0})}}
    goals = {g.id: g for g in evaluate(groups)}
    throughput = goals["e2e-throughput"]
    assert throughput.met is False
    assert throughput.value == pytest.approx(0.85)
    assert "the hand-written floor: 0.95" in throughput.measured
    # A run from before the floor row still gets its verdict.
    older = {"e2e": {"rows": rows(**{L.E_BARE: 1000.0, L.E_KG: 950.0})}}
    goals = {g.id: g for g in evaluate(older)}
    assert goals["e2e-throughput"].met is True
    assert "floor" not in goals["e2e-throughput"].measured


def test_the_scale_goal_is_keyguards_ratio_and_names_the_floors_beside_it() -> None:
    def group(*rows: dict[str, Any]) -> dict[str, Any]:
        return {"scale": {"rows": list(rows), "facts": {"keys": 100_000}}}

    keyguard = (_measured(L.SC_KG_FEW, 5.0, 4.0), _measured(L.SC_KG_MANY, 7.0, 6.0))
    floor = (_measured(L.SC_FLOOR_FEW, 3.0, 2.0), _measured(L.SC_FLOOR_MANY, 3.5, 2.5))
    goal = {g.id: g for g in evaluate(group(*keyguard, *floor))}["scale-hit-path"]
    assert goal.met is False
    assert goal.value == pytest.approx(1.5)
    assert goal.measured.endswith("; the floor's x1.25")
    # A run from before the floor rows still gets its verdict.
    older = {g.id: g for g in evaluate(group(*keyguard))}["scale-hit-path"]
    assert older.value == pytest.approx(1.5)
    assert "floor" not in older.measured


# -- the README documents every script -------------------------------------------------------------
def test_every_benchmark_script_is_documented_and_every_documented_script_exists() -> None:
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}
    named = set(re.findall(r"\b([a-z0-9_]+\.py)\b", readme))
    assert scripts - named == set(), "undocumented scripts"
    assert {n for n in named if n.startswith(("bench_", "run", "compare", "profile"))} <= (
        scripts
    ), "documented scripts that do not exist"
    assert "RESULTS_PLACEHOLDER" not in readme


def test_run_py_knows_every_group_the_readme_lists() -> None:
    from benchmarks.run import GROUPS

    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for name, (script, _, _) in GROUPS.items():
        assert f"| `{name}` | `{script}` |" in readme


# -- the quick run of the whole suite ---------------------------------------------------------
def _redis_reachable() -> bool:
    try:
        import redis

        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as probe:
            probe.ping()
    except Exception:
        return False
    return True


REDIS_GOALS = {"redis-round-trips", "redis-vs-ping", "redis-vs-ping-async", "revocation"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_quick_suite_runs_every_group_and_judges_every_goal(tmp_path: Path) -> None:
    redis_up = _redis_reachable()
    if not redis_up and os.environ.get("CI") == "true":
        pytest.fail(f"Redis is required under CI=true but {REDIS_URL} is unreachable")
    out = tmp_path / "quick.json"
    proc = _script("run.py", "--quick", "--url", REDIS_URL, "--json", str(out), timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(out.read_text())
    assert set(run["groups"]) == {
        "asgi",
        "wsgi",
        "scale",
        "redis",
        "revocation",
        "e2e",
        "observability",
    }
    for name, group in run["groups"].items():
        if name in ("redis", "revocation") and not redis_up:
            continue
        assert group["rows"], f"group {name} measured nothing"
        for row in group["rows"]:
            assert row["runs"], row["label"]
    unmeasured = {g["id"] for g in run["goals"] if g["met"] is None}
    assert unmeasured <= (set() if redis_up else REDIS_GOALS), unmeasured
    assert (tmp_path / "quick.md").read_text().count("| ") > 20
    # The run compares with itself: nothing regressed.
    same = _script("compare.py", str(out), str(out))
    assert same.returncode == 0, same.stdout[-2000:]


def _bytecodes(path: str) -> tuple[float, str]:
    proc = _script("profile_paths.py", path, "--bytecodes", "--number", "20")
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r"([\d,.]+) in the guard's own code", proc.stdout)
    assert match, proc.stdout
    return float(match.group(1).replace(",", "")), proc.stdout


@pytest.mark.slow
def test_bytecode_counts_are_the_same_on_every_run_and_name_the_guards_code() -> None:
    """--bytecodes is sold as a measure that does not move between runs: two runs of the
    full path agree exactly; the floor's guard is its own code, much less of it."""
    first, text = _bytecodes("full")
    second, _ = _bytecodes("full")
    floor, floor_text = _bytecodes("floor")
    assert first == second
    assert 0 < floor < first
    assert "* keyguard/core/verifier.py" in text
    assert "* benchmarks/_floor.py" in floor_text
    assert "keyguard/" not in floor_text


@pytest.mark.slow
def test_bytecodes_by_line_show_the_generated_lines_with_their_text() -> None:
    """--lines lists the guard's own count line by line with each line's text, the generated
    admission's lines included (their source is registered with linecache)."""
    proc = _script("profile_paths.py", "full", "--bytecodes", "--lines", "--number", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "<keyguard.ratelimit bound asgi admit" in out
    assert re.search(r"^\s+[\d.]+\s+\d+\s+states\.move_to_end\(bucket\)$", out, re.M), out
    assert re.search(r"^\s+[\d.]+\s+\d+\s+hit = self\._index\.get\(", out, re.M), out
    assert "starlette/" not in out  # the guard's own code only
    refused = _script("profile_paths.py", "full", "--lines")
    assert refused.returncode == 2
    assert "--lines goes with --bytecodes" in refused.stderr


def test_rows_keeps_the_named_rows_with_their_baselines_in_order() -> None:
    """--rows (a quicker before/after run): the rows named by a piece of their label, case
    aside, and every baseline they are compared with, even when only the row is named."""
    from benchmarks._inprocess import BenchmarkError, Variant, select

    def build() -> None:
        return None

    rows = [
        Variant("bare", build),
        Variant("floor", build, "bare"),
        Variant("Full path", build, "bare"),
        Variant("nested", build, "Full path"),
        Variant("other", build),
    ]
    assert select(rows, None) == rows
    assert [v.label for v in select(rows, "full")] == ["bare", "Full path"]
    assert [v.label for v in select(rows, "NESTED")] == ["bare", "Full path", "nested"]
    assert [v.label for v in select(rows, "floor, other")] == ["bare", "floor", "other"]
    with pytest.raises(BenchmarkError, match="no row label"):
        select(rows, "nothing like it")


def test_rows_refuses_an_empty_filter() -> None:
    proc = _script("bench_asgi.py", "--rows", " , ")
    assert proc.returncode == 2
    assert "--rows needs at least one piece" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "script",
    sorted(
        p.name
        for p in (ROOT / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")
        and not p.name.startswith("_")
    ),
)
def test_every_script_imports_and_explains_itself(script: str) -> None:
    """Scripts outside run.py's groups (bench_memory, bench_verify, bench_outage,
    profile_paths) would rot unseen: each must at least import and answer --help."""
    proc = _script(script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


# -- instructions.py: the path each count runs ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        "full",
        "wsgi-full",
        "Starlette AuthenticationMiddleware: 401, unknown key (on_error)",
        "observability-asgi-on",
        "observability-wsgi-on",
    ],
)
def test_instructions_serves_each_kind_of_path(path: str) -> None:
    """What valgrind counts is a plain run of ``--serve PATH N``: a path name of
    profile_paths.py, a row label, an observability variant; each builds, primes (checking its
    status) and serves without valgrind, and leaves at once."""
    proc = _script("instructions.py", "--serve", path, "50")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_instructions_refuses_an_unknown_path_and_lists_the_known_ones() -> None:
    proc = _script("instructions.py", "--serve", "no such row", "1")
    assert proc.returncode != 0
    assert "unknown path 'no such row'" in proc.stderr
    assert "keyguard: 401, malformed key" in proc.stderr


# -- profile_e2e: charging py-spy's samples --------------------------------------------------------

_PLAN = "<keyguard.ratelimit WindowPlan('burst=20/10s, 100/minute, 5000/day')>"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("keyguard/adapters/asgi.py", "keyguard"),
        ("/venv/lib/python3.11/site-packages/keyguard/core/verifier.py", "keyguard"),
        (_PLAN, "keyguard"),
        ("day')>", "keyguard"),  # py-spy cuts a name it cannot place at its last "/"
        ("benchmarks/_floor.py", "floor"),
        ("benchmarks/_e2e_apps.py", "app"),
        ("starlette/routing.py", "starlette"),
        ("uvicorn/protocols/http/httptools_impl.py", "uvicorn"),
        ("asyncio/events.py", "asyncio/uvloop"),
        ("uvloop/__init__.py", "asyncio/uvloop"),
        ("json/encoder.py", "json"),
        ("<frozen importlib._bootstrap>", "other"),
        ("<string>", "other"),
        ("email/utils.py", "other"),
    ],
)
def test_profile_e2e_names_each_files_component(filename: str, expected: str) -> None:
    assert component(filename) == expected


def test_profile_e2e_charges_each_sample_to_its_innermost_python_frame() -> None:
    """A sample belongs to the innermost Python function on its stack, the C code it was
    running included (a write() under uvicorn's send is uvicorn's); native-only stacks and
    lines that are not samples count as "other" or not at all."""
    lines = [
        f"<module> (uvicorn/main.py:10);__call__ (keyguard/adapters/asgi.py:120);"
        f"run ({_PLAN}:15);long_add (libpython3.11.so.1.0) 5\n",
        "<module> (uvicorn/main.py:10);__call__ (keyguard/adapters/asgi.py:120);"
        "render (day')>:15);PyBytes_FromFormat (bytesobject.c:400) 3\n",
        "<module> (uvicorn/main.py:10);__call__ (keyguard/adapters/asgi.py:120);"
        "app (starlette/routing.py:70);Py_DECREF (object.h:537) 4\n",
        "<module> (uvicorn/main.py:10);send (uvicorn/protocols/http/httptools_impl.py:524);"
        "write (libc.so.6) 7\n",
        "check (benchmarks/_floor.py:40);_sha256_sha256 (sha256module.c:100) 2\n",
        "epoll_wait (libc.so.6) 1\n",
        "not a sample\n",
        "\n",
    ]
    components, functions, total = charge(lines)
    assert total == 22
    assert components == {"keyguard": 8, "starlette": 4, "uvicorn": 7, "floor": 2, "other": 1}
    assert functions == {"run (generated)": 5, "render (generated)": 3, "check (_floor.py)": 2}


def test_instructions_gc_off_reaches_both_counted_interpreters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--gc-off`` is passed to each ``--serve`` run valgrind counts (the one serving N and the
    one serving none), and only with the option."""
    import subprocess

    from benchmarks import instructions

    commands: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        commands.append(cmd)
        return subprocess.CompletedProcess(
            cmd,
            0,
            "",
            f"==1== Collected : {1000 + 7 * int(cmd[-2] if cmd[-1] == '--gc-off' else cmd[-1])}",
        )

    monkeypatch.setattr(instructions.subprocess, "run", fake_run)
    assert instructions.per_request("full", 10, gc_off=True) == 7
    assert [cmd[-3:] for cmd in commands] == [["full", "10", "--gc-off"], ["full", "0", "--gc-off"]]
    commands.clear()
    assert instructions.per_request("full", 10) == 7
    assert [cmd[-2:] for cmd in commands] == [["full", "10"], ["full", "0"]]


def test_instructions_seeds_set_the_hash_seed_of_each_pair_and_average(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--seeds``: each seed's pair of counted interpreters runs under that PYTHONHASHSEED, and
    the count printed is the mean of the seeds' counts."""
    import argparse
    import subprocess

    from benchmarks import instructions

    seen: list[tuple[str, str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seed = kwargs["env"]["PYTHONHASHSEED"]
        seen.append((seed, cmd[-1]))
        per = {"1": 10, "2": 20, "3": 60}[seed]
        return subprocess.CompletedProcess(
            cmd, 0, "", f"==1== Collected : {500 + per * int(cmd[-1])}"
        )

    monkeypatch.setattr(instructions.subprocess, "run", fake_run)
    assert instructions.per_request("full", 10, seeds=(1, 2, 3)) == 30
    assert seen == [("1", "10"), ("1", "0"), ("2", "10"), ("2", "0"), ("3", "10"), ("3", "0")]
    assert instructions._seeds("1,2,3") == (1, 2, 3)
    for bad in ("", "a", "1,,2", "-1", "4294967296"):
        with pytest.raises(argparse.ArgumentTypeError):
            instructions._seeds(bad)
