"""Event counters a limiter keeps for operators: how many decisions its backend made, how many
fell back and why, how often it retried. Plain integers behind one lock, readable at any time
with :meth:`Counters.snapshot`, so a metrics exporter can publish them without keyguard
depending on one."""

from __future__ import annotations

import threading
from collections.abc import Iterable


class Counters:
    """Named, monotonically increasing counters, safe to bump from any thread.

    ``counters["fallbacks"]`` reads one; :meth:`snapshot` returns all of them at once (a
    consistent copy). Counters only grow: an exporter computes rates from differences.
    """

    __slots__ = ("_lock", "_values")

    def __init__(self, names: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to ``name`` (which must be one of the names given at construction)."""
        with self._lock:
            self._values[name] += n

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        """Every counter, read under the lock."""
        with self._lock:
            return dict(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.snapshot().items())
        return f"Counters({inner})"
