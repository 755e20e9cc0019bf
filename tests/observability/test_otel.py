"""OpenTelemetry: keyguard's attributes on the current span, its own span with spans=True, and
span events for other events — read back with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from keyguard.observability.model import Event, EventKind
from keyguard.observability.otel import SPAN_NAME, OpenTelemetrySink

NOW = 1_900_000_000.0


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_attributes_on_the_current_span(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    sink = OpenTelemetrySink()
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("GET /agents/{agent_id}"):
        sink(
            Event(
                EventKind.SCOPE_DENIED,
                NOW,
                code="insufficient_scope",
                key_id="3F9aQ2xLm7Pw",
                route="/agents/{agent_id}",
                elapsed=0.00003,
            )
        )
    with tracer.start_as_current_span("GET /health"):
        sink(Event(EventKind.AUTHENTICATED, NOW, key_id="3F9aQ2xLm7Pw", route=None))
    denied, ok = exporter.get_finished_spans()
    assert dict(denied.attributes or {}) == {
        "keyguard.outcome": "scope_denied",
        "keyguard.code": "insufficient_scope",
        "keyguard.key_id": "3F9aQ2xLm7Pw",
        "keyguard.route": "/agents/{agent_id}",
        "keyguard.elapsed": 0.00003,
    }
    assert dict(ok.attributes or {}) == {
        "keyguard.outcome": "authenticated",
        "keyguard.key_id": "3F9aQ2xLm7Pw",
    }


def test_a_span_of_its_own_and_no_key_id(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    sink = OpenTelemetrySink(spans=True, key_id=False, tracer_provider=provider)
    with provider.get_tracer("app").start_as_current_span("request"):
        sink(
            Event(EventKind.DENIED, NOW, code="invalid_api_key", key_id="3F9aQ2xLm7Pw", elapsed=0.5)
        )
    mine, request = exporter.get_finished_spans()
    assert mine.name == SPAN_NAME
    assert mine.parent is not None
    assert mine.parent.span_id == request.context.span_id
    assert mine.end_time - mine.start_time == 500_000_000
    assert mine.end_time == int(NOW * 1e9)
    assert "keyguard.key_id" not in (mine.attributes or {})
    assert "keyguard.key_id" not in (request.attributes or {})


def test_other_events_become_span_events(
    traced: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = traced
    sink = OpenTelemetrySink()
    with provider.get_tracer("app").start_as_current_span("request"):
        sink(Event(EventKind.LIMITER_FALLBACK, NOW, detail={"mode": "allow"}))
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert event.name == "keyguard.limiter_fallback"
    assert dict(event.attributes or {}) == {"keyguard.mode": "allow"}


def test_without_a_current_span_nothing_happens_and_nothing_raises() -> None:
    sink = OpenTelemetrySink()
    sink(Event(EventKind.AUTHENTICATED, NOW, key_id="3F9aQ2xLm7Pw"))
    sink(object())  # type: ignore[arg-type]
