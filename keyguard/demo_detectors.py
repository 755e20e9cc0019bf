"""The demo's anomaly detectors: all six with their defaults, fed by the demo's events.

Each ``ANOMALY`` event goes back on the demo's event bus: it is logged as a warning on
``keyguard.events`` (the console shows it) and counted on ``/metrics`` when Prometheus is
installed. Nothing is suspended — the demo's keys are there to be tried, wrong secrets
included — and counting is in process (the demo is one process). Kept apart from
:mod:`keyguard.demo` so that module keeps to routes and serving.
"""

from __future__ import annotations

from keyguard.abuse.detectors import Detectors
from keyguard.core.verifier import Verifier
from keyguard.observability.model import EventKind
from keyguard.observability.observer import Observer
from keyguard.observability.sinks import LoggingSink

__all__ = ["attach_detectors"]


def attach_detectors(verifier: Verifier) -> Detectors | None:
    """Attach the detectors to ``verifier``'s events (``None`` when it has no observer). The
    bus closes them when it closes (the demo's lifespan closes it at shutdown)."""
    observer = verifier.observer
    if not isinstance(observer, Observer):
        return None
    # The bus already runs each sink on a thread of its own: no second queue is needed.
    detectors = Detectors(background=False)
    observer.subscribe(detectors)
    observer.subscribe(LoggingSink(kinds=[EventKind.ANOMALY]))
    assert observer.events is not None  # subscribe() made the bus if there was none
    detectors.emit = observer.events.emit
    return detectors
