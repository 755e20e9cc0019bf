"""One event per request outcome, through the ASGI and the WSGI middleware (and the plain
``Verifier.verify`` that framework hooks use): the adapters' whole case table, answered exactly
as without an observer, with the event each case must produce; then the outcomes the table
does not cover (rate limits, suspension, networks, store and limiter failures, the brute-force
guard)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.errors import StoreUnavailable
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter, ResilientLimiter
from keyguard.core.records import KeyRecord
from keyguard.observability import Event, EventKind
from keyguard.stores.memory import MemoryStore
from tests.adapters.cases import CASES, Case, Reply, check
from tests.keyfactory import KeyFactory
from tests.observability.support import (
    TRANSPORTS,
    Observed,
    asgi_send,
    observe,
    observed_world,
    wsgi_send,
)

D, S, R, K, A = (
    EventKind.DENIED,
    EventKind.SCOPE_DENIED,
    EventKind.RATE_LIMITED,
    EventKind.KEY_REFUSED,
    EventKind.AUTHENTICATED,
)
#: case id -> (kind, code, reason, world key the event names); None: no event at all.
EXPECTED: dict[str, tuple[EventKind, str | None, str | None, str | None] | None] = {
    "no-header": (D, "missing_api_key", None, None),
    "bearer": (D, "missing_api_key", None, None),
    "basic": (D, "missing_api_key", None, None),
    "lowercase-scheme": (A, None, None, "reader"),
    "empty-key": (D, "missing_api_key", None, None),
    "over-long": (D, "invalid_request", None, None),
    "control-character": (D, "invalid_request", None, None),
    "bad-checksum": (D, "invalid_api_key_format", None, None),
    "truncated": (D, "invalid_api_key_format", None, None),
    "unknown-id": (D, "invalid_api_key", "unknown_key", None),
    "wrong-secret": (D, "invalid_api_key", "wrong_secret", "reader"),
    "expired": (K, "expired_api_key", None, "expired"),
    "revoked": (K, "revoked_api_key", None, "revoked"),
    "rotated-out-after-grace": (D, "invalid_api_key", "wrong_secret", "rotated"),
    "rotated-new-secret": (A, None, None, "rotated_new"),
    "reader-reads": (A, None, None, "reader"),
    "missing-scope": (S, "insufficient_scope", None, "reader"),
    "writer-writes": (A, None, None, "writer"),
    "admin": (A, None, None, "admin"),
    "wildcard-grant": (A, None, None, "wildcard"),
    "public-path": None,
    "unmatched-route-denied-by-default": (S, "insufficient_scope", "no_rule", "admin"),
    "unmatched-route-without-key": (D, "missing_api_key", None, None),
    "two-authorization-headers": (D, "invalid_request", None, None),
    "two-headers-other-order": (D, "invalid_request", None, None),
}
TEMPLATES = {"/agents": "/agents", "/health": None, "/secret": None}


def test_every_case_has_an_expectation() -> None:
    assert {p.id for p in CASES} == set(EXPECTED)


@pytest.fixture
def observed() -> Iterator[Observed]:
    o = observed_world()
    yield o
    o.close()


def _verify_send(o: Observed) -> Any:
    """The plain entry point framework hooks use (no response seen)."""

    def send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
        values = [v for k, v in headers if k.lower() == "authorization"]
        decision = o.verifier.verify(
            values[0] if len(values) == 1 else (values or None), method, path, peer="127.0.0.1"
        )
        if decision.allowed:
            principal = decision.principal
            body = '{"key_id": %s}' % (f'"{principal.key_id}"' if principal else "null")
            return Reply(200, {}, body.encode())
        return _problem(decision)

    return send


def _problem(decision: Any) -> Reply:
    from keyguard.core.render import DEFAULT_RENDERER

    problem = DEFAULT_RENDERER.render(decision, "rid")
    return Reply(problem.status, {k.lower(): v for k, v in problem.headers}, problem.body)


@pytest.mark.parametrize("transport", ["asgi", "wsgi", "verify"])
@pytest.mark.parametrize("case", CASES)
def test_case_table_answers_as_before_and_emits_its_event(
    case: Case, transport: str, observed: Observed, request: pytest.FixtureRequest
) -> None:
    case_id = request.node.callspec.id.rsplit("-", 1)[0]
    if transport == "verify":
        send = _verify_send(observed)
    else:
        send = TRANSPORTS[transport](observed.verifier)
    before = time.time()
    check(case, observed.world, send)
    events = observed.events()
    expected = EXPECTED[case_id]
    if expected is None:
        assert events == []
        return
    (event,) = events
    kind, code, reason, key = expected
    assert event.kind is kind
    assert event.code == code
    assert event.reason == reason
    assert event.key_id == (observed.world.keys[key].key_id if key else None)
    assert event.owner is None
    assert event.route == TEMPLATES[case.path]
    assert event.method == case.method
    assert event.status == (None if kind is A else case.status)
    assert event.client == "127.0.0.1"
    assert event.elapsed is not None
    assert 0 < event.elapsed < 5
    assert before <= event.at <= time.time()
    if case.required:
        assert dict(event.detail) == {"required": " ".join(case.required)}


def _one(o: Observed | Any, kind: EventKind) -> Event:
    events = o.events() if isinstance(o, Observed) else o
    found = [e for e in events if e.kind is kind]
    assert len(found) == 1, events
    return found[0]


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
def test_rate_limited_names_the_window_and_its_limit(transport: str) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read", owner="acme")
    verifier, sink = observe(
        store,
        {"policy": RoutePolicy({"GET /agents": "agents:read"}), "rate_limits": "2/minute"},
    )
    send = TRANSPORTS[transport](verifier)
    statuses = [send("GET", "/agents", [("Authorization", key.header)]).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    verifier.observer.flush()  # type: ignore[union-attr]
    event = _one(sink.events, EventKind.RATE_LIMITED)
    assert (event.code, event.status, event.key_id, event.owner) == (
        "rate_limited",
        429,
        key.key_id,
        "acme",
    )
    assert dict(event.detail) == {"window": "minute", "limit": "2"}
    assert len([e for e in sink.events if e.kind is EventKind.AUTHENTICATED]) == 2
    verifier.observer.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
def test_suspended_and_network_restricted_keys(transport: str) -> None:
    store = MemoryStore()
    factory = KeyFactory(store)
    suspended = factory.issue("agents:read", owner="o", suspended_at=1.0, suspended_reason="x")
    fenced = factory.issue("agents:read", owner="o", allowed_networks=("10.0.0.0/8",))
    verifier, sink = observe(store, {"policy": RoutePolicy({"GET /agents": "agents:read"})})
    send = TRANSPORTS[transport](verifier)
    assert send("GET", "/agents", [("Authorization", suspended.header)]).status == 401
    assert send("GET", "/agents", [("Authorization", fenced.header)]).status == 403
    verifier.observer.flush()  # type: ignore[union-attr]
    refused = _one(sink.events, EventKind.KEY_REFUSED)
    assert (refused.code, refused.key_id) == ("suspended_api_key", suspended.key_id)
    denied = _one(sink.events, EventKind.DENIED)
    assert (denied.code, denied.key_id, denied.status) == (
        "network_not_allowed",
        fenced.key_id,
        403,
    )
    verifier.observer.close()  # type: ignore[union-attr]


class _DownStore(MemoryStore):
    def get(self, key_id: str) -> KeyRecord | None:
        raise StoreUnavailable("the test store is down")


@pytest.mark.parametrize("transport", ["asgi", "wsgi"])
def test_store_unavailable(transport: str) -> None:
    store = _DownStore()
    verifier, sink = observe(store, {"policy": RoutePolicy({"GET /agents": "agents:read"})})
    key = KeyFormat().generate().plaintext
    send = TRANSPORTS[transport](verifier)
    assert send("GET", "/agents", [("Authorization", f"UserKey {key}")]).status == 503
    verifier.observer.flush()  # type: ignore[union-attr]
    outage = _one(sink.events, EventKind.STORE_UNAVAILABLE)
    assert (outage.code, outage.reason) == ("auth_unavailable", "StoreUnavailable")
    denied = _one(sink.events, EventKind.DENIED)
    assert (denied.code, denied.status, denied.reason) == (
        "auth_unavailable",
        503,
        "store_unavailable",
    )
    verifier.observer.close()  # type: ignore[union-attr]


class _BrokenLimiter(MemoryRateLimiter):
    in_process = False

    def hit(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("down")

    async def ahit(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("down")


@pytest.mark.parametrize(("transport", "mode"), [("asgi", "local"), ("wsgi", "deny")])
def test_limiter_fallback(transport: str, mode: Any) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    limiter = ResilientLimiter(_BrokenLimiter(), mode=mode)
    verifier, sink = observe(
        store, {"policy": RoutePolicy({"GET /agents": "agents:read"}), "limiter": limiter}
    )
    reply = TRANSPORTS[transport](verifier)("GET", "/agents", [("Authorization", key.header)])
    verifier.observer.flush()  # type: ignore[union-attr]
    fallback = _one(sink.events, EventKind.LIMITER_FALLBACK)
    assert fallback.key_id == key.key_id
    if mode == "local":
        assert reply.status == 200
        assert dict(fallback.detail) == {"outcome": "decided"}
        _one(sink.events, EventKind.AUTHENTICATED)
    else:
        assert reply.status == 503
        assert (fallback.code, fallback.status) == ("auth_unavailable", 503)
        denied = _one(sink.events, EventKind.DENIED)
        assert (denied.reason, denied.key_id) == ("limiter_unavailable", key.key_id)
    verifier.observer.close()  # type: ignore[union-attr]


def test_an_address_blocked_by_the_brute_force_guard() -> None:
    store = MemoryStore()
    verifier, sink = observe(
        store,
        {
            "policy": RoutePolicy({"GET /agents": "agents:read"}),
            "brute_force": BruteForceGuard(threshold=1, window=60.0),
        },
    )
    send = asgi_send(verifier)
    junk = [("Authorization", f"UserKey {KeyFormat().generate().plaintext}")]
    assert [send("GET", "/agents", junk).status for _ in range(3)][-1] == 429
    verifier.observer.flush()  # type: ignore[union-attr]
    blocked = [e for e in sink.events if e.code == "rate_limited"]
    assert blocked
    assert all(e.kind is EventKind.DENIED and e.reason == "address_blocked" for e in blocked)
    assert all(e.key_id is None for e in blocked)
    verifier.observer.close()  # type: ignore[union-attr]


def test_the_client_address_follows_the_trusted_proxy_rule() -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    verifier, sink = observe(
        store, {"policy": RoutePolicy({"GET /agents": "agents:read"}), "trusted_proxies": 1}
    )
    headers = [("Authorization", key.header), ("X-Forwarded-For", "198.51.100.7")]
    assert wsgi_send(verifier)("GET", "/agents", headers).status == 200
    assert asgi_send(verifier)("GET", "/agents", headers).status == 200
    verifier.observer.flush()  # type: ignore[union-attr]
    assert [e.client for e in sink.events] == ["198.51.100.7"] * 2
    verifier.observer.close()  # type: ignore[union-attr]


def test_websocket_handshakes_are_observed_too() -> None:
    from keyguard.adapters.asgi import KeyGuardMiddleware

    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    verifier, sink = observe(store, {"policy": RoutePolicy({"GET /ws": "agents:read"})})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    mw = KeyGuardMiddleware(app, verifier=verifier)

    async def handshake(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        messages = [{"type": "websocket.connect"}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "websocket.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "websocket", "path": "/ws", "headers": headers, "client": ("::1", 1)}
        await mw(scope, receive, send)
        return sent

    accepted = asyncio.run(handshake([(b"authorization", key.header.encode())]))
    assert accepted[0]["type"] == "websocket.accept"
    refused = asyncio.run(handshake([]))
    assert refused[0]["type"] == "websocket.close"
    verifier.observer.flush()  # type: ignore[union-attr]
    assert sorted(e.kind for e in sink.events) == [EventKind.AUTHENTICATED, EventKind.DENIED]
    totals = store.usage_totals(key_id=key.key_id, since="2000-01-01")
    (fields,) = totals.days.values()
    assert fields["s:2xx"] == 1  # 101 Switching Protocols counts as a success
    verifier.observer.close()  # type: ignore[union-attr]


def test_an_inline_sink_sees_each_request_in_its_own_context() -> None:
    """What an OpenTelemetry sink needs: the event while the request's context is current
    (here a context variable the server would hold the request's span in)."""
    import contextvars

    from keyguard.adapters.asgi import KeyGuardMiddleware
    from keyguard.observability import Emitter, Observer, UsageCounter
    from tests.adapters import asgi_driver
    from tests.observability.support import asgi_app

    current: contextvars.ContextVar[str] = contextvars.ContextVar("span", default="none")
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    seen: list[tuple[EventKind, str]] = []
    emitter = Emitter()
    emitter.subscribe(lambda e: seen.append((e.kind, current.get())), inline=True)
    observer = Observer(events=emitter, usage=UsageCounter(store, start=False))
    assert not observer.merges_admitted  # the inline sink wants authenticated events now
    mw = KeyGuardMiddleware(
        asgi_app(),
        store=store,
        policy=RoutePolicy({"GET /agents": "agents:read"}),
        observer=observer,
    )

    async def traced(span: str, headers: list[tuple[str, str]]) -> int:
        current.set(span)
        return (await asgi_driver.call(mw, "GET", "/agents", headers)).status

    assert asyncio.run(traced("span-1", [("Authorization", key.header)])) == 200
    assert asyncio.run(traced("span-2", [])) == 401
    observer.close()
    assert seen == [(EventKind.AUTHENTICATED, "span-1"), (EventKind.DENIED, "span-2")]
    assert store.usage_totals(key_id=key.key_id, since="2000-01-01").days  # still counted
