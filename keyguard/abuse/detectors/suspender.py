"""Suspending keys off the request path: a queue and one worker thread.

A detector decides in microseconds; suspending a key is a store transaction (and an audit
event) that may wait on a lock or a network. :class:`Suspender` takes the request, returns at
once, and a worker thread — started on the first request, stopped by :meth:`close` — calls
:meth:`KeyManager.suspend <keyguard.management.KeyManager.suspend>` with the detector's actor
label (``keyguard:detector:<name>``) and reason. The queue is bounded (``max_pending``): when it
is full a request is dropped and counted, never waited for. A store that is unavailable or a
conflicting write is retried ``attempts`` times with a doubling pause; a key that is gone or
revoked is logged and counted, not retried. Suspension is reversible: ``keyguard keys resume
ID`` (or :meth:`~keyguard.management.KeyManager.resume`) undoes it, and both are audited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

from keyguard.core.errors import ConflictError, ManagementError, StoreUnavailable
from keyguard.core.ratelimit.stats import Counters

__all__ = ["Suspender", "SuspendsKeys", "SuspensionRequest"]

logger = logging.getLogger("keyguard.abuse.detectors")

#: What :attr:`Suspender.stats` counts.
STATS: Final = ("requested", "suspended", "refused", "failed", "dropped")


class SuspendsKeys(Protocol):
    """What the suspender needs: :meth:`KeyManager.suspend
    <keyguard.management.KeyManager.suspend>`'s signature."""

    def suspend(self, key_id: str, *, reason: str, actor: str | None = None) -> object: ...


@dataclass(frozen=True, slots=True)
class SuspensionRequest:
    key_id: str
    reason: str
    actor: str


class Suspender:
    """Suspends keys on a worker thread (see the module docstring). ``manager`` is a
    :class:`~keyguard.management.KeyManager`, or anything with its ``suspend`` method."""

    def __init__(
        self,
        manager: SuspendsKeys,
        *,
        max_pending: int = 1000,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.manager = manager
        self.max_pending = max_pending
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.stats = Counters(STATS)
        self._pending: deque[SuspensionRequest] = deque()
        self._lock = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def request(self, key_id: str, *, reason: str, actor: str) -> bool:
        """Queue a suspension; ``False`` when it was dropped (queue full, or closed)."""
        with self._lock:
            if self._closed or len(self._pending) >= self.max_pending:
                self.stats.incr("dropped")
                return False
            self._pending.append(SuspensionRequest(key_id, reason, actor))
            self.stats.incr("requested")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="keyguard-suspender", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending:
                    return
                item = self._pending.popleft()
                self._busy = True
            try:
                self._suspend(item)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _suspend(self, item: SuspensionRequest) -> None:
        pause = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                self.manager.suspend(item.key_id, reason=item.reason, actor=item.actor)
            except (StoreUnavailable, ConflictError) as exc:
                if attempt == self.attempts or self._closed:
                    self.stats.incr("failed")
                    logger.warning(
                        "could not suspend key %s for %s (%s): gave up after %d attempt(s)",
                        item.key_id,
                        item.actor,
                        type(exc).__name__,
                        attempt,
                    )
                    return
                time.sleep(pause)
                pause *= 2
            except ManagementError as exc:
                # Revoked (suspension refused), deleted, or an operator's policy said no.
                self.stats.incr("refused")
                logger.info("key %s not suspended for %s: %s", item.key_id, item.actor, exc)
                return
            except Exception:
                self.stats.incr("failed")
                logger.exception("suspending key %s for %s failed", item.key_id, item.actor)
                return
            else:
                self.stats.incr("suspended")
                logger.warning("suspended key %s (%s): %s", item.key_id, item.actor, item.reason)
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued suspension was carried out (``False`` on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Carry out what is queued (within ``timeout``), then stop the worker."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def __repr__(self) -> str:
        return f"Suspender({self.stats.snapshot()})"
