"""The observed ASGI and WSGI middlewares' fused path (``Verifier.fast_admit(observed=True)``):
with it and without it, the same replies, the same usage records and the same events, request by
request; and it is taken (a verified key's later requests never reach the general path)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from keyguard.adapters import _observed
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import DECISION_KEY, PRINCIPAL_KEY, KeyGuardWSGIMiddleware
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.verifier import Verifier
from keyguard.observability import Emitter, ListSink, Observer, UsageCounter
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory
from tests.observability.test_observed_asgi_twins import call

POLICY = RoutePolicy(
    {
        "GET /agents": "agents:read",
        "GET /agents/{agent_id}": "agents:read",
        "POST /agents": "agents:write",
        "GET /open": "public",
        "GET /admin": "agents:write",
    }
)


class WithoutFastPath(Verifier):
    def fast_admit(self, *args: Any, **kwargs: Any) -> None:
        return None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        return
    status = 201 if scope["path"].endswith("7") else 200  # the app's status is what counts
    await send({"type": "http.response.start", "status": status, "headers": [(b"x-app", b"1")]})
    # What the application sees of the key: the same whichever path admitted it.
    principal, user, auth = scope["keyguard"], scope.get("user"), scope.get("auth")
    seen = [getattr(p, "key_id", None) for p in (principal, user, getattr(auth, "principal", 0))]
    await send({"type": "http.response.body", "body": repr(seen).encode()})


async def ws_call(app: Any, headers: list[tuple[bytes, bytes]], path: str) -> list[Any]:
    scope = {"type": "websocket", "path": path, "headers": headers, "client": ("203.0.113.7", 1)}
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    return sent


def observed(store: MemoryStore, kind: type[Verifier], events: str) -> tuple[Any, ...]:
    sink = ListSink()
    usage = UsageCounter(store, start=False)
    if events == "events and usage":
        observer = Observer(events=Emitter([sink]), usage=usage)
    elif events == "events":
        observer = Observer(events=Emitter([sink]))
    else:
        observer = Observer(usage=usage)
    verifier = kind(
        store,
        policy=POLICY,
        hasher=Hasher(pepper_from_env=False),
        limiter=MemoryRateLimiter(clock=itertools.count(1_700_000_000.0, 0.5).__next__),
        rate_limits="3/minute",
        observer=observer,
    )
    return KeyGuardMiddleware(app, verifier=verifier), verifier, observer, usage, sink


def records(usage: UsageCounter) -> list[tuple[Any, ...]]:
    """The usage records queued so far, without the times (keyguard's own, the clock's)."""
    out = []
    for admission, status, _at in usage._pending():
        _v, key, method, template, peer, forwarded_for, _elapsed = admission
        key_id = key if isinstance(key, str) else key.key_id  # a Principal, or its id
        out.append((key_id, method, template, peer, forwarded_for, status))
    return out


def events(sink: ListSink) -> list[tuple[Any, ...]]:
    fields = ("kind", "code", "key_id", "owner", "route", "method", "status", "client", "reason")
    return [
        (*(getattr(e, name) for name in fields), tuple(sorted(e.detail.items())))
        for e in sink.events
    ]


def count_general(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, int]:
    """Count the calls of the general observed path's ``name`` per twin (fast / slow)."""
    general = {"fast": 0, "slow": 0}
    plain = getattr(_observed, name)

    def counting(v: Any, *args: Any) -> Any:
        general["slow" if isinstance(v, WithoutFastPath) else "fast"] += 1
        return plain(v, *args)

    monkeypatch.setattr(_observed, name, counting)
    return general


def two_keys() -> tuple[MemoryStore, bytes, bytes]:
    """A store with a reader key and a reader-writer key: the store and their header values."""
    store = MemoryStore()
    keys = KeyFactory(store)
    reader = f"UserKey {keys.issue('agents:read').plaintext}".encode()
    writer = f"UserKey {keys.issue('agents:read', 'agents:write').plaintext}".encode()
    return store, reader, writer


