"""The state of one bucket (a key or an owner): the sliding log of the exact windows and the
rings of buckets of the long ones, with the two ring operations the decision needs."""

from __future__ import annotations

from collections import deque
from typing import Final

_NEVER: Final = 2**62


class _Ring:
    """A bucketed window: ``[index, units]`` pairs, oldest first, and their running total.

    ``release`` (when the oldest bucket leaves the window) and ``end`` (when the newest
    bucket closes) are derived, kept so the hot path compares instead of dividing.
    """

    __slots__ = ("buckets", "end", "release", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
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
            r.buckets = deque([b[0], b[1]] for b in ring.buckets)
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
            and {p: (list(r.buckets), r.total) for p, r in self.rings.items() if r.total}
            == {p: (list(r.buckets), r.total) for p, r in other.rings.items() if r.total}
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RateState(last={self.last}, log={len(self.log)} units, rings={len(self.rings)})"


def _expire(ring: _Ring, now: int, period: int, width: int) -> None:
    # Buckets with index < (now - period) // width have left the window.
    first = (now - period) // width
    buckets = ring.buckets
    while buckets and buckets[0][0] < first:
        ring.total -= buckets.popleft()[1]
    ring.release = (buckets[0][0] + 1) * width + period if buckets else _NEVER


def _open_bucket(ring: _Ring, now: int, cost: int, period: int, width: int) -> None:
    idx = now // width
    ring.buckets.append([idx, cost])
    ring.end = (idx + 1) * width
    if len(ring.buckets) == 1:
        ring.release = ring.end + period
