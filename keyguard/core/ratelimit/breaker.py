"""The circuit breaker of :class:`~keyguard.core.ratelimit.ResilientLimiter`, and the
rate-limited log of its fallbacks: when to stop calling a failing backend, when to probe it
again, and how to tell an operator about every request it did not decide without flooding
the log."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Final

logger = logging.getLogger("keyguard.ratelimit")

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class CircuitBreaker:
    """Closed → open after ``failure_threshold`` consecutive failures, or at once when the
    backend is down (a refused connection is not going to answer the next request either);
    open for ``cooldown`` seconds; then one request probes (half-open): success closes,
    failure reopens. Thread-safe; the closed path takes no lock.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_lock",
        "_opened_at",
        "_probing",
        "cooldown",
        "failure_threshold",
        "state",
    )

    def __init__(self, failure_threshold: int, cooldown: float, clock: Callable[[], float]) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self.state: str = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether this request may call the backend (claims the probe when half-open)."""
        if self.state is CLOSED:
            return True
        with self._lock:
            if self.state is CLOSED:
                return True
            if self._probing:
                return False
            if self.state is OPEN and self._clock() - self._opened_at < self.cooldown:
                return False
            self.state = HALF_OPEN
            self._probing = True
        logger.info("rate-limit backend: circuit half-open, probing")
        return True

    def succeeded(self) -> bool:
        """Record a success; True when it closed an open circuit (a recovery)."""
        if self.state is CLOSED and not self._failures:
            return False
        with self._lock:
            recovered = self.state is not CLOSED
            self.state = CLOSED
            self._failures = 0
            self._probing = False
        return recovered

    def failed(self, down: bool) -> tuple[bool, str]:
        """Record a failure; returns (whether the circuit opened now, the state before)."""
        with self._lock:
            self._failures += 1
            was = self.state
            if was is HALF_OPEN or (
                was is CLOSED and (down or self._failures >= self.failure_threshold)
            ):
                self.state = OPEN
                self._opened_at = self._clock()
                self._probing = False
                return True, was
            return False, was

    def abandoned(self) -> None:
        """A probe cancelled mid-flight must not leave the breaker waiting for it forever."""
        with self._lock:
            self._probing = False

    def retry_after(self) -> int:
        """Whole seconds until the backend is tried again (1 when the circuit is closed)."""
        if self.state is CLOSED:
            return 1
        return max(1, math.ceil(self.cooldown - (self._clock() - self._opened_at)))


class FallbackLog:
    """Every request decided without the backend is reported at WARNING, at most one line per
    ``interval`` seconds: the first fallback after a quiet interval at once, later ones as a
    count in the next line (written by the next fallback or success once the interval has
    passed, or at recovery). A flood of fallbacks costs a few lines a minute, and none goes
    unreported while traffic continues."""

    __slots__ = ("_clock", "_last_at", "_lock", "_since", "_unlogged", "interval", "mode")

    def __init__(self, mode: str, interval: float, clock: Callable[[], float]) -> None:
        self.mode = mode
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._unlogged = 0
        self._since = 0.0
        self._last_at: float | None = None

    def _due(self, now: float) -> int:
        # Under the lock: the count to report now (0: not yet).
        last = self._last_at
        if not self._unlogged or (last is not None and now - last < self.interval):
            return 0
        count, self._unlogged, self._last_at = self._unlogged, 0, now
        return count

    def fell_back(self, cause: str) -> None:
        """Account for one request decided without the backend, because of ``cause``."""
        now = self._clock()
        with self._lock:
            if not self._unlogged:
                self._since = now
            self._unlogged += 1
            since = self._since
            count = self._due(now)
        if count == 1:
            logger.warning(
                "rate-limit backend failed (%s): request decided by mode=%s; further "
                "fallbacks are reported at most every %gs",
                cause,
                self.mode,
                self.interval,
            )
        elif count:
            logger.warning(
                "rate-limit backend: %d requests decided by mode=%s in the last %.1fs "
                "(latest cause: %s)",
                count,
                self.mode,
                now - since,
                cause,
            )

    def succeeded(self, recovered: bool) -> None:
        """The backend answered: report fallbacks not yet logged (at once after a recovery,
        else once the interval has passed)."""
        if not self._unlogged and not recovered:
            return
        now = self._clock()
        with self._lock:
            if recovered:
                self._last_at = None
            since = self._since
            count = self._due(now)
        if count:
            logger.warning(
                "rate-limit backend: %d request(s) decided by mode=%s in the %.1fs before it "
                "answered again",
                count,
                self.mode,
                now - since,
            )
        if recovered:
            logger.info("rate-limit backend: recovered, circuit closed")
