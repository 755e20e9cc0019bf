"""Observability: typed events, usage counters, metrics and notifications (see ``model``).

- :mod:`~keyguard.observability.model` — :class:`Event`, :class:`EventKind`, usage reports;
- :mod:`~keyguard.observability.events` — the :class:`Emitter` (sinks fed off the request path);
- :mod:`~keyguard.observability.sinks` — logging, callbacks, queues, a list;
- :mod:`~keyguard.observability.usage` — the :class:`UsageCounter` (batched writes to the store);
- :mod:`~keyguard.observability.observer` — the :class:`Observer` a verifier reports to;
- :mod:`~keyguard.observability.sources` — usage sources for the dashboard and the review.
"""

from keyguard.observability.events import Emitter, EmitterStats, Sink, SinkStats
from keyguard.observability.model import (
    DENIAL_KINDS,
    STATUS_CLASSES,
    Event,
    EventKind,
    UsageDay,
    UsageReport,
    escape,
    status_class,
)
from keyguard.observability.observer import Observer
from keyguard.observability.setup import make_observer
from keyguard.observability.sinks import CallbackSink, ListSink, LoggingSink, QueueSink
from keyguard.observability.sources import StoreScopeUsage, StoreUsage
from keyguard.observability.usage import UsageCounter, UsageStats

__all__ = [
    "DENIAL_KINDS",
    "STATUS_CLASSES",
    "CallbackSink",
    "Emitter",
    "EmitterStats",
    "Event",
    "EventKind",
    "ListSink",
    "LoggingSink",
    "Observer",
    "QueueSink",
    "Sink",
    "SinkStats",
    "StoreScopeUsage",
    "StoreUsage",
    "UsageCounter",
    "UsageDay",
    "UsageReport",
    "UsageStats",
    "escape",
    "make_observer",
    "status_class",
]
