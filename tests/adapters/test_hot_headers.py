"""Rate-limit headers on the adapters' fast paths: added once, replacing a field of the same name
the application set (whatever its case), whatever shape the application's header list has."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.expiry import expiry_header
from keyguard.core.ratelimit import MemoryRateLimiter
from tests.adapters.asgi_driver import call
from tests.adapters.cases import World, make_world
from tests.adapters.wsgi_driver import call as wsgi_call

RATE = ("ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining")


@pytest.fixture
def world() -> World:
    return make_world(limiter=MemoryRateLimiter(clock=itertools.count(1e9, 0.5).__next__))


def asgi_app(headers: Any) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        start: dict[str, Any] = {"type": "http.response.start", "status": 200}
        if headers is not None:
            start["headers"] = headers() if callable(headers) else headers
        await send(start)
        await send({"type": "http.response.body", "body": b"{}"})

    return app


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="no-headers-key"),
        pytest.param([], id="empty"),
        pytest.param([(b"content-type", b"application/json")], id="list"),
        pytest.param(((b"content-type", b"application/json"),), id="tuple"),
        pytest.param(lambda: iter([(b"content-type", b"application/json")]), id="iterator"),
        pytest.param([(b"ratelimit", b"app's own"), (b"x-a", b"1")], id="app-sets-ratelimit"),
    ],
)
def test_asgi_rate_limit_headers_whatever_the_app_sends(world: World, headers: Any) -> None:
    mw = KeyGuardMiddleware(asgi_app(headers), verifier=world.verifier)
    for _ in range(2):  # the slow path, then the fast path
        reply = asyncio.run(call(mw, "GET", "/agents", [("Authorization", world.header("reader"))]))
        assert reply.status == 200
        for name in RATE:
            assert name in reply.headers  # once each: call() refuses duplicates
        assert reply.headers["ratelimit"] != "app's own"
        if headers is not None and not callable(headers):
            for k, v in headers:  # the app's own fields stay, unless keyguard sends that name
                if k.decode() not in RATE:
                    assert reply.headers[k.decode()] == v.decode()
        if callable(headers):
            assert reply.headers["content-type"] == "application/json"


def test_asgi_extra_headers_replace_the_apps_field_too(world: World) -> None:
    header = expiry_header(4e9)
    key = world.keys["reader"]
    world.store.update(key.record.evolve(expires_at=4e9))  # expires within the warning window
    world.verifier.expiry_warning = 1e12
    world.verifier.invalidate()
    name = header[0].lower().encode()
    mw = KeyGuardMiddleware(asgi_app([(name, b"stale")]), verifier=world.verifier)
    for _ in range(2):
        reply = asyncio.run(call(mw, "GET", "/agents", [("Authorization", world.header("reader"))]))
        assert reply.headers[header[0].lower()] == header[1]
        assert "x-ratelimit-remaining" in reply.headers


def test_asgi_repeated_request_headers_take_the_scan(world: World) -> None:
    mw = KeyGuardMiddleware(asgi_app([]), verifier=world.verifier)
    auth = ("Authorization", world.header("reader"))
    both = [("Accept", "a"), auth, ("Accept", "b")]
    assert asyncio.run(call(mw, "GET", "/agents", both)).status == 200
    twice = [auth, ("X-Request-ID", "abc"), auth]
    refused = asyncio.run(call(mw, "GET", "/agents", twice))
    assert refused.status == 400
    assert refused.headers["x-request-id"] == "abc"


def wsgi_app(headers: list[tuple[str, str]]) -> Any:
    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", list(headers))
        return [b"{}"]

    return app


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="empty"),
        pytest.param([("Content-Type", "application/json")], id="plain"),
        pytest.param([("RateLimit", "app's own"), ("X-A", "1")], id="app-sets-ratelimit"),
        pytest.param([("x-ratelimit-LIMIT", "7")], id="odd-case"),
    ],
)
def test_wsgi_rate_limit_headers_replace_the_apps_fields(
    world: World, headers: list[tuple[str, str]]
) -> None:
    mw = KeyGuardWSGIMiddleware(wsgi_app(headers), verifier=world.verifier)
    for _ in range(2):
        reply = wsgi_call(mw, "GET", "/agents", [("Authorization", world.header("reader"))])
        assert reply.status == 200
        for name in RATE:
            assert name in reply.headers
        assert reply.headers["ratelimit"] != "app's own"
        assert reply.headers["x-ratelimit-limit"] != "7"


@pytest.mark.parametrize("own", [None, "RateLimit", "x-ratelimit-remaining"])
def test_flask_extension_appends_or_replaces(world: World, own: str | None) -> None:
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard

    app = Flask("t")

    @app.get("/agents")
    def agents() -> Any:
        headers = {own: "app's own"} if own else {}
        return {"ok": True}, 200, headers

    KeyGuard(app, verifier=world.verifier)
    client = app.test_client()
    for _ in range(2):
        response = client.get("/agents", headers={"Authorization": world.header("reader")})
        assert response.status_code == 200
        names = [k.lower() for k, _ in response.headers]
        assert len(names) == len(set(names)), names
        for name in RATE:
            assert response.headers[name] != "app's own"


@pytest.mark.parametrize(
    ("app_headers", "extra", "expected"),
    [
        ([], [("RateLimit", "a")], [("RateLimit", "a")]),
        (
            [("Content-Type", "x")],
            [("RateLimit", "a")],
            [("Content-Type", "x"), ("RateLimit", "a")],
        ),
        (  # the app's field of the same name goes, whatever its case; others stay in order
            (("ratelimit", "own"), ("X-A", "1")),
            [("RateLimit", "a")],
            [("X-A", "1"), ("RateLimit", "a")],
        ),
        (  # a name the extra headers repeat (two hooks added them) is sent once, its last value
            [("X-A", "1")],
            [("RateLimit", "a"), ("X-B", "2"), ("ratelimit", "b")],
            [("X-A", "1"), ("ratelimit", "b"), ("X-B", "2")],
        ),
    ],
)
def test_merged_text_headers_send_every_name_once(
    app_headers: Any, extra: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    from keyguard.adapters.wsgi import merged_headers

    assert merged_headers(app_headers, extra) == expected
