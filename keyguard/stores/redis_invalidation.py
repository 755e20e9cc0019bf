"""Revocations pushed to every process: a Redis pub/sub listener that drops cache entries.

Every mutation made through :class:`~keyguard.stores.redis_store.RedisStore` publishes the key
id on ``<prefix>:invalidate`` (from inside the script that commits the change, so a message is
sent iff the change committed). Each process runs one :class:`InvalidationListener`: a daemon
thread with its own connection, subscribed once, calling every registered callback with the key
id. Callbacks are cheap and thread-safe (``Verifier.invalidate`` takes a lock and pops a dict
entry), so a revocation is seen by every worker within a few milliseconds.

When the subscription drops, messages may have been missed: the listener calls every callback
with ``None`` ("forget everything"), so caches fall back to re-reading the store, and
resubscribes with capped exponential backoff. A process forked after the listener started (a
pre-forking server with ``--preload``) starts its own listener in the child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["InvalidationListener"]

logger = logging.getLogger("keyguard.stores.redis")

Callback = Callable[[str | None], None]

_MIN_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
# How long a blocking read waits before checking whether the listener was stopped.
_POLL = 0.5


class InvalidationListener:
    """Subscribes to one channel on one Redis connection and fans messages out to callbacks.

    ``connect`` returns a fresh :class:`redis.Redis` to subscribe on (any node of a Cluster
    receives every published message). Started lazily by the first :meth:`add`.
    """

    def __init__(self, connect: Callable[[], Redis], channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._callbacks: list[Callback] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._subscribed = threading.Event()
        self._live: tuple[Any, ...] = ()
        #: Times the subscription was (re)established, and dropped: for tests and metrics.
        self.subscriptions = 0
        self.drops = 0
        os.register_at_fork(after_in_child=self._after_fork)

    # -- callbacks -------------------------------------------------------------------------
    def add(self, callback: Callback) -> None:
        with self._lock:
            self._callbacks.append(callback)
        self._ensure_running()

    def _fan_out(self, key_id: str | None) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(key_id)
            except Exception:  # a broken callback must not stop revocations for the others
                logger.exception("an invalidation callback failed")

    # -- the thread ------------------------------------------------------------------------
    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="keyguard-invalidations", daemon=True
            )
            self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until the subscription is live (tests, and callers that must not miss one)."""
        return self._subscribed.wait(timeout)

    def _run(self) -> None:
        backoff = _MIN_BACKOFF
        first = True
        while not self._stop.is_set():
            client: Any = None
            pubsub: Any = None
            try:
                client = self._connect()
                pubsub = client.pubsub()
                self._live = (pubsub, client)
                if self._stop.is_set():
                    break
                pubsub.subscribe(self._channel)
                # Wait for Redis's confirmation, so that "subscribed" means it.
                deadline = time.monotonic() + 5.0
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("no subscription confirmation")
                    reply = pubsub.get_message(timeout=min(remaining, _POLL))
                    if reply is not None and reply.get("type") == "subscribe":
                        break
                self.subscriptions += 1
                if not first:
                    # Messages may have been missed while we were away: forget everything.
                    self._fan_out(None)
                    logger.warning("keyguard invalidation channel resubscribed; caches flushed")
                first = False
                backoff = _MIN_BACKOFF
                self._subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=_POLL)
                    if message is None or message.get("type") != "message":
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes):
                        data = data.decode("ascii", "replace")
                    self._fan_out(str(data) if data else None)
            except Exception as exc:  # any driver error: drop, flush, back off, retry
                if self._stop.is_set():
                    break
                self._subscribed.clear()
                self.drops += 1
                self._fan_out(None)
                logger.warning(
                    "keyguard invalidation subscription lost (%s); caches flushed, retrying in "
                    "%.2f s",
                    type(exc).__name__,
                    backoff,
                )
                self._stop.wait(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                backoff = min(backoff * 2, _MAX_BACKOFF)
            finally:
                self._live = ()
                _close_all(pubsub, client)
        self._subscribed.clear()

    def _after_fork(self) -> None:
        # The thread did not survive the fork; locks may be held by it in the parent.
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread = None
        self._pid = os.getpid()
        if self._callbacks and not self._stop.is_set():
            self._ensure_running()

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                # Still blocked (a busy machine, a slow connect): close its connection from here
                # so that no socket outlives close(); the thread then ends on the error.
                _close_all(*self._live)


def _close_all(*closables: Any) -> None:
    for closable in closables:
        if closable is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                closable.close()
