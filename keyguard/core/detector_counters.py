"""The counter primitive the anomaly detectors count with, and its in-process implementation.

A detector asks one question many times: *how many times did this happen within this window?*
— wrong secrets for a key id in the last ten minutes, requests of a key in this minute.
:class:`DetectorCounters` answers it with two calls, :meth:`~DetectorCounters.add` (count and
read back in one step, atomic across every process that shares the backend) and
:meth:`~DetectorCounters.count` (read). A :class:`Window` says how a counter is cut up:

* **sliding** (the default): the window is cut into :data:`SLOTS` sub-windows of
  ``seconds / 8``, and the count is the sum of the newest eight, the current one included.
  So an occurrence counts for at least 7/8 of the window and never longer than the window: a
  count never includes anything older than ``seconds`` (no alert on fewer than the threshold
  within the window), and always includes everything of the last ``7/8 × seconds``.
* **fixed**: consecutive periods of ``seconds`` (aligned on the epoch); the count is that of
  the period holding ``now``. The last ``keep`` periods stay readable, so a detector can read
  the total of the minute that just ended (``count(name, window, now - seconds)``).

Counters expire on their own: a sliding counter is forgotten a window after its last use, a
fixed one ``keep`` periods after. Times are the caller's (the events' ``at``), so a replayed
trace counts exactly as it did live. Names are short ASCII words without braces or whitespace
(a key id, a network, a hash); a counter is always used with the same :class:`Window`.

Implementations: :class:`MemoryDetectorCounters` here (one process, bounded by an LRU cap),
and in :mod:`keyguard.stores` SQLite (``keyguard.stores.sqlite_detector_counters``) and Redis
(``keyguard.stores.redis_detector_counters``), shared by every process using the same file or
server; :func:`keyguard.stores.detector_counters.detector_counters_from_url` picks one by URL.
The name is distinct on purpose: the usage and notification counters of the observability
layer are another thing.
"""

from __future__ import annotations

import math
import re
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from keyguard.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_COUNTERS",
    "SLOTS",
    "DetectorCounters",
    "MemoryDetectorCounters",
    "Window",
    "check_name",
]

#: Sub-windows of a sliding window.
SLOTS: Final = 8
#: Counters a :class:`MemoryDetectorCounters` keeps before it forgets the least recently used.
DEFAULT_MAX_COUNTERS: Final = 50_000
#: Longest counter name.
MAX_NAME: Final = 200
_MAX_KEEP: Final = 64
_MAX_COUNT: Final = 2**62
# Printable ASCII but space and braces (a Redis Cluster hash tag must not be broken).
_NAME: Final = re.compile(rf"[\x21-\x7a\x7c\x7e]{{1,{MAX_NAME}}}")


