"""Usage counts as stores keep them: what a flush writes and what a read returns.

A process counts requests in memory (:class:`keyguard.observability.usage.UsageCounter`) and,
every few seconds, hands its store one :class:`UsageBatch` per key it saw: *increments*, never
totals, so that several processes writing to one store add up. A day's counts are one flat
mapping of *fields* to numbers: ``s:<status class>`` (``s:2xx``, ``s:429``...),
``r:<route>`` (``r:GET /agents/{agent_id}``) and ``q:<scope>`` (requests whose route needed
that scope: what ``keyguard review`` compares a key's grants with), so every store can keep
them the same way (a SQLite row per field, a Redis hash per key and day). Days are UTC dates
in ISO form (``2030-01-31``), which sort as text.

Reads (:class:`UsageTotals`) sum the fields of one key, or of every key an owner has now.
The protocol lives in ``core`` because :class:`~keyguard.core.store.KeyStore` declares it; the
counting and the reports built from these totals live in :mod:`keyguard.observability`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "ROUTE_FIELD",
    "SCOPE_FIELD",
    "STATUS_FIELD",
    "USAGE_SINCE_SETTING",
    "UsageBatch",
    "UsageTotals",
    "cutoff_day",
    "day_range",
    "iso_day",
]

#: Prefix of a status-class field (``s:2xx``).
STATUS_FIELD: Final = "s:"
#: Prefix of a route field (``r:GET /agents``).
ROUTE_FIELD: Final = "r:"
#: Prefix of a needed-scope field (``q:agents:read``): requests whose route required it.
SCOPE_FIELD: Final = "q:"
#: How many UTC days of usage stores keep (today included) unless told otherwise.
DEFAULT_RETENTION_DAYS: Final = 90
#: The store setting holding when usage counting first wrote to this store (epoch seconds).
USAGE_SINCE_SETTING: Final = "usage_since"

_EMPTY: Final[Mapping[str, Mapping[str, int]]] = MappingProxyType({})


def iso_day(at: float) -> str:
    """The UTC day of an epoch time, as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def cutoff_day(now: float, days: int) -> str:
    """The first day of a window of ``days`` UTC days ending today (``days >= 1``)."""
    today = datetime.fromtimestamp(now, UTC).date()
    return (today - timedelta(days=max(days, 1) - 1)).isoformat()


@dataclass(frozen=True, slots=True)
class UsageBatch:
    """One key's increments from one flush of one process.

    ``counts`` maps ISO days to ``{field: increment}``; ``last_used_at`` and ``last_client``
    are this batch's latest request (stores keep the latest over all batches). ``batch_id`` is
    unique per batch: a store whose write can fail after part of it applied (Redis) records it
    with the increments, so that a retried batch is never counted twice.
    """

    key_id: str
    counts: Mapping[str, Mapping[str, int]]
    last_used_at: float | None = None
    last_client: str | None = None
    batch_id: str = ""

    @property
    def total(self) -> int:
        """Requests in this batch (its status fields summed)."""
        return sum(
            n for day in self.counts.values() for f, n in day.items() if f.startswith(STATUS_FIELD)
        )


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a store holds for one key (or an owner's keys, summed) from a given day on.

    ``days`` maps ISO days to ``{field: count}``; days without requests are absent.
    """

    days: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: _EMPTY)
    last_used_at: float | None = None
    last_client: str | None = None


def day_range(first: str, last: date) -> list[date]:
    """Every date from ISO day ``first`` to ``last``, oldest first."""
    start = date.fromisoformat(first)
    return [start + timedelta(days=i) for i in range((last - start).days + 1)]
