"""What a usage chart shows: one key's, one owner's, or the sum of some keys' requests.

An owner's usage is asked of the usage source as such only for an ``admin`` operator; any
other operator sees the sum over the keys it may see, so a chart never counts requests of a
key outside the operator's authority.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from keyguard.dashboard.charts import DayChart, RouteBar, day_chart, route_bars
from keyguard.dashboard.usage import STATUS_CLASSES, DayUsage, day_of

if TYPE_CHECKING:
    from keyguard.dashboard.app import Dashboard

__all__ = ["UsagePanel", "usage_panel"]

TOP_ROUTES: Final = 8


@dataclass(frozen=True, slots=True)
class UsagePanel:
    """A chart ready for the template; ``wired`` is false when no usage source is configured."""

    wired: bool
    days: int
    chart: DayChart | None = None
    routes: tuple[RouteBar, ...] = ()
    classes: tuple[str, ...] = STATUS_CLASSES


def _summed(parts: Sequence[Sequence[DayUsage]]) -> list[DayUsage]:
    days: dict[object, Counter[str]] = {}
    for usage in parts:
        for u in usage:
            days.setdefault(u.day, Counter()).update({k: int(v) for k, v in u.counts.items()})
    return [DayUsage(d, dict(c)) for d, c in days.items()]  # type: ignore[arg-type]


def usage_panel(
    dash: Dashboard,
    *,
    now: float,
    key_id: str | None = None,
    owner: str | None = None,
    key_ids: Sequence[str] | None = None,
) -> UsagePanel:
    """The panel for one key, one owner, or the sum of ``key_ids``."""
    source = dash.usage
    days = dash.usage_days
    if source is None:
        return UsagePanel(False, days)
    if key_ids is not None:
        daily = _summed([source.daily_usage(key_id=k, days=days) for k in key_ids])
        routes: Counter[str] = Counter()
        for k in key_ids:
            routes.update(dict(source.top_routes(key_id=k, days=days, limit=TOP_ROUTES)))
        top = sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ROUTES]
    else:
        daily = list(source.daily_usage(key_id=key_id, owner=owner, days=days))
        top = list(source.top_routes(key_id=key_id, owner=owner, days=days, limit=TOP_ROUTES))
    chart = day_chart(daily, days=days, today=day_of(now))
    return UsagePanel(True, days, chart, route_bars(top))
