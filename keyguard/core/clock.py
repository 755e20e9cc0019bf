"""Time sources. Records use wall-clock epoch seconds (UTC); freshness uses a monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]

wall: Clock = time.time
monotonic: Clock = time.monotonic


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (``None`` passes through)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_iso(ts: float | None) -> str | None:
    """Epoch seconds to an ISO-8601 UTC string with a ``Z`` suffix (``None`` passes through)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
