"""Time sources. Records use wall-clock epoch seconds (UTC); freshness uses a monotonic clock.

Expiry and rotation grace are wall-clock facts (a record says "until 12:00 UTC"), so they must
be compared with the wall clock — which can step backwards (a bad NTP server, an operator, a VM
restored from a snapshot). A step back of an hour would make an expired key, or an old secret
whose rotation grace ended, valid again for an hour. :class:`Ratchet` prevents that within one
process: the time it reports never goes backwards. :data:`WALL` is the process-wide ratchet over
:func:`time.time` that the verifier uses by default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

__all__ = ["WALL", "Clock", "Ratchet", "monotonic", "ratchet", "to_datetime", "to_iso", "wall"]

Clock = Callable[[], float]

wall: Clock = time.time
monotonic: Clock = time.monotonic

logger = logging.getLogger("keyguard.clock")

#: Steps back shorter than this are ordinary jitter and are not logged.
_LOG_STEP: Final = 1.0


class Ratchet:
    """A clock that never goes backwards: the latest time ``clock`` has reported so far.

    After the wall clock steps back, the ratchet keeps reporting the latest time it saw until the
    wall clock catches up (logged once per step of a second or more). The cost of the
    opposite mistake — a clock stepped *forward* and then corrected — is that records look
    later than they are until real time catches up: keys expire early, grace periods end
    early. That fails closed, which is the right side for an authentication check.
    Thread-safe; one lock acquisition per call.
    """

    __slots__ = ("_clock", "_held", "_last", "_lock")

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._last = -float("inf")
        self._held = False
        self._lock = threading.Lock()

    def __call__(self) -> float:
        now = self._clock()
        with self._lock:
            last = self._last
            if now >= last:
                self._last = now
                self._held = False
                return now
            if not self._held and last - now >= _LOG_STEP:
                self._held = True
                logger.warning(
                    "the wall clock stepped back by %.1f s; expiry and rotation grace keep "
                    "using the latest time seen until it catches up",
                    last - now,
                )
            return last

    def __repr__(self) -> str:
        return f"Ratchet({self._clock!r})"


#: The process-wide ratchet over ``time.time``.
WALL: Final = Ratchet(time.time)


def ratchet(clock: Clock) -> Ratchet:
    """``clock`` as a :class:`Ratchet`: :data:`WALL` for ``time.time`` (so that every user of
    the system clock in this process shares one), the clock itself if it already is one, else
    a new ratchet over it."""
    if clock is time.time:
        return WALL
    if isinstance(clock, Ratchet):
        return clock
    return Ratchet(clock)


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (``None`` passes through)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def to_iso(ts: float | None) -> str | None:
    """Epoch seconds to an ISO-8601 UTC string with a ``Z`` suffix (``None`` passes through)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
