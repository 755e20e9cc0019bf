"""OpenTelemetry (the ``otel`` extra: ``opentelemetry-api`` only; the application brings the
SDK and its exporters): keyguard's decision on the application's trace.

:class:`OpenTelemetrySink` is an event sink. For each request outcome it sets, on the span
current when the event is emitted (the request's server span, when the application traces
with an OpenTelemetry instrumentation):

* ``keyguard.outcome`` — ``authenticated``, ``denied``, ``scope_denied``, ``rate_limited``,
  ``key_refused``;
* ``keyguard.code`` — the error code of a refusal;
* ``keyguard.key_id`` — the key's *id* (public by design; never the key), unless
  ``key_id=False``;
* ``keyguard.route`` — the route template (never the raw path);
* ``keyguard.elapsed`` — keyguard's own time, in seconds.

With ``spans=True`` it also records a child span ``keyguard.verify`` covering keyguard's own
time (start and end derived from the event), carrying the same attributes. Lifecycle,
infrastructure and notification events become span *events* (``keyguard.key_created``,
``keyguard.store_unavailable``…) on the current span. Attach it as a *synchronous* sink: an
event handled on another thread has no current span. Nothing here ever raises into a request.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from keyguard.observability.model import Event, EventKind

try:
    from opentelemetry import trace
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "keyguard.observability.otel needs opentelemetry-api: pip install 'keyguard[otel]'",
        name=exc.name,
    ) from exc

__all__ = ["SPAN_NAME", "OpenTelemetrySink"]

logger = logging.getLogger("keyguard.otel")

SPAN_NAME: Final = "keyguard.verify"
_OUTCOMES: Final = frozenset(
    {
        EventKind.AUTHENTICATED,
        EventKind.DENIED,
        EventKind.SCOPE_DENIED,
        EventKind.RATE_LIMITED,
        EventKind.KEY_REFUSED,
    }
)


class OpenTelemetrySink:
    """Puts keyguard's decisions on OpenTelemetry spans (see the module docstring).

    ``tracer_provider`` is used for ``spans=True`` (default: the global one).
    """

    def __init__(
        self,
        *,
        spans: bool = False,
        key_id: bool = True,
        tracer_provider: Any = None,
    ) -> None:
        self.spans = bool(spans)
        self.key_id = bool(key_id)
        self._tracer = trace.get_tracer("keyguard", tracer_provider=tracer_provider)

    def __repr__(self) -> str:
        return f"OpenTelemetrySink(spans={self.spans}, key_id={self.key_id})"

    def attributes(self, event: Event) -> dict[str, Any]:
        """The ``keyguard.*`` attributes of a request outcome."""
        found: dict[str, Any] = {"keyguard.outcome": event.kind.value}
        if event.code is not None:
            found["keyguard.code"] = event.code
        if self.key_id and event.key_id is not None:
            found["keyguard.key_id"] = event.key_id
        if event.route is not None:
            found["keyguard.route"] = event.route
        if event.elapsed is not None:
            found["keyguard.elapsed"] = float(event.elapsed)
        return found

    def __call__(self, event: Event) -> None:
        try:
            current = trace.get_current_span()
            if event.kind in _OUTCOMES:
                attributes = self.attributes(event)
                if current.is_recording():
                    current.set_attributes(attributes)
                if self.spans:
                    self._span(event, attributes)
            elif current.is_recording():
                details: dict[str, Any] = {}
                if self.key_id and event.key_id is not None:
                    details["keyguard.key_id"] = event.key_id
                for name, value in event.detail.items():
                    details[f"keyguard.{name}"] = value
                current.add_event(f"keyguard.{event.kind.value}", details)
        except Exception:  # tracing must never break a request
            logger.exception("recording an event on a span failed")

    def _span(self, event: Event, attributes: dict[str, Any]) -> None:
        end = int(event.at * 1e9)
        start = end - int((event.elapsed or 0.0) * 1e9)
        span = self._tracer.start_span(SPAN_NAME, start_time=start, attributes=attributes)
        span.end(end_time=end)
