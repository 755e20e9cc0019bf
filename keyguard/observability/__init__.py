"""Observability: typed events, usage counters, metrics and notifications (see ``model``)."""

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

__all__ = [
    "DENIAL_KINDS",
    "STATUS_CLASSES",
    "Event",
    "EventKind",
    "UsageDay",
    "UsageReport",
    "escape",
    "status_class",
]
