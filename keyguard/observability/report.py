"""Usage reports: a store's :class:`~keyguard.core.usage.UsageTotals` shaped into the shared
:class:`~keyguard.observability.model.UsageReport` (one entry per UTC day of the window, zeros
included, every status class present)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.usage import ROUTE_FIELD, STATUS_FIELD, UsageTotals, cutoff_day
from keyguard.observability.model import STATUS_CLASSES, UsageDay, UsageReport

__all__ = ["MAX_REPORT_DAYS", "OTHER_ROUTE", "build_report", "check_days", "first_day"]

#: The longest window a report covers (stores keep 90 days unless configured otherwise).
MAX_REPORT_DAYS: Final = 366
#: The route of requests no policy template matched.
OTHER_ROUTE: Final = "(other)"


def check_days(days: object) -> int:
    """``days`` as a window length, or a :class:`ConfigurationError` naming the bounds."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_REPORT_DAYS:
        raise ConfigurationError(f"days must be an integer from 1 to {MAX_REPORT_DAYS}")
    return days


def first_day(now: float, days: int) -> str:
    """The ISO day a ``days``-long window ending today (UTC) starts on."""
    return cutoff_day(now, days)


def build_report(
    totals: UsageTotals,
    *,
    days: int,
    now: float,
    key_id: str | None = None,
    owner: str | None = None,
    last_used_at: float | None = None,
) -> UsageReport:
    """The report of ``totals`` over the ``days`` UTC days ending today. ``last_used_at``
    (e.g. the record's, kept by older writers too) wins when it is later than the totals'."""
    today = datetime.fromtimestamp(now, UTC).date()
    out = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        fields: Mapping[str, int] = totals.days.get(day.isoformat(), {})
        by_status = dict.fromkeys(STATUS_CLASSES, 0)
        by_route: dict[str, int] = {}
        for name, count in fields.items():
            if name.startswith(STATUS_FIELD):
                cls = name[len(STATUS_FIELD) :]
                if cls in by_status:
                    by_status[cls] += int(count)
            elif name.startswith(ROUTE_FIELD):
                by_route[name[len(ROUTE_FIELD) :]] = int(count)
        out.append(UsageDay(day=day, by_status=by_status, by_route=by_route))
    last = totals.last_used_at
    if last_used_at is not None and (last is None or last_used_at > last):
        last = last_used_at
    return UsageReport(
        days=tuple(out),
        key_id=key_id,
        owner=owner,
        last_used_at=last,
        last_client=totals.last_client,
    )
