"""Usage charts as geometry for inline SVG: requests per day stacked by status class, and the
most called routes as horizontal bars.

Pure functions from :class:`~keyguard.dashboard.usage.DayUsage` values to rectangles with
their counts; the templates draw them as ``<rect>`` elements coloured by CSS class (no inline
style, so the Content-Security-Policy needs no exception) and repeat every number in a table,
so the data is readable without the picture (screen readers, copy and paste, tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from keyguard.dashboard.usage import STATUS_CLASSES, DayUsage

__all__ = ["Bar", "DayChart", "RouteBar", "day_chart", "route_bars"]

WIDTH: Final = 720
HEIGHT: Final = 220
_LEFT: Final = 44  # room for the y-axis labels
_RIGHT: Final = 24  # room for the last day's label
_BOTTOM: Final = 24  # room for the x-axis labels
_TOP: Final = 8


@dataclass(frozen=True, slots=True)
class Bar:
    """One status class of one day: a rectangle and what it stands for."""

    x: float
    y: float
    width: float
    height: float
    cls: str
    count: int
    day: date

    @property
    def label(self) -> str:
        return f"{self.day.isoformat()}: {self.count} × {self.cls}"


@dataclass(frozen=True, slots=True)
class DayChart:
    """A stacked bar chart of requests per day (oldest day first)."""

    width: int
    height: int
    days: tuple[DayUsage, ...]
    bars: tuple[Bar, ...]
    y_ticks: tuple[tuple[float, int], ...]
    x_labels: tuple[tuple[float, str], ...]
    totals: tuple[tuple[str, int], ...]
    baseline: float
    left: float

    @property
    def total(self) -> int:
        return sum(n for _, n in self.totals)

    @property
    def right(self) -> float:
        """Where the plot ends (grid lines run from :attr:`left` to here)."""
        return float(self.width - _RIGHT)

    @property
    def empty(self) -> bool:
        return self.total == 0


def _nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^n at least ``value`` (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def day_chart(usage: Sequence[DayUsage], *, days: int, today: date) -> DayChart:
    """The chart of the ``days`` days ending ``today``; days missing from ``usage`` are zero."""
    by_day = {u.day: u for u in usage}
    window = [today - timedelta(days=days - 1 - i) for i in range(days)]
    filled = tuple(by_day.get(d, DayUsage(d, {})) for d in window)
    top = _nice_max(max((u.total for u in filled), default=0))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    baseline = float(HEIGHT - _BOTTOM)
    slot = plot_w / max(days, 1)
    bar_w = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    for i, u in enumerate(filled):
        x = _LEFT + i * slot + (slot - bar_w) / 2
        y = baseline
        for cls in STATUS_CLASSES:
            n = u.count(cls)
            if n <= 0:
                continue
            h = plot_h * n / top
            y -= h
            bars.append(Bar(round(x, 2), round(y, 2), round(bar_w, 2), round(h, 2), cls, n, u.day))
    ticks = tuple((round(baseline - plot_h * f, 2), round(top * f)) for f in (0, 0.5, 1))
    every = max(1, days // 6)
    x_labels = tuple(
        (round(_LEFT + i * slot + slot / 2, 2), d.strftime("%b %d"))
        for i, d in enumerate(window)
        if (days - 1 - i) % every == 0
    )
    totals = tuple((cls, sum(u.count(cls) for u in filled)) for cls in STATUS_CLASSES)
    return DayChart(
        WIDTH, HEIGHT, filled, tuple(bars), ticks, x_labels, totals, baseline, float(_LEFT)
    )


@dataclass(frozen=True, slots=True)
class RouteBar:
    """One route and its share of the busiest route's count (0-100)."""

    route: str
    count: int
    percent: float


def route_bars(routes: Sequence[tuple[str, int]]) -> tuple[RouteBar, ...]:
    top = max((n for _, n in routes), default=0)
    return tuple(
        RouteBar(route, n, round(100.0 * n / top, 1) if top else 0.0) for route, n in routes
    )
