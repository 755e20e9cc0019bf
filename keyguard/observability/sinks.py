"""Where events go: the standard library's logging, your callbacks, queues, or a list.

Every sink runs on its own thread, fed by an :class:`~keyguard.observability.events.Emitter`
(never on the request path). A sink may declare ``kinds`` (the event kinds it wants) and
``accepts(kind)`` (asked before an event is even built for it).

- :class:`LoggingSink` — one line per event on a :mod:`logging` logger (``keyguard.events``
  by default), at a level per kind, with the event's fields in ``extra={"keyguard": {...}}``
  for structured handlers (python-json-logger, structlog's ``ProcessorFormatter``…). The line
  is ``key=value`` pairs, each value made one-line safe
  (:func:`~keyguard.observability.model.escape`).
- :class:`CallbackSink` — calls a function with each event; ``async def`` functions are run on
  the event loop you give (``loop=``, scheduled with ``run_coroutine_threadsafe``: the sink
  never waits for them) or else on the sink's own private loop.
- :class:`QueueSink` — puts events on a :class:`queue.Queue` (or an :class:`asyncio.Queue`
  with ``loop=``) without waiting; a full queue drops the event and counts it.
- :class:`ListSink` — keeps the last events in memory (tests, debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, Final

from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import DENIAL_KINDS, Event, EventKind, escape

__all__ = ["DEFAULT_LEVELS", "CallbackSink", "ListSink", "LoggingSink", "QueueSink", "log_line"]

#: The level each kind is logged at by default: a request admitted is DEBUG (one per request),
#: refusals and key changes INFO, a key used after its end and infrastructure trouble WARNING.
DEFAULT_LEVELS: Final[Mapping[EventKind, int]] = {
    EventKind.AUTHENTICATED: logging.DEBUG,
    **dict.fromkeys(DENIAL_KINDS, logging.INFO),
    EventKind.KEY_REFUSED: logging.WARNING,
    EventKind.KEY_CREATED: logging.INFO,
    EventKind.KEY_ROTATED: logging.INFO,
    EventKind.KEY_REVOKED: logging.INFO,
    EventKind.KEY_UPDATED: logging.INFO,
    EventKind.KEY_SUSPENDED: logging.INFO,
    EventKind.KEY_RESUMED: logging.INFO,
    EventKind.STORE_UNAVAILABLE: logging.WARNING,
    EventKind.LIMITER_FALLBACK: logging.WARNING,
    EventKind.ANOMALY: logging.WARNING,
    EventKind.NOTIFICATION: logging.INFO,
}

_QUOTED: Final = frozenset(' "=')


def _value(value: object) -> str:
    text = (
        value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    )
    if not text.isprintable():
        text = escape(text)  # a field that did not come through escape() (a user's event)
    if not text or any(c in _QUOTED for c in text):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def log_line(event: Event) -> str:
    """``event`` as one log line: ``keyguard <kind> key=value ...`` (values escaped)."""
    fields = event.fields()
    del fields["kind"], fields["at"]
    elapsed = fields.pop("elapsed", None)
    parts = [f"keyguard {event.kind}"]
    parts += [f"{name}={_value(value)}" for name, value in fields.items()]
    if isinstance(elapsed, float):
        parts.append(f"elapsed_us={elapsed * 1e6:.1f}")
    return " ".join(parts)


class LoggingSink:
    """Events as log records on ``logger`` (a :class:`logging.Logger` or its name).

    ``levels`` overrides :data:`DEFAULT_LEVELS` per kind; ``kinds`` limits what is logged.
    An event whose level the logger would discard is never built (``accepts``). The record's
    message is :func:`log_line`; ``extra={"keyguard": event.fields()}`` carries the fields.
    """

    def __init__(
        self,
        logger: logging.Logger | str = "keyguard.events",
        *,
        levels: Mapping[EventKind, int] | None = None,
        kinds: Iterable[EventKind] | None = None,
        name: str = "logging",
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.levels = {**DEFAULT_LEVELS, **(levels or {})}
        self.kinds = None if kinds is None else frozenset(kinds)
        self.name = name

    def accepts(self, kind: EventKind) -> bool:
        return self.logger.isEnabledFor(self.levels.get(kind, logging.INFO))

    def __call__(self, event: Event) -> None:
        level = self.levels.get(event.kind, logging.INFO)
        if self.logger.isEnabledFor(level):
            self.logger.log(level, "%s", log_line(event), extra={"keyguard": event.fields()})

    def __repr__(self) -> str:
        return f"LoggingSink({self.logger.name!r})"


class CallbackSink:
    """Calls ``callback(event)`` for each event (on the sink's thread).

    An ``async def`` callback runs on ``loop`` when given (your application's loop: the
    coroutine is scheduled there and not waited for, so a slow one never holds the sink up;
    failures are counted in :attr:`failures`), else on a private event loop in the sink's
    thread, one event after the other.
    """

    def __init__(
        self,
        callback: Callable[[Event], object],
        *,
        kinds: Iterable[EventKind] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(callback):
            raise ConfigurationError("callback must be callable")
        self.callback = callback
        self.kinds = None if kinds is None else frozenset(kinds)
        self.is_async = inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
            getattr(callback, "__call__", None)  # noqa: B004 - an async __call__
        )
        self.loop = loop
        self.name = name or getattr(callback, "__qualname__", type(callback).__name__)
        #: Failures of coroutines scheduled on ``loop`` (they end after the sink moved on).
        self.failures = 0
        self._private: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if not self.is_async:
            self.callback(event)
            return
        coroutine: Awaitable[Any] = self.callback(event)  # type: ignore[assignment]
        if self.loop is not None:
            if self.loop.is_closed():
                with contextlib.suppress(Exception):
                    coroutine.close()  # type: ignore[attr-defined]
                raise RuntimeError("the callback's event loop is closed")
            future: Future[Any] = asyncio.run_coroutine_threadsafe(
                coroutine,  # type: ignore[arg-type]
                self.loop,
            )
            future.add_done_callback(self._done)
            return
        if self._private is None:
            self._private = asyncio.new_event_loop()
        self._private.run_until_complete(coroutine)

    def _done(self, future: Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            with self._lock:
                self.failures += 1

    def close(self) -> None:
        loop, self._private = self._private, None
        if loop is not None:
            loop.close()

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"CallbackSink({self.name}, {kind})"


class QueueSink:
    """Puts each event on ``target`` without waiting: a :class:`queue.Queue` (any object with
    ``put_nowait`` raising :class:`queue.Full`), or an :class:`asyncio.Queue` with ``loop=``
    (its loop). A full queue drops the event: :attr:`dropped` counts them."""

    def __init__(
        self,
        target: Any,
        *,
        kinds: Iterable[EventKind] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        name: str = "queue",
    ) -> None:
        if not callable(getattr(target, "put_nowait", None)):
            raise ConfigurationError("a QueueSink needs a queue (an object with put_nowait)")
        if isinstance(target, asyncio.Queue) and loop is None:
            raise ConfigurationError("an asyncio.Queue needs loop= (the loop that reads it)")
        self.target = target
        self.kinds = None if kinds is None else frozenset(kinds)
        self.loop = loop
        self.name = name
        self.dropped = 0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._put, event)
        else:
            self._put(event)

    def _put(self, event: Event) -> None:
        try:
            self.target.put_nowait(event)
        except (queue.Full, asyncio.QueueFull):
            with self._lock:
                self.dropped += 1

    def __repr__(self) -> str:
        return f"QueueSink({type(self.target).__name__}, dropped={self.dropped})"


class ListSink:
    """Keeps the last ``maxlen`` events (tests, debugging): :attr:`events`."""

    def __init__(self, *, kinds: Iterable[EventKind] | None = None, maxlen: int = 10_000) -> None:
        self.kinds = None if kinds is None else frozenset(kinds)
        self._events: deque[Event] = deque(maxlen=maxlen)
        self.name = "list"

    def __call__(self, event: Event) -> None:
        self._events.append(event)

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    def of(self, kind: EventKind) -> list[Event]:
        return [e for e in self._events if e.kind is kind]

    def clear(self) -> None:
        self._events.clear()

    def __repr__(self) -> str:
        return f"ListSink({len(self._events)} events)"
