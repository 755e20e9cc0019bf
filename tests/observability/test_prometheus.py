"""Prometheus metrics: the exposition parsed with prometheus_client's own parser, counts by
outcome and code, keyguard's own time, bounded routes, no key material in any label, the cache
and active-keys values read at scrape time, and the ASGI/WSGI endpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.verifier import Verifier
from keyguard.observability.model import Event, EventKind
from keyguard.observability.prometheus import PrometheusMetrics
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory

NOW = 1_900_000_000.0


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def request(
    kind: EventKind, code: str | None = None, route: str | None = "/agents", **kw: Any
) -> Event:
    kw.setdefault("method", "GET")
    kw.setdefault("elapsed", 0.00002)
    return Event(kind, NOW, code=code, route=route, **kw)


def test_requests_are_counted_by_outcome_code_route_and_method() -> None:
    m = PrometheusMetrics()
    for _ in range(3):
        m(request(EventKind.AUTHENTICATED, key_id="aaaaaaaaaaaa", status=None))
    m(request(EventKind.DENIED, "missing_api_key", status=401))
    m(
        request(
            EventKind.SCOPE_DENIED, "insufficient_scope", route="/agents/{agent_id}", method="post"
        )
    )
    m(request(EventKind.RATE_LIMITED, "rate_limited", detail={"window": "day", "limit": "5"}))
    m(request(EventKind.KEY_REFUSED, "revoked_api_key", route=None, method="BREW"))
    m(request(EventKind.DENIED, "made_up_code"))
    name = "keyguard_requests_total"
    assert value(m, name, outcome="authenticated", code="none", route="/agents", method="GET") == 3
    assert (
        value(m, name, outcome="denied", code="missing_api_key", route="/agents", method="GET") == 1
    )
    assert (
        value(
            m,
            name,
            outcome="scope_denied",
            code="insufficient_scope",
            route="/agents/{agent_id}",
            method="POST",
        )
        == 1
    )
    assert (
        value(
            m, name, outcome="key_refused", code="revoked_api_key", route="(none)", method="OTHER"
        )
        == 1
    )
    assert value(m, name, outcome="denied", code="other", route="/agents", method="GET") == 1
    # keyguard's own time, per outcome
    assert value(m, "keyguard_request_duration_seconds_count", outcome="authenticated") == 3
    assert value(
        m, "keyguard_request_duration_seconds_sum", outcome="authenticated"
    ) == pytest.approx(6e-5)
    assert (
        value(m, "keyguard_request_duration_seconds_bucket", outcome="authenticated", le="2.5e-05")
        == 3
    )
    assert (
        value(m, "keyguard_request_duration_seconds_bucket", outcome="authenticated", le="1e-05")
        == 0
    )


def test_infrastructure_lifecycle_anomaly_and_notification_events() -> None:
    m = PrometheusMetrics()
    m(Event(EventKind.STORE_UNAVAILABLE, NOW))
    m(Event(EventKind.STORE_UNAVAILABLE, NOW))
    m(Event(EventKind.LIMITER_FALLBACK, NOW, detail={"mode": "allow"}))
    m(Event(EventKind.KEY_CREATED, NOW, key_id="aaaaaaaaaaaa", actor="cli"))
    m(Event(EventKind.KEY_ROTATED, NOW, key_id="aaaaaaaaaaaa"))
    m(Event(EventKind.ANOMALY, NOW, detail={"detector": "burst"}))
    m(Event(EventKind.NOTIFICATION, NOW, detail={"notification": "expiring"}))
    assert value(m, "keyguard_store_errors_total") == 2
    assert value(m, "keyguard_limiter_fallbacks_total") == 1
    assert value(m, "keyguard_key_events_total", kind="created") == 1
    assert value(m, "keyguard_key_events_total", kind="rotated") == 1
    assert value(m, "keyguard_anomalies_total", detector="burst") == 1
    assert value(m, "keyguard_notifications_total", notification="expiring") == 1


def test_routes_are_bounded_and_never_carry_keys() -> None:
    m = PrometheusMetrics(max_routes=3)
    key = "kg_3F9aQ2xLm7Pw_" + "A1b2C3d4" * 5
    for i in range(10):
        m(request(EventKind.AUTHENTICATED, route=f"/r{i}"))
    m(request(EventKind.DENIED, "invalid_api_key", route=f"/x/{key}"))
    routes = {
        dict(labels).get("route")
        for (name, labels) in samples(m)
        if name == "keyguard_requests_total"
    }
    assert routes == {"/r0", "/r1", "/r2", "(other)"}
    m2 = PrometheusMetrics()
    m2(request(EventKind.DENIED, "invalid_api_key", route=f"/x/{key}"))
    assert (
        "keyguard_requests_total",
        (
            ("code", "invalid_api_key"),
            ("method", "GET"),
            ("outcome", "denied"),
            ("route", "(redacted)"),
        ),
    ) in samples(m2)


def test_a_broken_event_does_not_raise() -> None:
    m = PrometheusMetrics()
    m(object())  # type: ignore[arg-type]
    m(request(EventKind.AUTHENTICATED, elapsed=None))
    assert value(m, "keyguard_request_duration_seconds_count", outcome="authenticated") == 0


def test_cache_and_active_keys_are_read_at_scrape_time() -> None:
    store = MemoryStore()
    keys = KeyFactory(store)
    live = keys.issue("agents:read")
    keys.issue("agents:read")
    keys.issue(revoked_at=time.time() - 1)
    verifier = Verifier(store, policy=RoutePolicy({"GET /agents": "agents:read"}), rate_limits=None)
    calls = []
    real_list = store.list

    def counting_list(**kw: Any) -> Any:
        calls.append(kw)
        return real_list(**kw)

    store.list = counting_list  # type: ignore[method-assign]
    clock = [0.0]
    m = PrometheusMetrics(verifier=verifier, active_keys_ttl=60, clock=lambda: clock[0])
    for _ in range(5):
        assert verifier.verify(live.header, "GET", "/agents", peer="10.0.0.1").allowed
    unknown = "UserKey " + KeyFormat().generate().plaintext
    assert not verifier.verify(unknown, "GET", "/agents", peer="10.0.0.1").allowed
    got = samples(m)
    assert got[("keyguard_cache_requests_total", (("result", "miss"),))] == 2  # first use, unknown
    assert got[("keyguard_cache_requests_total", (("result", "index_hit"),))] == 4  # fast path
    assert got[("keyguard_cache_hit_ratio", ())] == pytest.approx(4 / 6)
    assert got[("keyguard_cache_entries", (("cache", "records"),))] == 1
    assert got[("keyguard_active_keys", ())] == 2
    samples(m)
    assert len(calls) == 1  # cached for the ttl
    keys.issue()
    clock[0] = 61
    assert value(m, "keyguard_active_keys") == 3
    assert len(calls) == 2


def test_an_unreadable_store_keeps_the_last_count() -> None:
    from keyguard.core.errors import StoreUnavailable

    store = MemoryStore()
    KeyFactory(store).issue()
    clock = [0.0]
    m = PrometheusMetrics(store=store, clock=lambda: clock[0])
    assert value(m, "keyguard_active_keys") == 1

    def broken(**kw: Any) -> Any:
        raise StoreUnavailable("down")

    store.list = broken  # type: ignore[method-assign]
    clock[0] = 100
    assert value(m, "keyguard_active_keys") == 1
    m2 = PrometheusMetrics(store=store)
    assert ("keyguard_active_keys", ()) not in samples(m2)


def test_dropped_events_and_an_existing_registry() -> None:
    registry = CollectorRegistry()
    Counter("app_things", "the application's own", registry=registry).inc()
    m = PrometheusMetrics(registry, dropped=lambda: 7)
    m(request(EventKind.AUTHENTICATED))
    got = samples(m)
    assert got[("app_things_total", ())] == 1
    assert got[("keyguard_events_dropped_total", ())] == 7


def test_the_asgi_and_wsgi_endpoints() -> None:
    m = PrometheusMetrics()
    m(request(EventKind.AUTHENTICATED))

    async def fetch() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=m.asgi_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (
                await client.get("/metrics"),
                await client.post("/metrics"),
                await client.get("/metrics", headers={"Accept": "application/openmetrics-text"}),
            )

    ok, refused, openmetrics = asyncio.run(fetch())
    assert ok.status_code == 200
    assert "keyguard_requests_total" in ok.text
    assert ok.headers["cache-control"] == "no-store"
    assert refused.status_code == 405
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")

    seen: list[str] = []
    body = b"".join(m.wsgi_app()({"REQUEST_METHOD": "GET"}, lambda s, h: seen.append(s)))
    assert seen == ["200 OK"]
    assert b"keyguard_requests_total" in body
    m.wsgi_app()({"REQUEST_METHOD": "DELETE"}, lambda s, h: seen.append(s))
    assert seen[-1].startswith("405")
