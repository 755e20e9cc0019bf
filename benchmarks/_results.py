"""The result model every benchmark script writes, and ``run.py`` / ``compare.py`` read.

A script measures one **group** (``asgi``, ``wsgi``, ``redis``, ``scale``, ``revocation``,
``e2e``, ``memory``) and writes it as JSON::

    {"format": 1, "group": "asgi", "title": "...", "environment": {...}, "options": {...},
     "rows": [{"label": ..., "unit": "µs", "better": "lower", "runs": [...], "min": ...,
               "median": ..., "q1": ..., "q3": ..., "max": ..., "baseline": ...,
               "overhead_min": ..., "overhead_median": ..., "status": ..., "note": ...}],
     "facts": {...}}

``runs`` are the repeats in the order they were taken (round-robin: repeat ``r`` of every row
of a group ran close together in time). ``unit``/``better`` say how to read and compare a row
(µs per request, lower is better; req/s, higher is better; ms, lower). ``facts`` hold figures
that are not repeated timings (round trips, bytes per key, hit ratios, cache sizes).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FORMAT = 1
LOWER, HIGHER = "lower", "higher"


def environment() -> dict[str, Any]:
    """Where and when a run happened (printed in every header, stored in every JSON)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                platform.processor() or "unknown CPU",
            )
    except OSError:
        model = platform.processor() or "unknown CPU"
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "packages": packages(),
    }


#: The packages whose versions a run's figures depend on (the frameworks measured, the peers,
#: the server and its loop and parser, the Redis driver).
PACKAGES = (
    "starlette",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "redis",
    "hiredis",
    "slowapi",
    "flask",
    "django",
)


def packages() -> dict[str, str]:
    """The installed version of each of :data:`PACKAGES` ("absent" when not installed)."""
    from importlib import metadata

    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def describe(env: dict[str, Any]) -> str:
    return (
        f"Python {env['python']} ({env['implementation']}) · {env['platform']} · "
        f"{env.get('cpu', '?')} · {env['cpus']} CPUs · {env['date']}"
    )


def quartiles(runs: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3) of ``runs`` (inclusive method; a single run is its own quartiles)."""
    if len(runs) < 2:
        return runs[0], runs[0]
    q = statistics.quantiles(runs, n=4, method="inclusive")
    return q[0], q[2]


@dataclass
class Row:
    """One measured row: its repeats, and what it is compared with."""

    label: str
    runs: list[float] = field(default_factory=list)
    unit: str = "µs"
    better: str = LOWER
    baseline: str | None = None
    status: int | None = None
    note: str = ""

    @property
    def min(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def best(self) -> float:
        """The least disturbed repeat: the minimum (or the maximum when higher is better)."""
        return max(self.runs) if self.better == HIGHER else min(self.runs)


def row_json(row: Row, by_label: dict[str, Row]) -> dict[str, Any]:
    q1, q3 = quartiles(row.runs)
    data: dict[str, Any] = {
        "label": row.label,
        "unit": row.unit,
        "better": row.better,
        "min": round(row.min, 4),
        "median": round(row.median, 4),
        "q1": round(q1, 4),
        "q3": round(q3, 4),
        "max": round(max(row.runs), 4),
        "baseline": row.baseline,
        "overhead_min": None,
        "overhead_median": None,
        "status": row.status,
        "note": row.note,
        "runs": [round(x, 4) for x in row.runs],
    }
    base = by_label.get(row.baseline) if row.baseline else None
    if base is not None:
        data["overhead_min"] = round(row.min - base.min, 4)
        data["overhead_median"] = round(row.median - base.median, 4)
    return data


def group_json(
    group: str,
    title: str,
    rows: Sequence[Row],
    *,
    options: dict[str, Any] | None = None,
    facts: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
) -> dict[str, Any]:
    by_label = {r.label: r for r in rows}
    return {
        "format": FORMAT,
        "group": group,
        "title": title,
        "environment": env or environment(),
        "options": options or {},
        "rows": [row_json(r, by_label) for r in rows if r.runs],
        "facts": facts or {},
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SystemExit(f"{path}: not a keyguard benchmark JSON file (format {FORMAT})")
    return data
