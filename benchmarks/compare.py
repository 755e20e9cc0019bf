"""Compare two benchmark runs (before / after a change) and flag regressions beyond noise.

Run: ``python benchmarks/compare.py OLD.json NEW.json`` with two files written by
``run.py`` (or by one script's ``--json``). Rows are matched by group and label; rows in only
one file are listed, not judged. Exit status 1 when any row regressed or any goal met in OLD
is missed in NEW, else 0.

**The noise rule.** Each row holds R repeats. For the OLD row take its median ``m`` and its
interquartile range ``IQR = Q3 - Q1``; the noise band is ``band = max(k x IQR, p x m)``
(``--iqr-factor k``, default 1.5; ``--floor p``, default 3 %, because a row whose repeats
happen to agree closely still moves a few percent between runs on a shared machine). For a
row where lower is better (µs, ms):

* **regression** when the NEW *minimum* exceeds ``m + band``: even NEW's least disturbed
  repeat is slower than OLD's typical one by more than OLD's own spread;
* **improvement** when the NEW *median* is below OLD's *minimum* minus the band;
* otherwise **same** (within noise).

Where higher is better (requests/s) the rule is mirrored (NEW's maximum below ``m - band``
is a regression). Rows with fewer than 3 repeats in either file (``--quick`` runs) are shown
but not judged. Run OLD and NEW on the same machine, back to back, with the same options:
absolute figures of two machines (or of one machine under different load) are not
comparable. ``--relative`` instead compares each row's ratio to its baseline row, repeat by
repeat (a row and its baseline ran moments apart in the round-robin), which cancels a
machine that became uniformly slower or faster between the two runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._results import HIGHER, quartiles, read_json

MIN_REPEATS = 3


def groups_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's groups (a single group's file is a run of one group)."""
    if "groups" in data:
        return data["groups"]  # type: ignore[no-any-return]
    return {data["group"]: data}


def series(row: dict[str, Any], group: dict[str, Any], relative: bool) -> list[float] | None:
    """The repeats of ``row``, or (relative) row / baseline repeat by repeat."""
    runs: list[float] = row["runs"]
    if not relative:
        return runs
    base = next((r for r in group["rows"] if r["label"] == row.get("baseline")), None)
    if base is None or len(base["runs"]) != len(runs):
        return None
    return [a / b for a, b in zip(runs, base["runs"], strict=True) if b > 0]


def judge(
    old: Sequence[float], new: Sequence[float], higher: bool, iqr_factor: float, floor: float
) -> tuple[str, float]:
    """(verdict, band) for one row."""
    if len(old) < MIN_REPEATS or len(new) < MIN_REPEATS:
        return "not judged (fewer than 3 repeats)", 0.0
    m = statistics.median(old)
    q1, q3 = quartiles(old)
    band = max(iqr_factor * (q3 - q1), floor * abs(m))
    if higher:
        if max(new) < m - band:
            return "REGRESSION", band
        if statistics.median(new) - band > max(old):
            return "improved", band
    else:
        if min(new) > m + band:
            return "REGRESSION", band
        if statistics.median(new) + band < min(old):
            return "improved", band
    return "same", band


def compare(
    old: dict[str, Any],
    new: dict[str, Any],
    *,
    iqr_factor: float = 1.5,
    floor: float = 0.03,
    relative: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-row verdicts, and the goals met in ``old`` but missed in ``new``."""
    results: list[dict[str, Any]] = []
    old_groups, new_groups = groups_of(old), groups_of(new)
    for name, new_group in new_groups.items():
        old_group = old_groups.get(name)
        old_rows = {r["label"]: r for r in (old_group or {}).get("rows", ())}
        for row in new_group.get("rows", ()):
            label = row["label"]
            entry: dict[str, Any] = {"group": name, "label": label, "unit": row["unit"]}
            before = old_rows.get(label)
            a = series(before, old_group, relative) if before and old_group else None
            b = series(row, new_group, relative)
            if before is None:
                entry["verdict"] = "new row"
            elif a is None or b is None:
                entry["verdict"] = "not judged (no baseline to compare with)"
            else:
                verdict, band = judge(a, b, row["better"] == HIGHER, iqr_factor, floor)
                entry.update(
                    verdict=verdict,
                    old_median=statistics.median(a),
                    new_min=min(b),
                    new_median=statistics.median(b),
                    band=band,
                    change=statistics.median(b) / statistics.median(a) - 1,
                )
            results.append(entry)
        for label in old_rows.keys() - {r["label"] for r in new_group.get("rows", ())}:
            results.append({"group": name, "label": label, "verdict": "gone"})
    lost = [
        g["text"]
        for g in new.get("goals", ())
        if g["met"] is False
        and any(o["id"] == g["id"] and o["met"] is True for o in old.get("goals", ()))
    ]
    return results, lost


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("old", help="the run before the change (JSON)")
    parser.add_argument("new", help="the run after the change (JSON)")
    parser.add_argument("--iqr-factor", type=float, default=1.5, help="band = k x IQR (1.5)")
    parser.add_argument(
        "--floor", type=float, default=0.03, help="smallest band, a fraction of the median (0.03)"
    )
    parser.add_argument(
        "--relative", action="store_true", help="compare row / baseline ratios, repeat by repeat"
    )
    args = parser.parse_args()
    if args.iqr_factor < 0 or args.floor < 0:
        parser.error("--iqr-factor and --floor must be >= 0")
    old, new = read_json(args.old), read_json(args.new)
    results, lost = compare(
        old, new, iqr_factor=args.iqr_factor, floor=args.floor, relative=args.relative
    )
    print(f"OLD {args.old}: {old['environment']['date']}, {old['environment']['platform']}")
    print(f"NEW {args.new}: {new['environment']['date']}, {new['environment']['platform']}")
    if old["environment"].get("cpu") != new["environment"].get("cpu"):
        print("warning: the two runs are from different CPUs: absolute figures do not compare")
    old_packages = old["environment"].get("packages") or {}
    new_packages = new["environment"].get("packages") or {}
    changed = [
        f"{name} {old_packages[name]} -> {version}"
        for name, version in sorted(new_packages.items())
        if name in old_packages and old_packages[name] != version
    ]
    if changed:
        print(f"warning: package versions differ: {', '.join(changed)}")
    what = "ratio to baseline" if args.relative else "value"
    print(f"comparing each row's {what}; band = max({args.iqr_factor:g} x IQR, {args.floor:.0%})\n")
    width = max([len(r["label"]) for r in results] + [20])
    for r in results:
        text = f"{r['group']:<10} {r['label']:<{width}}  "
        if "old_median" in r:
            text += (
                f"old median {r['old_median']:10.3f}  new min {r['new_min']:10.3f}  "
                f"median {r['new_median']:10.3f}  ({r['change']:+6.1%}, band "
                f"±{r['band']:.3f})  "
            )
        print(text + r["verdict"])
    regressions = [r for r in results if r["verdict"] == "REGRESSION"]
    for text in lost:
        print(f"goal met before, MISSED now: {text}")
    print(
        f"\n{len(regressions)} regression(s) beyond noise, "
        f"{sum(r['verdict'] == 'improved' for r in results)} improvement(s), "
        f"{len(lost)} goal(s) lost"
    )
    return 1 if regressions or lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
