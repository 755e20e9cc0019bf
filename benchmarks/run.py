"""Run the whole benchmark suite: every in-process group and the end-to-end run, then the goals.

Run from the repository root with the project's virtualenv (``pip install -e '.[bench]'``)::

    python benchmarks/run.py                 # everything, ~8 minutes on a 2-core machine
    python benchmarks/run.py --quick         # a smoke run, well under a minute
    python benchmarks/run.py --only asgi,e2e # some groups
    python benchmarks/compare.py OLD.json NEW.json   # before/after a change

Each group is one script run in its own process (a fresh interpreter: no group's garbage or
caches slow the next), its table printed as it goes: ``bench_asgi.py`` (asgi),
``bench_wsgi.py`` (wsgi), ``bench_scale.py`` (scale), ``bench_redis.py`` (redis),
``bench_revocation.py`` (revocation), ``bench_e2e.py`` (e2e), ``bench_observability.py``
(observability). Then every goal of issue 13 (and
issue 9's revocation bound) is judged on the rows of this run and printed as met / MISSED /
n/a, and the whole run is written as one JSON file (default ``build/bench/run-<time>.json``)
plus a Markdown summary beside it (same name, ``.md``): the table for the README.

Exit status: 0 when every group ran (goals may be missed: that is a finding, not a failure),
1 when a group failed (its script aborted: a row did not behave as the benchmark assumes).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import FORMAT, describe, environment, read_json, write_json
from benchmarks.goals import Goal, evaluate

ROOT = Path(__file__).resolve().parent.parent

#: group -> (script, options passed in quick mode, takes --url)
GROUPS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "asgi": ("bench_asgi.py", ("--quick",), False),
    "wsgi": ("bench_wsgi.py", ("--quick",), False),
    "scale": ("bench_scale.py", ("--quick",), False),
    "redis": ("bench_redis.py", ("--quick",), True),
    "revocation": ("bench_revocation.py", ("--quick",), True),
    "e2e": ("bench_e2e.py", ("--quick",), False),
    "observability": ("bench_observability.py", ("--quick",), False),
}
#: Seconds a group may take before it is stopped (and reported as failed).
TIMEOUT = 1_200


def run_group(name: str, quick: bool, url: str | None, tmp: str) -> tuple[dict[str, Any], str]:
    script, quick_options, takes_url = GROUPS[name]
    out = os.path.join(tmp, f"{name}.json")
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--json", out]
    if quick:
        command += quick_options
    if takes_url and url:
        command += ["--url", url]
    print(f"\n{'=' * 100}\n$ {' '.join(command[1:])}\n", flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(command, cwd=ROOT, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {}, f"timed out after {TIMEOUT} s"
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        return {}, f"exit status {proc.returncode}"
    if not os.path.exists(out):
        return {}, "wrote no JSON"
    data = read_json(out)
    data["seconds"] = round(seconds, 1)
    return data, ""


def markdown(suite: dict[str, Any], goals: list[Goal]) -> str:
    env = suite["environment"]
    lines = [
        f"Benchmarks, {suite['mode']} run: {describe(env)}",
        "",
        "Figures in µs per request unless stated; overhead = row - its baseline, same run "
        "(from the minimums / the medians).",
    ]
    for name, data in suite["groups"].items():
        if not data.get("rows"):
            skipped = data.get("facts", {}).get("skipped") or data.get("error", "no rows")
            lines += ["", f"**{name}**: not measured ({skipped})"]
            continue
        lines += [
            "",
            f"**{name}** — {data['title']}",
            "",
            "| row | min | median | overhead (min / median) |",
            "|---|---:|---:|---|",
        ]
        for row in data["rows"]:
            unit = "" if row["unit"] == "µs" else f" {row['unit']}"
            over = ""
            if row["overhead_min"] is not None:
                over = (
                    f"{row['overhead_min']:+.2f} / {row['overhead_median']:+.2f} "
                    f"vs {row['baseline']}"
                )
            lines.append(
                f"| {row['label']} | {row['min']:,.2f}{unit} | {row['median']:,.2f}{unit} | "
                f"{over} |"
            )
    lines += ["", "**Goals**", "", "| goal | verdict | measured |", "|---|---|---|"]
    for g in goals:
        lines.append(f"| {g.text} | {g.verdict()} | {g.measured} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run of every group")
    parser.add_argument(
        "--only", help=f"comma-separated groups to run (default all: {', '.join(GROUPS)})"
    )
    parser.add_argument("--url", help="Redis URL for the redis and revocation groups")
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="where to write the run (default build/bench/run-<time>.json)",
    )
    args = parser.parse_args()
    names = list(GROUPS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}; known: {', '.join(GROUPS)}")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = args.json or str(ROOT / "build" / "bench" / f"run-{stamp}.json")

    env = environment()
    print(f"keyguard benchmark suite ({'quick' if args.quick else 'full'}): {describe(env)}")
    suite: dict[str, Any] = {
        "format": FORMAT,
        "suite": "keyguard",
        "mode": "quick" if args.quick else "full",
        "environment": env,
        "groups": {},
        "goals": [],
    }
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            data, error = run_group(name, args.quick, args.url, tmp)
            if error:
                failed.append(f"{name}: {error}")
                data = {"group": name, "rows": [], "error": error}
            suite["groups"][name] = data

    goals = evaluate(suite["groups"])
    suite["goals"] = [g.as_json() for g in goals]
    print(f"\n{'=' * 100}\nGoals (ratios of rows of this run; minimums unless stated):")
    width = max(len(g.text) for g in goals)
    for g in goals:
        print(f"  [{g.verdict():>6}]  {g.text:<{width}}  {g.measured}")
    missed = [g for g in goals if g.met is False]
    measured = [g for g in goals if g.met is not None]
    print(f"\n{len(measured) - len(missed)} of {len(measured)} measured goals met")
    write_json(path, suite)
    md = os.path.splitext(path)[0] + ".md"
    with open(md, "w", encoding="utf-8") as f:
        f.write(markdown(suite, goals))
    print(f"wrote {path} and {md}")
    for failure in failed:
        print(f"FAILED group {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
