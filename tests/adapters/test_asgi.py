"""The pure ASGI middleware: the shared case table, pass-through scopes, WebSockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.decision import Principal
from keyguard.core.ratelimit import MemoryRateLimiter
from tests.adapters.asgi_driver import call, sync_send
from tests.adapters.cases import CASES, Case, check, make_world


def make_app(calls: list[Any]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append(scope)
        if scope["type"] == "lifespan":
            return
        principal = scope.get("keyguard")
        body = json.dumps({"key_id": principal.key_id if principal else None}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(scope="module")
def world() -> Any:
    return make_world()


@pytest.mark.parametrize("case", CASES)
def test_case_table(case: Case, world: Any) -> None:
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)
    check(case, world, sync_send(mw), calls=calls)


def test_starlette_compatible_scope(world: Any) -> None:
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)
    asyncio.run(call(mw, "GET", "/agents", [("Authorization", world.header("wildcard"))]))
    scope = calls[0]
    assert isinstance(scope["user"], Principal)
    assert scope["user"].is_authenticated
    assert "agents:read" in scope["auth"].scopes  # wildcard applies
    assert "tasks:read" not in scope["auth"].scopes


def test_public_path_gets_anonymous_user(world: Any) -> None:
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)
    asyncio.run(call(mw, "GET", "/health", []))
    assert calls[0]["user"].is_authenticated is False
    assert "agents:read" not in calls[0]["auth"].scopes


RATE_LIMIT_HEADERS = ("ratelimit", "ratelimit-policy", "retry-after", "x-ratelimit-limit")


def test_public_path_sends_no_rate_limit_headers_and_charges_nothing() -> None:
    now = [1_800_000_000.0]
    world = make_world(
        limiter=MemoryRateLimiter(clock=lambda: now[0]),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    calls: list[Any] = []
    send = sync_send(KeyGuardMiddleware(make_app(calls), verifier=world.verifier))
    auth = [("Authorization", world.header("reader"))]
    first = send("GET", "/agents", auth)
    assert first.headers["x-ratelimit-remaining"] == "19"  # the headers exist on this stack
    for headers in ([], auth):
        for _ in range(25):  # more than the burst: a public path is never refused
            reply = send("GET", "/health", headers)
            assert reply.status == 200
            assert json.loads(reply.body) == {"key_id": None}
            assert not any(h in reply.headers for h in RATE_LIMIT_HEADERS), reply.headers
    assert len(calls) == 51
    assert calls[-1]["user"].is_authenticated is False
    # Nothing was charged to the key for those requests.
    assert send("GET", "/agents", auth).headers["x-ratelimit-remaining"] == "18"


def test_unicode_path_is_matched_as_text(world: Any) -> None:
    calls: list[Any] = []
    send = sync_send(KeyGuardMiddleware(make_app(calls), verifier=world.verifier))
    reply = send("GET", "/agénts", [("Authorization", world.header("admin"))])
    assert reply.status == 403  # not /agents: unmatched, denied by default
    assert json.loads(reply.body)["code"] == "insufficient_scope"
    assert calls == []


def test_lifespan_passes_through(world: Any) -> None:
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)

    async def noop_receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def noop_send(message: Any) -> None:
        return None

    asyncio.run(mw({"type": "lifespan"}, noop_receive, noop_send))
    assert calls == [{"type": "lifespan"}]


def _ws_scope(headers: list[tuple[bytes, bytes]], extensions: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "websocket",
        "path": "/agents",
        "headers": headers,
        "extensions": extensions,
        "query_string": b"",
    }


async def _run_ws(mw: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    return sent


def test_websocket_denied_with_http_response_extension(world: Any) -> None:
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)
    sent = asyncio.run(_run_ws(mw, _ws_scope([], {"websocket.http.response": {}})))
    assert calls == []
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["code"] == "missing_api_key"


def test_websocket_denied_with_policy_close(world: Any) -> None:
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)
    sent = asyncio.run(_run_ws(mw, _ws_scope([(b"authorization", b"Bearer x")], {})))
    assert calls == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "missing_api_key"}]


def test_websocket_allowed(world: Any) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["keyguard"].key_id)

    mw = KeyGuardMiddleware(app, verifier=world.verifier)
    hdr = [(b"authorization", world.header("reader").encode())]
    asyncio.run(_run_ws(mw, _ws_scope(hdr, {})))
    assert seen == [world.keys["reader"].key_id]


def test_store_failure_fails_closed_with_503() -> None:
    from keyguard.core.errors import StoreUnavailable

    world = make_world(cache_ttl=0)

    def broken(key_id: str) -> None:
        raise StoreUnavailable("down")

    world.store.get = broken  # type: ignore[method-assign]
    calls: list[Any] = []
    mw = KeyGuardMiddleware(make_app(calls), verifier=world.verifier)
    reply = asyncio.run(call(mw, "GET", "/agents", [("Authorization", world.header("reader"))]))
    assert reply.status == 503
    assert reply.headers["retry-after"] == "1"
    assert json.loads(reply.body)["code"] == "auth_unavailable"
    assert calls == []
