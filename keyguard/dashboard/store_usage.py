"""The dashboard's usage source backed by the key manager: what the usage counters flushed to
the store (:meth:`~keyguard.management.KeyManager.usage` and ``owner_usage``), so every worker
and every dashboard process shows the same counts.

A page asks for a subject's days and then its routes; both come from one report, kept for a
few seconds (``ttl``) so a page costs one store read per subject, not two.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Final

from keyguard.core.clock import Clock
from keyguard.dashboard.usage import DayUsage
from keyguard.observability.model import UsageReport

__all__ = ["ManagerUsage"]

_MAX_CACHED: Final = 256


class ManagerUsage:
    """A :class:`~keyguard.dashboard.usage.UsageSource` reading ``manager.usage(key_id,
    days=...)`` and ``manager.owner_usage(owner, days=...)``."""

    def __init__(
        self, manager: Any, *, ttl: float = 5.0, monotonic: Clock = time.monotonic
    ) -> None:
        if not callable(getattr(manager, "usage", None)) or not callable(
            getattr(manager, "owner_usage", None)
        ):
            raise TypeError("ManagerUsage needs a KeyManager with usage() and owner_usage()")
        self.manager = manager
        self.ttl = float(ttl)
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cache: dict[tuple[str | None, str | None, int], tuple[float, UsageReport]] = {}

    def __repr__(self) -> str:
        return f"ManagerUsage({self.manager!r})"

    def report(self, *, key_id: str | None, owner: str | None, days: int) -> UsageReport:
        """The usage report of one key or one owner (cached for ``ttl`` seconds)."""
        if (key_id is None) == (owner is None):
            raise ValueError("give exactly one of key_id and owner")
        subject = (key_id, owner, days)
        now = self._monotonic()
        with self._lock:
            hit = self._cache.get(subject)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        if key_id is not None:
            found: UsageReport = self.manager.usage(key_id, days=days)
        else:
            found = self.manager.owner_usage(owner, days=days)
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[subject] = (now, found)
        return found

    def daily_usage(
        self, *, key_id: str | None = None, owner: str | None = None, days: int
    ) -> list[DayUsage]:
        report = self.report(key_id=key_id, owner=owner, days=days)
        return [DayUsage(d.day, dict(d.by_status)) for d in report.days if d.total]

    def top_routes(
        self, *, key_id: str | None = None, owner: str | None = None, days: int, limit: int
    ) -> list[tuple[str, int]]:
        routes: Counter[str] = Counter()
        for d in self.report(key_id=key_id, owner=owner, days=days).days:
            routes.update(dict(d.by_route))
        return sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
