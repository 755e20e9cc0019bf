"""The state of one bucket (a key or an owner): the sliding log of the exact windows and the
rings of buckets of the long ones, with the two ring operations the decision needs.

The log is a deque (units leave from the left one by one, in O(1), however long the window's
log). A ring's buckets are one flat list of ``last, units`` pairs, not a list object per
bucket: half the memory of a key used all day, and nothing slower on the hot path. (Flat
``array('q')`` storage would halve it again and touch fewer cache lines for a key whose state
is cold, but every read boxes a new int: measured 0.2 µs slower per decision on a hot key.)"""

from __future__ import annotations

from collections import deque
from typing import Final

_NEVER: Final = 2**62


class _Ring:
    """A bucketed window: ``buckets`` holds ``last, units`` pairs, flat and oldest first
    (``buckets[2 * k]``, ``buckets[2 * k + 1]``), and ``total`` their units.

    A bucket holds the units admitted during one ``width``-long slice of time (its index is
    ``last // width``); ``last`` is the time of its latest admission, and all its units leave
    the window together when that one does, at ``last + period``. So no unit leaves before
    the exact rule lets it (never over-admits), none stays more than one bucket longer, and
    the wait reported for any bucket is at most ``period``. ``release`` (when the oldest
    bucket may leave: never later than the truth, so an early value only costs a check) and
    ``end`` (when the newest bucket's slice closes) are kept so the hot path compares instead
    of dividing.
    """

    __slots__ = ("buckets", "end", "release", "total")

    def __init__(self) -> None:
        self.buckets: list[int] = []
        self.total = 0
        self.release = _NEVER
        self.end = -_NEVER


class RateState:
    """The rate-limit state of one bucket (key).

    ``last``: the latest ``now`` seen (µs). ``log``: one timestamp (µs) per admitted unit of
    the exact windows, ascending. ``rings``: a long window's period (µs) -> its buckets.
    """

    __slots__ = ("last", "log", "rings")

    def __init__(self) -> None:
        self.last = -(2**62)
        self.log: deque[int] = deque()
        self.rings: dict[int, _Ring] = {}

    def copy(self) -> RateState:
        new = RateState()
        new.last = self.last
        new.log = deque(self.log)
        for period, ring in self.rings.items():
            r = new.rings[period] = _Ring()
            r.buckets = list(ring.buckets)
            r.total = ring.total
            r.release = ring.release
            r.end = ring.end
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RateState):
            return NotImplemented
        return (
            self.last == other.last
            and self.log == other.log
            and {p: (r.buckets, r.total) for p, r in self.rings.items() if r.total}
            == {p: (r.buckets, r.total) for p, r in other.rings.items() if r.total}
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RateState(last={self.last}, log={len(self.log)} units, rings={len(self.rings)})"


def _expire(ring: _Ring, now: int, period: int) -> None:
    # A bucket leaves the window when its latest unit does: at last + period.
    cutoff = now - period
    buckets = ring.buckets
    size = len(buckets)
    k = 0
    gone = 0
    while k < size and buckets[k] <= cutoff:
        gone += buckets[k + 1]
        k += 2
    if k:
        del buckets[:k]
        ring.total -= gone
    ring.release = buckets[0] + period if buckets else _NEVER


def _open_bucket(ring: _Ring, now: int, cost: int, period: int, width: int) -> None:
    buckets = ring.buckets
    buckets.append(now)
    buckets.append(cost)
    ring.end = (now // width + 1) * width
    if len(buckets) == 2:
        ring.release = now + period
