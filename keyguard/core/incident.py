"""One log line when a dependency starts failing, one when it recovers, a count in between.

A store that is down fails every request that needs it; logging a traceback per request would
bury the one line an operator needs (and cost more than the request). :class:`Incident` logs the
first failure of an incident at ERROR with the exception's type and message (never a
traceback, never request data), counts the failures that follow, and logs one WARNING with the
count when an operation succeeds again. Thread-safe; the success path costs one attribute read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Incident"]


class Incident:
    """Failure bookkeeping for one dependency (``what`` names it in the log lines)."""

    __slots__ = ("_failures", "_lock", "_logger", "listener", "what")

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self._logger = logger
        self._failures = 0
        self._lock = threading.Lock()
        #: Called with each failure's exception (observability's ``store_unavailable``
        #: events); it must not raise.
        self.listener: Callable[[BaseException], None] | None = None

    @property
    def failures(self) -> int:
        """Failures in the current incident (0: healthy)."""
        return self._failures

    def failed(self, exc: BaseException, action: str = "failing closed") -> None:
        with self._lock:
            self._failures += 1
            first = self._failures == 1
        if first:
            self._logger.error("%s failed (%s: %s); %s", self.what, type(exc).__name__, exc, action)
        listener = self.listener
        if listener is not None:
            listener(exc)

    def succeeded(self) -> None:
        if not self._failures:
            return
        with self._lock:
            failures, self._failures = self._failures, 0
        if failures:
            self._logger.warning("%s recovered after %d failed operation(s)", self.what, failures)
