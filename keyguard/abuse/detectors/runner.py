"""The detectors as one event sink: routing, once per condition, the ``ANOMALY`` event, suspension.

:class:`Detectors` is what an application attaches to its event emitter (a sink is a callable
taking one :class:`~keyguard.observability.model.Event`). For each event it asks the detectors
that read that kind; for each :class:`~keyguard.abuse.detectors.base.Alarm` it

1. claims the condition — the detector's name and the alarm's subject (a key id, a key id and
   a network, an address) — for the detector's ``cooldown``: a counter in the detector's
   counters, so that of several processes sharing them exactly one fires, and a process-local
   note (bounded, ``max_latches``) so that a condition already claimed costs no counter call;
2. emits one ``ANOMALY`` event through ``emit`` (detail: ``detector``, ``key_id``, ``owner``,
   ``threshold``, ``observed``, ``message``, ``suspend`` and the detector's own facts);
   without ``emit``, it is logged as a warning on ``keyguard.abuse.detectors``;
3. when the detector has ``suspend=True``, queues the key's suspension on the
   :class:`~keyguard.abuse.detectors.suspender.Suspender` (actor ``keyguard:detector:<name>``),
   which carries it out on its own thread: a request never waits for it.

**Off the request path.** With ``background=True`` (the default) the sink only puts the event
on a queue (a C-level ``SimpleQueue``: no Python lock on the request path; at most
``max_pending`` events wait, beyond that they are dropped and counted in :attr:`stats`) and one
worker thread, started with the first event, does the rest — counter calls to a shared
backend are network or disk I/O. ``background=False`` runs the detectors in the caller's
thread under a lock (replays, tests, or in-process counters when a few microseconds per event
are acceptable). :meth:`flush` waits for the queue (tests, shutdown); :meth:`close` stops the
threads. A detector that fails (a backend
that cannot be reached) is logged at most once a minute and counted; it never raises into
the emitter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from queue import SimpleQueue
from types import MappingProxyType
from typing import Final, Protocol

from cachetools import LRUCache

from keyguard.abuse.detectors.base import Alarm, Detector, counter_part, number_text
from keyguard.abuse.detectors.suspender import Suspender, SuspendsKeys
from keyguard.core.detector_counters import DetectorCounters, MemoryDetectorCounters, Window
from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit.stats import Counters
from keyguard.observability.model import Event, EventKind

__all__ = ["ACTOR_PREFIX", "DEFAULT_DETECTOR_COUNTERS", "Detectors"]

logger = logging.getLogger("keyguard.abuse.detectors")

#: The actor of a detector's suspension (and of its ANOMALY event): this, then its name.
ACTOR_PREFIX: Final = "keyguard:detector:"
#: In-process counters each detector keeps at most (when no shared backend is given).
DEFAULT_DETECTOR_COUNTERS: Final = 20_000
#: What :attr:`Detectors.stats` counts.
STATS: Final = ("events", "anomalies", "suppressed", "dropped", "errors", "emit_errors")
_MAX_REASON: Final = 500
_LOG_EVERY: Final = 60.0


class _Closeable(Protocol):
    def close(self) -> object: ...


class Detectors:
    """Anomaly detectors behind one sink (see the module docstring).

    ``detectors``: the detectors to run (default: every detector with its defaults, see
    :func:`~keyguard.abuse.detectors.default_detectors`). ``counters``: a shared
    :class:`~keyguard.core.detector_counters.DetectorCounters` backend for all of them, so
    several processes count together; without one, each detector counts in process, in its
    own bounded :class:`~keyguard.core.detector_counters.MemoryDetectorCounters`
    (``max_counters`` each, 20,000 by default). ``max_latches`` bounds the conditions this
    process remembers having claimed (20,000). ``manager``: a
    :class:`~keyguard.management.KeyManager`, needed when a detector has ``suspend=True``.
    ``closing``: objects to close with the detectors (a counters backend or a manager built
    for them).
    """

    def __init__(
        self,
        emit: Callable[[Event], object] | None = None,
        *,
        detectors: Iterable[Detector] | None = None,
        counters: DetectorCounters | None = None,
        manager: SuspendsKeys | None = None,
        background: bool = True,
        max_pending: int = 10_000,
        max_counters: int = DEFAULT_DETECTOR_COUNTERS,
        max_latches: int = 20_000,
        closing: Iterable[_Closeable] = (),
    ) -> None:
        if detectors is None:
            from keyguard.abuse.detectors.catalog import default_detectors

            detectors = default_detectors()
        self.detectors: tuple[Detector, ...] = tuple(detectors)
        names = [d.name for d in self.detectors]
        if len(set(names)) != len(names):
            raise ConfigurationError(
                "two detectors share a name; give the second one another (subclass and set "
                "name) so their counters and events stay apart"
            )
        if any(d.suspend for d in self.detectors) and manager is None:
            raise ConfigurationError(
                "a detector is set to suspend keys: pass manager=KeyManager(...) to Detectors"
            )
        if counters is not None and not isinstance(counters, DetectorCounters):
            raise ConfigurationError("counters must be a DetectorCounters backend")
        for detector in self.detectors:
            if counters is not None:
                detector.bind(counters)
            else:
                detector.bind(MemoryDetectorCounters(max_counters=max_counters))
        self.counters = counters
        self.closing = tuple(closing)
        self.emit = emit
        self.suspender = Suspender(manager) if manager is not None else None
        self.background = bool(background)
        self.max_pending = max_pending
        self.stats = Counters(STATS)
        routes: dict[EventKind, list[Detector]] = {}
        for detector in self.detectors:
            for kind in detector.kinds:
                routes.setdefault(kind, []).append(detector)
        self._routes = {kind: tuple(ds) for kind, ds in routes.items()}
        #: The event kinds some detector reads: an event bus that honours a sink's ``kinds``
        #: (keyguard's does) builds and delivers no others to this sink.
        self.kinds: frozenset[EventKind] = frozenset(self._routes)
        self._latches: LRUCache[tuple[str, str], float] = LRUCache(maxsize=max_latches)
        self._lock = threading.RLock()
        # The background queue: C-level SimpleQueue, so the request path takes no Python lock.
        # Besides events it carries flush markers (threading.Event) and the stop sign (None).
        self._queue: SimpleQueue[Event | threading.Event | None] = SimpleQueue()
        self._starting = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_log = -_LOG_EVERY

    # -- the sink -------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Take one event (the emitter's sink interface). Never raises, never waits."""
        if event.kind not in self._routes:
            return
        if not self.background:
            self.process(event)
            return
        queue = self._queue
        if self._closed or queue.qsize() >= self.max_pending:
            self.stats.incr("dropped")
            return
        queue.put(event)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="keyguard-detectors", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        queue = self._queue
        while True:
            item = queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()  # a flush() waiting for everything queued before it
                continue
            try:
                self.process(item)
            except Exception:  # a bug must not stop the worker: the queue would only fill
                self.stats.incr("errors")
                logger.exception("the anomaly detectors failed on an event")

    def process(self, event: Event) -> list[Event]:
        """Run the detectors on ``event`` now, in this thread; returns the ANOMALY events it
        caused (already emitted)."""
        detectors = self._routes.get(event.kind)
        if not detectors:
            return []
        fired: list[Event] = []
        with self._lock:
            self.stats.incr("events")
            for detector in detectors:
                try:
                    alarm = detector.observe(event)
                    if alarm is None or not self._claim(detector, alarm, event.at):
                        continue
                except Exception as exc:
                    self._failed(detector, exc)
                    continue
                fired.append(self._fire(detector, alarm, event))
        return fired

    # -- once per condition ---------------------------------------------------------------------
    def _claim(self, detector: Detector, alarm: Alarm, at: float) -> bool:
        """Whether this alarm is the first of its condition within the cooldown (across every
        process sharing the counters)."""
        note = (detector.name, alarm.subject)
        until = self._latches.get(note)
        if until is not None and until > at:
            self.stats.incr("suppressed")
            return False
        cooldown = detector.cooldown
        window = Window(cooldown)
        name = detector.counter("latch", counter_part(alarm.subject))
        if detector.counters.count(name, window, at) > 0 or (
            detector.counters.add(name, window, at) != 1
        ):
            # Claimed by another process (or earlier here): look again in an eighth of the
            # cooldown, the resolution at which the claim ages out.
            self._latches[note] = at + cooldown / 8
            self.stats.incr("suppressed")
            return False
        self._latches[note] = at + cooldown * 7 / 8
        return True

    # -- firing ---------------------------------------------------------------------------------
    def _fire(self, detector: Detector, alarm: Alarm, source: Event) -> Event:
        actor = ACTOR_PREFIX + detector.name
        suspending = detector.suspend and alarm.key_id is not None and self.suspender is not None
        detail: dict[str, str] = {"detector": detector.name}
        if alarm.key_id is not None:
            detail["key_id"] = alarm.key_id
        if alarm.owner is not None:
            detail["owner"] = alarm.owner
        detail["threshold"] = number_text(alarm.threshold)
        detail["observed"] = number_text(alarm.observed)
        detail.update(alarm.detail)
        detail["message"] = alarm.message
        detail["suspend"] = "requested" if suspending else "off"
        anomaly = Event(
            kind=EventKind.ANOMALY,
            at=source.at,
            key_id=alarm.key_id,
            owner=alarm.owner,
            route=source.route,
            method=source.method,
            client=alarm.client,
            reason=alarm.reason,
            actor=actor,
            detail=MappingProxyType(detail),
        )
        self.stats.incr("anomalies")
        if self.emit is None:
            logger.warning("anomaly: %s", anomaly.fields())
        else:
            try:
                self.emit(anomaly)
            except Exception:
                self.stats.incr("emit_errors")
                logger.exception("emitting an anomaly event failed")
        if suspending:
            assert self.suspender is not None
            assert alarm.key_id is not None
            reason = f"anomaly detector {detector.name}: {alarm.message}"[:_MAX_REASON]
            self.suspender.request(alarm.key_id, reason=reason, actor=actor)
        return anomaly

    def _failed(self, detector: Detector, exc: Exception) -> None:
        self.stats.incr("errors")
        now = time.monotonic()
        if now - self._last_log < _LOG_EVERY:
            return
        self._last_log = now
        if isinstance(exc, StoreUnavailable):
            logger.warning(
                "anomaly detector %s skipped an event: %s (logged at most once a minute)",
                detector.name,
                exc,
            )
        else:
            logger.error(
                "anomaly detector %s failed (logged at most once a minute)",
                detector.name,
                exc_info=exc,
            )

    # -- lifecycle ------------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event queued so far was processed and every requested suspension
        carried out; ``False`` if that took longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if self._thread is not None and self._thread.is_alive():
            marker = threading.Event()
            self._queue.put(marker)
            if not marker.wait(timeout):
                return False
        if self.suspender is not None:
            return self.suspender.flush(max(0.0, deadline - time.monotonic()))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Process what is queued (within ``timeout``), then stop the worker threads. Events
        that arrive afterwards are dropped. What was given as ``closing`` (a shared counters
        backend, a key manager built for the detectors) is closed last; nothing else given is."""
        self.flush(timeout)
        with self._starting:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
        if self.suspender is not None:
            self.suspender.close(timeout)
        closing, self.closing = self.closing, ()
        for resource in closing:
            try:
                resource.close()
            except Exception:
                logger.exception("closing %r failed", resource)

    def __enter__(self) -> Detectors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def state_size(self) -> dict[str, int]:
        """Entries held in this process per detector (its own state plus its in-process
        counters), and the claims noted (``"latches"``): what the memory bounds bound."""
        sizes: dict[str, int] = {}
        for detector in self.detectors:
            held = detector.state_size()
            if isinstance(detector.counters, MemoryDetectorCounters):
                held += len(detector.counters)
            sizes[detector.name] = held
        sizes["latches"] = len(self._latches)
        return sizes

    def __repr__(self) -> str:
        names = ", ".join(d.name for d in self.detectors)
        mode = "background" if self.background else "inline"
        return f"Detectors([{names}], {mode}, {self.stats.snapshot()})"