@pytest.mark.parametrize("kind", ["usage", "events and usage", "events"])
def test_the_observed_fast_path_reports_exactly_as_the_general_one(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    general = count_general(monkeypatch, "observed_nowait")
    store, reader, writer = two_keys()
    requests = [
        ("GET", [(b"authorization", reader)], "/agents"),
        ("GET", [(b"authorization", reader), (b"x-forwarded-for", b"198.51.100.1")], "/agents/7"),
        ("POST", [(b"authorization", reader)], "/agents"),  # 403 on the fast path
        ("POST", [(b"authorization", writer)], "/agents"),
        ("GET", [(b"authorization", writer)], "/agents/3"),
        ("GET", [(b"authorization", b"UserKey not-a-key")], "/agents"),
        ("GET", [], "/open"),
        ("GET", [(b"authorization", reader)], "/open"),
    ]
    fast, _, fast_observer, fast_usage, fast_sink = observed(store, Verifier, kind)
    slow, _, slow_observer, slow_usage, slow_sink = observed(store, WithoutFastPath, kind)

    async def run() -> None:
        for _ in range(3):  # 3 a minute: 429s on the way, from the fast path too
            for method, headers, path in requests:
                want = await call(slow, list(headers), path, method)
                got = await call(fast, list(headers), path, method)
                assert got == want, (method, headers, path)
            for path in ("/agents", "/admin"):  # a WebSocket admitted, and refused (403)
                headers = [(b"authorization", reader)]
                assert await ws_call(fast, headers, path) == await ws_call(slow, headers, path)

    asyncio.run(run())
    assert records(fast_usage) == records(slow_usage)
    if kind != "events":
        assert {200, 201, 403, 429} <= {status for *_, status in records(fast_usage)}
    fast_observer.flush()
    slow_observer.flush()
    assert events(fast_sink) == events(slow_sink)
    if kind != "usage":
        kinds = {str(e.kind) for e in fast_sink.events}
        assert {"authenticated", "scope_denied", "rate_limited"} <= kinds
        # keyguard's own time, measured on the fast path as on the other.
        assert all(e.elapsed is not None and e.elapsed > 0 for e in fast_sink.events)
    # The fast path was taken, with usage counting (then an admitted request is reported by
    # responded() alone); with events alone, each admitted request is reported on its way in,
    # which the general path does.
    if kind == "events":
        assert general["fast"] == general["slow"]
    else:
        assert general["fast"] <= general["slow"] - 8


# -- WSGI ------------------------------------------------------------------------------------------
def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status = "201 Created" if environ["PATH_INFO"].endswith("7") else "200 OK"
    start_response(status, [("X-App", "1"), ("X-RateLimit-Limit", "999")])
    principal = environ[PRINCIPAL_KEY]
    decision = environ[DECISION_KEY]
    key_id = getattr(principal, "key_id", None)
    return [repr((key_id, decision.allowed, decision.principal is principal)).encode()]


def wsgi_call(app: Any, method: str, path: str, authorization: bytes | None) -> tuple[Any, ...]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.input": None,
    }
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization.decode()
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append(
            (status, [(k, v if k.lower() != "x-request-id" else "rid") for k, v in headers])
        )

    body = b"".join(app(environ, start_response))
    return started[0], body if b"request_id" not in body else b"<problem>"


@pytest.mark.parametrize("kind", ["usage", "events and usage", "events"])
def test_the_observed_wsgi_fast_path_reports_exactly_as_the_general_one(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    general = count_general(monkeypatch, "observed_verify")
    store, reader, writer = two_keys()
    requests = [
        ("GET", "/agents", reader),
        ("GET", "/agents/7", reader),
        ("POST", "/agents", reader),  # 403 on the fast path
        ("POST", "/agents", writer),
        ("GET", "/agents/3", writer),
        ("GET", "/agents", b"UserKey not-a-key"),
        ("GET", "/agents", reader + b", " + reader),  # two values: refused
        ("GET", "/open", None),
    ]
    stacks = {}
    for name, verifier_kind in (("fast", Verifier), ("slow", WithoutFastPath)):
        _, verifier, observer, usage, sink = observed(store, verifier_kind, kind)
        stacks[name] = (KeyGuardWSGIMiddleware(wsgi_app, verifier=verifier), observer, usage, sink)
    for _ in range(3):  # 3 a minute: 429s on the way
        for method, path, authorization in requests:
            want = wsgi_call(stacks["slow"][0], method, path, authorization)
            got = wsgi_call(stacks["fast"][0], method, path, authorization)
            assert got == want, (method, path, authorization)
    assert records(stacks["fast"][2]) == records(stacks["slow"][2])
    if kind != "events":
        assert {200, 201, 403, 429} <= {status for *_, status in records(stacks["fast"][2])}
    stacks["fast"][1].flush()
    stacks["slow"][1].flush()
    assert events(stacks["fast"][3]) == events(stacks["slow"][3])
    if kind != "usage":
        assert all(e.elapsed is not None and e.elapsed > 0 for e in stacks["fast"][3].events)
    if kind == "events":
        assert general["fast"] == general["slow"]
    else:
        assert general["fast"] <= general["slow"] - 8