def check_name(name: str) -> str:
    """``name`` if it can name a counter in every backend (ConfigurationError otherwise)."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigurationError(
            "a detector counter name is 1 to 200 printable ASCII characters, without braces "
            "or whitespace"
        )
    return name


@dataclass(frozen=True, slots=True)
class Window:
    """How a counter is cut up in time (see the module docstring)."""

    seconds: float
    fixed: bool = False
    #: Fixed windows: how many periods stay readable (the current one included).
    keep: int = 1
    #: Width of one bucket in seconds: ``seconds / 8`` (sliding) or ``seconds`` (fixed).
    width: float = field(init=False, repr=False, compare=False)
    #: Buckets one counter holds at most.
    ring: int = field(init=False, repr=False, compare=False)
    #: A short tag naming the window, part of every backend's key for the counter.
    tag: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seconds = self.seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or not 0.001 <= seconds <= 366 * 86400
        ):
            raise ConfigurationError(
                f"a counter window is between 1 ms and 366 days, got {seconds!r}"
            )
        keep = self.keep
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= _MAX_KEEP:
            raise ConfigurationError(f"keep must be an integer from 1 to {_MAX_KEEP}")
        if not self.fixed and keep != 1:
            raise ConfigurationError("keep applies to fixed windows only")
        object.__setattr__(self, "seconds", float(seconds))
        object.__setattr__(self, "width", float(seconds) if self.fixed else seconds / SLOTS)
        object.__setattr__(self, "ring", keep if self.fixed else SLOTS)
        kind = "f" if self.fixed else "s"
        object.__setattr__(self, "tag", f"{kind}{math.floor(seconds * 1000 + 0.5)}")

    def index(self, now: float) -> int:
        """The bucket holding ``now``."""
        return math.floor(now / self.width)

    def span(self, now: float) -> tuple[int, int]:
        """``(first, last)``: the buckets a count at ``now`` adds up, both included."""
        last = self.index(now)
        return (last, last) if self.fixed else (last - SLOTS + 1, last)

    @property
    def ttl(self) -> float:
        """How long after its last use a counter may be forgotten."""
        return self.width * self.ring


@runtime_checkable
class DetectorCounters(Protocol):
    """Windowed counters (see the module docstring). Methods raise
    :class:`~keyguard.core.errors.StoreUnavailable` when a shared backend cannot be reached."""

    #: Whether other processes see the same counts (``False`` for in-process counters).
    shared: bool

    def add(self, name: str, window: Window, now: float, amount: int = 1) -> int:
        """Count ``amount`` occurrences at ``now`` and return the count at ``now`` (this one
        included), atomically: of several processes adding at once, each sees a distinct total."""
        ...

    def count(self, name: str, window: Window, now: float) -> int:
        """The count at ``now`` (for a fixed window: of the period holding ``now``), without
        counting anything."""
        ...

    def close(self) -> None:
        """Release connections (a no-op in process)."""
        ...


class MemoryDetectorCounters:
    """:class:`DetectorCounters` in this process, bounded.

    At most ``max_counters`` counters are kept; past that the least recently used is forgotten
    (a counter forgotten early only under-counts: a detector fires late, never falsely). Each
    counter is one flat array of 64-bit integers (its newest bucket, then a ring of eight
    counts, or ``keep`` for a fixed window) in an ordered dict under its name: measured with
    ``tracemalloc``, 300 to 320 bytes per counter with 24- to 40-character names, so the
    default cap of 50,000 costs about 16 MB (``tests/abuse/test_detector_memory.py`` asserts
    under 400 bytes).
    Thread-safe (one lock).
    """

    shared = False

    def __init__(self, *, max_counters: int = DEFAULT_MAX_COUNTERS) -> None:
        if isinstance(max_counters, bool) or not isinstance(max_counters, int) or max_counters < 1:
            raise ConfigurationError("max_counters must be an integer >= 1")
        self.max_counters = max_counters
        self._data: OrderedDict[str, array[int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def add(self, name: str, window: Window, now: float, amount: int = 1) -> int:
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            check_name(name)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ConfigurationError("amount must be an integer >= 0")
        key = f"{name}|{window.tag}"
        ring = window.ring
        index = math.floor(now / window.width)
        data = self._data
        with self._lock:
            rec = data.get(key)
            if rec is None:
                rec = data[key] = array("q", [index] + [0] * ring)
                if len(data) > self.max_counters:
                    data.popitem(last=False)
            else:
                data.move_to_end(key)
                top = rec[0]
                if index > top:
                    # Clear the buckets between the newest one and this one.
                    for b in range(max(top + 1, index - ring + 1), index + 1):
                        rec[1 + b % ring] = 0
                    rec[0] = index
            if index > rec[0] - ring:  # a bucket still in the ring (events may come a bit late)
                slot = 1 + index % ring
                rec[slot] = min(_MAX_COUNT, rec[slot] + amount)
            return _total(rec, window, now)

    def count(self, name: str, window: Window, now: float) -> int:
        check_name(name)
        with self._lock:
            rec = self._data.get(f"{name}|{window.tag}")
            return 0 if rec is None else _total(rec, window, now)

    def close(self) -> None:
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        return f"MemoryDetectorCounters(counters={len(self._data)}, max={self.max_counters})"


def _total(rec: array[int], window: Window, now: float) -> int:
    top, ring = rec[0], window.ring
    first, last = window.span(now)
    if last == top and first == top - ring + 1:
        return sum(rec) - top  # the whole ring: the common case
    first = max(first, top - ring + 1)
    last = min(last, top)
    return sum(rec[1 + b % ring] for b in range(first, last + 1))
