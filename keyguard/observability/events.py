"""The event bus: :class:`Emitter` takes events on the request path and delivers them to sinks
off it.

**Cost on the request path.** :meth:`Emitter.emit` (and the observer's :meth:`Emitter.defer`,
which postpones even building the :class:`~keyguard.observability.model.Event`) appends to a
bounded in-memory buffer and returns: no lock, no I/O, no wake-up call. A full buffer drops
the event and counts it (:attr:`Emitter.dropped`). Nothing a sink does can reach a request.

**Delivery.** One dispatch thread per emitter drains the buffer every ``interval`` seconds
(default 0.05), builds deferred events, and hands each to every sink that wants it through the
sink's own bounded queue, served by the sink's own thread. So a sink that raises only counts
errors (:attr:`SinkStats.errors`, one log line per ``error_log_interval``), and a sink that
blocks only fills its own queue — its events beyond ``sink_capacity`` are dropped and counted,
the other sinks carry on, and requests never wait.

**Inline sinks.** ``subscribe(sink, inline=True)`` runs a sink where the event is emitted,
in the request's own context: for an OpenTelemetry sink that sets attributes on the request's
span. It costs the request its time (and per-request events are then built on the request
path); its exceptions are caught and counted.

**Shutdown.** :meth:`Emitter.close` (or leaving ``with Emitter(...)``) stops taking events,
delivers what is pending (waiting at most ``timeout`` seconds for slow sinks, whose leftover
events count as dropped) and stops the threads. :meth:`Emitter.flush` delivers what is pending
without closing; an emitter still open at interpreter exit is closed then (2 s at most). After
``fork()`` the child starts with an empty buffer and fresh threads.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from keyguard.core.errors import ConfigurationError
from keyguard.observability.model import Event, EventKind

__all__ = ["Emitter", "EmitterStats", "Sink", "SinkStats"]

logger = logging.getLogger("keyguard.observability")

_ALL_KINDS: Final = frozenset(EventKind)
_STOP: Final = object()


@runtime_checkable
class Sink(Protocol):
    """Anything that takes an event: a callable. Optional attributes refine it:

    - ``kinds`` — a set of :class:`EventKind` it wants (absent or ``None``: every kind);
    - ``accepts(kind) -> bool`` — asked on the dispatch thread before an event is built for
      it (a logging sink says no to kinds its logger would discard);
    - ``close()`` — called once when the emitter closes.
    """

    def __call__(self, event: Event) -> object: ...


@dataclass(frozen=True, slots=True)
class SinkStats:
    """One sink's delivery counts."""

    name: str
    delivered: int
    dropped: int
    errors: int


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """What an emitter did: events taken (``emitted``), dropped because its buffer was full
    (``dropped``), and per sink."""

    emitted: int
    dropped: int
    sinks: tuple[SinkStats, ...]

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.sinks)


class _Runner:
    """One sink, its bounded queue and its thread."""

    def __init__(
        self, sink: Callable[[Event], object], capacity: int, error_log_interval: float
    ) -> None:
        self.sink = sink
        self.name = _name(sink)
        kinds = getattr(sink, "kinds", None)
        self.kinds: frozenset[EventKind] = _ALL_KINDS if kinds is None else frozenset(kinds)
        accepts = getattr(sink, "accepts", None)
        self.accepts: Callable[[EventKind], bool] | None = accepts if callable(accepts) else None
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self.delivered = 0
        self.dropped = 0
        self.errors = 0
        self._error_log_interval = error_log_interval
        self._last_error_log = -float("inf")
        self._unlogged = 0
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._serve, name=f"keyguard-sink-{self.name}", daemon=True
        )
        self.thread.start()

    def wants(self, kind: EventKind) -> bool:
        if kind not in self.kinds:
            return False
        accepts = self.accepts
        if accepts is None:
            return True
        try:
            return bool(accepts(kind))
        except Exception:
            return True

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _serve(self) -> None:
        get = self.queue.get
        while True:
            event = get()
            try:
                if event is _STOP:
                    return
                try:
                    self.sink(event)
                except Exception as exc:
                    self._failed(exc)
                else:
                    self.delivered += 1
            finally:
                self.queue.task_done()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_error_log < self._error_log_interval:
            self._unlogged += 1
            return
        self._last_error_log = now
        more = f" (and {self._unlogged} more since the last report)" if self._unlogged else ""
        self._unlogged = 0
        # The exception type only: a sink's message could quote anything.
        logger.warning("event sink %s failed: %s%s", self.name, type(exc).__name__, more)

    def stats(self) -> SinkStats:
        return SinkStats(self.name, self.delivered, self.dropped, self.errors)


