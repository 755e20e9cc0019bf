"""The usage counts in the key store, as the readers that want them ask for them.

- :class:`StoreUsage` — the dashboard's :class:`~keyguard.dashboard.usage.UsageSource`
  (requests per day by status class, most called routes), per key or per owner:
  ``Dashboard(api, usage=StoreUsage(store))``.
- :class:`StoreScopeUsage` — ``keyguard review``'s :class:`~keyguard.abuse.usage.UsageSource`
  (requests per *needed* scope since a time): ``KeyReview(..., usage=StoreScopeUsage(store))``.

Both read what :class:`~keyguard.observability.usage.UsageCounter` flushed (so counts lag by
at most one flush interval) and are whole UTC days: a window starts at midnight UTC of its
first day. The scope usage answers ``None`` — "no complete data", so the review suggests
nothing — when the period asked about starts before usage counting started writing to this
store, or before the oldest day the store still keeps.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from keyguard.core.usage import (
    DEFAULT_RETENTION_DAYS,
    ROUTE_FIELD,
    SCOPE_FIELD,
    STATUS_FIELD,
    USAGE_SINCE_SETTING,
    UsageTotals,
    cutoff_day,
    iso_day,
)
from keyguard.observability.model import STATUS_CLASSES

if TYPE_CHECKING:
    from keyguard.core.store import KeyStore

__all__ = ["StoreScopeUsage", "StoreUsage"]


def _one(key_id: str | None, owner: str | None) -> None:
    if (key_id is None) == (owner is None):
        raise ValueError("give exactly one of key_id and owner")


class StoreUsage:
    """The dashboard's usage source, reading the key store (see the module docstring).

    ``before_read`` — e.g. the serving process's ``UsageCounter.flush`` — runs before each
    read, so that a dashboard served by the counting process shows its requests at once
    instead of after the next flush.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        before_read: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.before_read = before_read
        self._clock = clock

    def _totals(self, key_id: str | None, owner: str | None, days: int) -> UsageTotals:
        _one(key_id, owner)
        if self.before_read is not None:
            self.before_read()
        since = cutoff_day(self._clock(), max(days, 1))
        return self.store.usage_totals(key_id=key_id, owner=owner, since=since)

    def daily_usage(
        self, *, key_id: str | None = None, owner: str | None = None, days: int
    ) -> list[Any]:
        """Per UTC day with requests, oldest first: ``DayUsage(day, {status class: n})``."""
        from keyguard.dashboard.usage import DayUsage  # the dashboard's own value type

        if days <= 0:
            _one(key_id, owner)
            return []
        totals = self._totals(key_id, owner, days)
        out = []
        for day in sorted(totals.days):
            counts = {
                name[len(STATUS_FIELD) :]: int(n)
                for name, n in totals.days[day].items()
                if name.startswith(STATUS_FIELD) and name[len(STATUS_FIELD) :] in STATUS_CLASSES
            }
            if counts:
                out.append(DayUsage(date.fromisoformat(day), counts))
        return out

    def top_routes(
        self, *, key_id: str | None = None, owner: str | None = None, days: int, limit: int
    ) -> list[tuple[str, int]]:
        """The ``limit`` most called routes (``"GET /agents"``), most called first."""
        if days <= 0 or limit <= 0:
            _one(key_id, owner)
            return []
        total: Counter[str] = Counter()
        for fields in self._totals(key_id, owner, days).days.values():
            for name, n in fields.items():
                if name.startswith(ROUTE_FIELD):
                    total[name[len(ROUTE_FIELD) :]] += int(n)
        return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]

    def __repr__(self) -> str:
        return f"StoreUsage({self.store!r})"


class StoreScopeUsage:
    """``keyguard review``'s usage source, reading the key store (see the module docstring).

    ``retention_days`` is what the counters were configured with (default 90): data older
    than that is gone, so a period starting earlier gets ``None``.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self._clock = clock

    @property
    def since(self) -> float | None:
        """When usage counting first wrote to this store (epoch seconds), if ever."""
        raw = self.store.get_setting(USAGE_SINCE_SETTING)
        try:
            return None if raw is None else float(raw)
        except ValueError:
            return None

    def scope_usage(self, key_id: str, since: float) -> Mapping[str, int] | None:
        started = self.since
        now = self._clock()
        if started is None or since < started:
            return None
        if iso_day(since) < cutoff_day(now, self.retention_days):
            return None
        totals = self.store.usage_totals(key_id=key_id, since=iso_day(since))
        used: Counter[str] = Counter()
        for fields in totals.days.values():
            for name, n in fields.items():
                if name.startswith(SCOPE_FIELD):
                    used[name[len(SCOPE_FIELD) :]] += int(n)
        return dict(used)

    def __repr__(self) -> str:
        return f"StoreScopeUsage({self.store!r})"
