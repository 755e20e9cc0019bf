"""The observed ASGI middleware answers exactly as the plain one: the same status, the same
header fields in the same order, the same body, for apps that set no headers, their own
headers, or a rate-limit field keyguard also sends, and for requests with repeated
``Authorization`` or ``X-Forwarded-For`` fields."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.observability import Emitter, ListSink, Observer, UsageCounter
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory
from tests.observability.support import twin_verifier

APP_HEADERS: dict[str, list[tuple[bytes, bytes]] | None] = {
    "none": None,
    "empty": [],
    "own": [(b"content-type", b"application/json"), (b"x-app", b"1")],
    "clashing": [(b"x-ratelimit-limit", b"999"), (b"x-app", b"1")],
    "tuple": [(b"x-app", b"1")],
}


def app_sending(kind: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        start: dict[str, Any] = {"type": "http.response.start", "status": 200}
        headers = APP_HEADERS[kind]
        if headers is not None:
            start["headers"] = tuple(headers) if kind == "tuple" else list(headers)
        await send(start)
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def middleware(store: MemoryStore, app: Any, observed: bool) -> KeyGuardMiddleware:
    observer = None
    if observed:
        observer = Observer(events=Emitter([ListSink()]), usage=UsageCounter(store, start=False))
    return KeyGuardMiddleware(app, verifier=twin_verifier(store, observer))


async def call(
    app: Any, headers: list[tuple[bytes, bytes]], path: str, method: str = "GET"
) -> list[Any]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "client": ("203.0.113.7", 5000),
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    out = []
    for message in sent:
        if message["type"] == "http.response.start":
            headers_sent = [
                (k, v if k != b"x-request-id" else b"rid") for k, v in message.get("headers", ())
            ]
            out.append((message["status"], headers_sent))
        else:
            body = message.get("body", b"")
            out.append(body if b"request_id" not in body else b"<problem>")
    return out


@pytest.mark.parametrize("kind", list(APP_HEADERS))
def test_the_observed_middleware_answers_as_the_plain_one(kind: str) -> None:
    store = MemoryStore()
    key = KeyFactory(store).issue("agents:read")
    good = f"UserKey {key.plaintext}".encode()
    requests: list[tuple[list[tuple[bytes, bytes]], str]] = [
        ([(b"authorization", good)], "/agents"),
        ([(b"authorization", good), (b"x-forwarded-for", b"198.51.100.1")], "/agents"),
        ([(b"authorization", good), (b"authorization", good)], "/agents"),
        (
            [
                (b"authorization", good),
                (b"x-forwarded-for", b"10.0.0.1"),
                (b"x-forwarded-for", b"198.51.100.2"),
            ],
            "/agents",
        ),
        ([(b"authorization", b"UserKey not-a-key"), (b"x-request-id", b"abc")], "/agents"),
        ([], "/open"),
        ([(b"authorization", good)], "/open"),
    ]
    plain = middleware(store, app_sending(kind), observed=False)
    observed = middleware(store, app_sending(kind), observed=True)

    async def run() -> None:
        for _ in range(3):  # the rate limit (3 a minute) runs out on the way: 429s too
            for headers, path in requests:
                want = await call(plain, list(headers), path)
                got = await call(observed, list(headers), path)
                assert got == want, (headers, path)

    asyncio.run(run())