class _Inline:
    """A sink called where the event is emitted (on the request's thread, in its context)."""

    def __init__(self, sink: Callable[[Event], object], error_log_interval: float) -> None:
        self.sink = sink
        self.name = _name(sink)
        kinds = getattr(sink, "kinds", None)
        self.kinds: frozenset[EventKind] = _ALL_KINDS if kinds is None else frozenset(kinds)
        self.delivered = 0
        self.errors = 0
        self._error_log_interval = error_log_interval
        self._last_error_log = -float("inf")

    def deliver(self, event: Event) -> None:
        if event.kind not in self.kinds:
            return
        try:
            self.sink(event)
        except Exception as exc:
            self.errors += 1
            now = time.monotonic()
            if now - self._last_error_log >= self._error_log_interval:
                self._last_error_log = now
                logger.warning("event sink %s failed: %s", self.name, type(exc).__name__)
        else:
            self.delivered += 1

    def stats(self) -> SinkStats:
        return SinkStats(self.name, self.delivered, 0, self.errors)


class Emitter:
    """Delivers events to sinks, off the request path (see the module docstring).

    ``sinks``: callables or :mod:`~keyguard.observability.sinks` objects. ``capacity`` bounds
    the buffer of events not yet dispatched, ``sink_capacity`` each sink's queue; ``interval``
    is how often the dispatch thread drains the buffer (the longest an event waits before
    delivery starts).
    """

    def __init__(
        self,
        sinks: Iterable[Callable[[Event], object]] = (),
        *,
        capacity: int = 10_000,
        sink_capacity: int = 10_000,
        interval: float = 0.05,
        error_log_interval: float = 60.0,
    ) -> None:
        for what, value in (("capacity", capacity), ("sink_capacity", sink_capacity)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{what} must be an integer >= 1")
        if not 0 < interval <= 60:
            raise ConfigurationError("interval must be between 0 and 60 seconds")
        self.capacity = capacity
        self.sink_capacity = sink_capacity
        self.interval = float(interval)
        self.error_log_interval = float(error_log_interval)
        self._buffer: deque[Any] = deque()
        self._emitted = 0
        self._dropped = 0
        self._runners: tuple[_Runner, ...] = ()
        self._inline: tuple[_Inline, ...] = ()
        #: The kinds some sink wants: emitters of per-request events check it first.
        self.interested: frozenset[EventKind] = frozenset()
        #: The kinds some inline sink wants (see :meth:`subscribe`).
        self.inline_interested: frozenset[EventKind] = frozenset()
        self._threaded: frozenset[EventKind] = frozenset()
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._dispatcher: threading.Thread | None = None
        self._pid = os.getpid()
        for sink in sinks:
            self.subscribe(sink)
        self._start()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        atexit.register(_at_exit, ref)

    # -- subscription --------------------------------------------------------------------------
    def subscribe(
        self, sink: Callable[[Event], object], *, inline: bool = False
    ) -> Callable[[Event], object]:
        """Deliver events to ``sink`` from now on (its own queue and thread); returns it.

        ``inline=True`` calls it instead where each event is emitted — on the request's own
        thread and in its context (what an OpenTelemetry sink needs to find the request's
        span) — so it must be quick and must not block: it is the one kind of sink that
        costs the request its time. Its exceptions are caught and counted. With an inline
        sink, per-request events are built on the request path too."""
        if not callable(sink):
            raise ConfigurationError("a sink must be callable with an Event")
        with self._lock:
            if self._closed:
                raise ConfigurationError("this emitter is closed")
            if inline:
                self._inline = (*self._inline, _Inline(sink, self.error_log_interval))
            else:
                runner = _Runner(sink, self.sink_capacity, self.error_log_interval)
                runner.start()
                self._runners = (*self._runners, runner)
            self._recompute()
        return sink

    def unsubscribe(self, sink: Callable[[Event], object]) -> None:
        """Stop delivering to ``sink`` (events already queued for it are still delivered)."""
        with self._lock:
            gone = [r for r in self._runners if r.sink is sink]
            self._runners = tuple(r for r in self._runners if r.sink is not sink)
            self._inline = tuple(i for i in self._inline if i.sink is not sink)
            self._recompute()
        for runner in gone:
            runner.queue.put(_STOP)

    def _recompute(self) -> None:
        threaded: set[EventKind] = set()
        for runner in self._runners:
            threaded |= runner.kinds
        inline: set[EventKind] = set()
        for sink in self._inline:
            inline |= sink.kinds
        self._threaded = frozenset(threaded)
        self.inline_interested = frozenset(inline)
        self.interested = frozenset(threaded | inline)
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` whenever the sinks change (observers cache what they need)."""
        self._listeners.append(listener)

    @property
    def sinks(self) -> tuple[Callable[[Event], object], ...]:
        return tuple(r.sink for r in self._runners) + tuple(i.sink for i in self._inline)

    # -- the request path ----------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        """Queue ``event`` for every sink that wants it (and call the inline ones now). Never
        blocks (unless an inline sink does), never raises."""
        kind = event.kind
        if kind not in self.interested or self._closed:
            return
        if kind in self.inline_interested:
            for sink in self._inline:
                sink.deliver(event)
            if kind not in self._threaded:
                return
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            self._dropped += 1
            return
        self._emitted += 1
        buffer.append(event)

    def defer(self, build: Callable[..., Event | None], *args: Any) -> None:
        """Queue ``build(*args)``, called on the dispatch thread to make the event (or
        ``None``: nothing to deliver). For per-request events: the request pays only for
        this call. ``build`` must be cheap and must not keep its arguments."""
        if self._closed:
            return
        if self._inline:
            try:
                event = build(*args)
            except Exception as exc:
                logger.warning("building an event failed: %s", type(exc).__name__)
                return
            if event is not None:
                self.emit(event)
            return
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            self._dropped += 1
            return
        self._emitted += 1
        buffer.append((build, args))

    # -- dispatch ------------------------------------------------------------------------------
    def _start(self) -> None:
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="keyguard-events", daemon=True
        )
        self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
            if self._closed:
                self._drain()
                return

    def _drain(self) -> None:
        # One drainer at a time, so that flush() returns only after every event taken
        # before it is in its sinks' queues.
        with self._drain_lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        buffer = self._buffer
        popleft = buffer.popleft
        runners = self._runners
        while buffer:
            try:
                item = popleft()
            except IndexError:
                return
            if isinstance(item, Event):
                event: Event | None = item
            else:
                build, args = item
                try:
                    event = build(*args)
                except Exception as exc:
                    logger.warning("building an event failed: %s", type(exc).__name__)
                    continue
            if event is None:
                continue
            kind = event.kind
            for runner in runners:
                if runner.wants(kind):
                    runner.offer(event)

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver every event queued so far; ``False`` if some sink did not finish within
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._drain()
            runners = self._runners
        return all(_join_queue(runner.queue, deadline) for runner in runners)

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking events, deliver the pending ones (at most ``timeout`` seconds for slow
        sinks; what they leave counts as dropped) and stop every thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        self._wake.set()
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher.is_alive():
            dispatcher.join(max(0.0, deadline - time.monotonic()))
        self._drain()
        for runner in self._runners:
            if not _join_queue(runner.queue, deadline):
                runner.dropped += runner.queue.qsize()
                logger.warning("event sink %s did not finish within %.1fs", runner.name, timeout)
                continue
            runner.queue.put(_STOP)
            if runner.thread is not None:
                runner.thread.join(max(0.0, deadline - time.monotonic()))
            _close_sink(runner.sink, runner.name)
        for sink in self._inline:
            _close_sink(sink.sink, sink.name)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- counters ------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Events dropped: the buffer was full, or a sink's queue was."""
        return self._dropped + sum(r.dropped for r in self._runners)

    @property
    def errors(self) -> int:
        """Sink calls that raised."""
        return sum(r.errors for r in self._runners) + sum(i.errors for i in self._inline)

    @property
    def stats(self) -> EmitterStats:
        sinks = tuple(r.stats() for r in self._runners) + tuple(i.stats() for i in self._inline)
        return EmitterStats(self._emitted, self._dropped, sinks)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Emitter(sinks={len(self._runners)}, {state}, dropped={self.dropped})"

    def _after_fork(self) -> None:
        # A child inherits the buffer and counters but none of the threads.
        self._buffer = deque()
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = os.getpid()
        runners = []
        for old in self._runners:
            runner = _Runner(old.sink, self.sink_capacity, self.error_log_interval)
            if not self._closed:
                runner.start()
            runners.append(runner)
        self._runners = tuple(runners)
        if not self._closed:
            self._start()


def _after_fork(ref: weakref.ref[Emitter]) -> None:
    emitter = ref()
    if emitter is not None:
        emitter._after_fork()


def _close_sink(sink: object, name: str) -> None:
    close = getattr(sink, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:
            logger.warning("closing event sink %s failed: %s", name, type(exc).__name__)


def _at_exit(ref: weakref.ref[Emitter]) -> None:
    emitter = ref()
    if emitter is not None and not emitter.closed:
        emitter.close(timeout=2.0)


def _join_queue(q: queue.Queue[Any], deadline: float) -> bool:
    """Wait until every item put on ``q`` was processed, or until ``deadline``."""
    with q.all_tasks_done:
        while q.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            q.all_tasks_done.wait(left)
    return True


def _name(sink: object) -> str:
    name = getattr(sink, "name", None)
    if isinstance(name, str) and name:
        return name
    return getattr(sink, "__qualname__", None) or type(sink).__name__
