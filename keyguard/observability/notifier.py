"""The :class:`Notifier`: finds notification conditions and delivers each once.

The conditions and the :class:`~keyguard.observability.notifications.Notification` value are
in :mod:`keyguard.observability.notifications` (whose docstring explains "once per
condition"); this module does the work: it scans the store for the periodic conditions
(:meth:`Notifier.check`, from cron or a thread), takes event-driven ones from the event
pipeline (it is an event sink that only queues), claims each per target in the store, and
calls the callbacks and webhooks from a worker thread, never from the request path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from keyguard.core.errors import ConfigurationError, KeyguardError
from keyguard.core.records import KeyStatus
from keyguard.core.store import KeyStore
from keyguard.observability.model import Event, EventKind
from keyguard.observability.notifications import (
    DEFAULT_EXPIRING_WITHIN,
    DEFAULT_ROTATION_AFTER,
    Notification,
    NotificationKind,
    conditions,
    from_event,
)
from keyguard.observability.webhooks import Webhook

__all__ = ["Callback", "Notifier"]

logger = logging.getLogger("keyguard.notifications")

Callback = Callable[[Notification], Any]
_STOP: Final = object()


class Notifier:
    """Finds notification conditions and delivers each once (see the module docstring).

    ``store`` holds the keys and the once-only markers (a :class:`KeyStore` or a URL; one
    opened from a URL is closed by :meth:`close`). ``callbacks`` are called with each
    :class:`Notification` (an ``async def`` callback is run to completion in the delivering
    thread); ``webhooks`` are :class:`~keyguard.observability.webhooks.Webhook` receivers.
    ``events`` (optional) receives a ``NOTIFICATION`` :class:`Event` for each notification
    sent. ``expiring_within`` / ``rotation_after`` set the two periodic conditions (``None``
    turns one off); ``kinds`` limits which conditions are delivered at all.
    """

    def __init__(
        self,
        store: KeyStore | str,
        *,
        callbacks: Sequence[Callback] = (),
        webhooks: Sequence[Webhook] = (),
        events: Callable[[Event], None] | None = None,
        expiring_within: float | None = DEFAULT_EXPIRING_WITHIN,
        rotation_after: float | None = DEFAULT_ROTATION_AFTER,
        kinds: Iterable[NotificationKind | str] = tuple(NotificationKind),
        queue_size: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(store, str):
            from keyguard.stores import from_url

            store = from_url(store)
            self._owns_store = True
        else:
            self._owns_store = False
        self.store = store
        if not callbacks and not webhooks:
            raise ConfigurationError("a Notifier needs at least one callback or webhook")
        for cb in callbacks:
            if not callable(cb):
                raise ConfigurationError("notification callbacks must be callable")
        for hook in webhooks:
            if not isinstance(hook, Webhook):
                raise ConfigurationError("webhooks must be keyguard Webhook objects")
        self.callbacks = tuple(callbacks)
        self.webhooks = tuple(webhooks)
        self.events = events
        for name, value in (
            ("expiring_within", expiring_within),
            ("rotation_after", rotation_after),
        ):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds or None")
        self.expiring_within = expiring_within
        self.rotation_after = rotation_after
        self.kinds = frozenset(NotificationKind(k) for k in kinds)
        self.clock = clock
        #: Event-driven notifications dropped because the queue was full.
        self.dropped = 0
        #: Deliveries that failed (a callback raised, a webhook gave up); retried next check.
        self.failures = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._seen: OrderedDict[str, None] = OrderedDict()  # names this process queued
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Notifier(store={self.store!r}, callbacks={len(self.callbacks)}, "
            f"webhooks={[w.shown_url for w in self.webhooks]})"
        )

    # -- targets ---------------------------------------------------------------------------------
    def _targets(self) -> Iterator[tuple[str, Callable[[Notification], bool]]]:
        for i, cb in enumerate(self.callbacks):
            label = getattr(cb, "__qualname__", type(cb).__name__)
            tag = hashlib.sha256(f"{i}:{label}".encode()).hexdigest()[:12]
            yield f"cb-{tag}", functools.partial(self._call, cb)
        for hook in self.webhooks:
            yield f"wh-{hook.target}", functools.partial(_post, hook)

    @staticmethod
    def _call(callback: Callback, notification: Notification) -> bool:
        try:
            result = callback(notification)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except Exception:
            logger.exception("a notification callback failed (%s)", notification.name)
            return False
        return True

    # -- delivery --------------------------------------------------------------------------------
    def deliver(self, notification: Notification, ttl: float) -> bool:
        """Send ``notification`` to every target that has not had it yet (claiming it per
        target in the store for ``ttl`` seconds). Returns whether this call sent it anywhere."""
        if notification.kind not in self.kinds:
            return False
        sent = False
        for target, send in self._targets():
            marker = f"{notification.name}@{target}"
            try:
                if not self.store.claim_notification(marker, ttl, now=self.clock()):
                    continue
            except KeyguardError as exc:
                logger.warning("notification %s not sent: %s", notification.name, exc)
                continue
            if send(notification):
                sent = True
                continue
            self.failures += 1
            try:
                self.store.release_notification(marker)  # let the next check try again
            except KeyguardError as exc:
                logger.warning("could not release %s: %s", marker, exc)
        if sent and self.events is not None:
            try:
                self.events(notification.event())
            except Exception:
                logger.exception("the notification event sink failed")
        return sent

    def pending(self, now: float | None = None) -> list[tuple[Notification, float]]:
        """The periodic conditions met now by the store's active keys (nothing is sent)."""
        now = self.clock() if now is None else now
        found: list[tuple[Notification, float]] = []
        cursor: str | None = None
        while True:
            page = self.store.list(status=KeyStatus.ACTIVE, now=now, limit=1000, cursor=cursor)
            for record in page.items:
                found.extend(
                    conditions(
                        record,
                        now,
                        expiring_within=self.expiring_within,
                        rotation_after=self.rotation_after,
                    )
                )
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    def check(self, now: float | None = None) -> list[Notification]:
        """Scan the store for keys expiring soon or due for rotation and deliver what has not
        been delivered yet. Returns the notifications this call sent. Blocking (webhooks
        retry): run it from cron or :meth:`start`, not on an event loop."""
        return [n for n, ttl in self.pending(now) if self.deliver(n, ttl)]

    # -- event sink ------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Queue the notification ``event`` calls for; never blocks, never raises."""
        kind = event.kind
        if kind is not EventKind.RATE_LIMITED and kind is not EventKind.KEY_SUSPENDED:
            return
        try:
            found = from_event(event)
            if found is None or found[0].kind not in self.kinds or self._closed:
                return
            name = found[0].name
            with self._lock:
                if name in self._seen:
                    return
                self._seen[name] = None
                if len(self._seen) > 10_000:
                    self._seen.popitem(last=False)
            self._ensure_worker()
            try:
                self._queue.put_nowait(found)
            except queue.Full:
                self.dropped += 1
                with self._lock:
                    self._seen.pop(name, None)
        except Exception:  # a sink never breaks a request
            logger.exception("the notifier could not queue an event")

    def _ensure_worker(self) -> None:
        if self._worker is not None:
            return
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="keyguard-notifier", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            notification, ttl = item
            try:
                self.deliver(notification, ttl)
            except Exception:
                logger.exception("delivering %s failed", notification.name)

    # -- periodic checks in-process --------------------------------------------------------------
    def start(self, interval: float = 3600.0) -> None:
        """Run :meth:`check` now and then every ``interval`` seconds in a daemon thread (one
        per process is enough: markers in the store keep several processes from repeating
        each other)."""
        if isinstance(interval, bool) or not interval > 0:
            raise ConfigurationError("interval must be a positive number of seconds")
        if self._ticker is not None:
            raise ConfigurationError("the periodic check is running already")

        def tick() -> None:
            while not self._stop.is_set():
                try:
                    self.check()
                except Exception:
                    logger.exception("the periodic notification check failed")
                self._stop.wait(interval)

        self._ticker = threading.Thread(target=tick, name="keyguard-notify-check", daemon=True)
        self._ticker.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads (delivering what is queued, for up to ``timeout`` seconds)."""
        self._closed = True
        self._stop.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            self._queue.put(_STOP)
            worker.join(timeout)
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.join(timeout)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _post(hook: Webhook, notification: Notification) -> bool:
    result = hook.send(
        notification.payload(), event_id=notification.id, event_type=notification.type
    )
    return result.delivered


async def _awaited(awaitable: Any) -> None:
    await awaitable
