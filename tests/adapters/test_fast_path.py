"""The fused default path through each adapter: the same replies as without it, and taken.

Every adapter asks ``Verifier.fast_admit`` first (a recently verified key, an in-process
limiter, the key's default windows) and falls back to ``verify_nowait``/``verify`` for anything
else. Each test runs one sequence of requests (keys of every kind, every route kind, a key
spending its limit to 429s) through the adapter twice, over the same keys and identical
limiter clocks: once as shipped and once with the fast path switched off. The replies must
be identical, byte for byte; and once a key is verified, its later requests must not reach
the general path at all.
"""

# No ``from __future__ import annotations``: FastAPI resolves the endpoints' annotations.
import asyncio
import itertools
from collections.abc import Callable
from typing import Annotated, Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.decision import Principal
from keyguard.core.hashing import Hasher
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.verifier import Verifier
from tests.adapters.asgi_driver import call as asgi_call
from tests.adapters.cases import Reply, World, make_policy, make_world
from tests.adapters.wsgi_driver import call as wsgi_call


class Counted(Verifier):
    """A verifier that counts the requests its general path saw."""

    general = 0

    def verify_nowait(self, *args: Any, **kwargs: Any) -> Any:
        self.general += 1
        return super().verify_nowait(*args, **kwargs)

    def verify(self, *args: Any, **kwargs: Any) -> Any:
        self.general += 1
        return super().verify(*args, **kwargs)


class WithoutFastPath(Counted):
    def fast_admit(self, *args: Any, **kwargs: Any) -> None:
        return None


def twin(world: World, kind: type[Counted], **options: Any) -> Counted:
    return kind(
        world.store,
        policy=make_policy(),
        hasher=Hasher(pepper_from_env=False),
        limiter=MemoryRateLimiter(clock=itertools.count(1e9, 0.25).__next__),
        rate_limits="4/10s, 6/minute",
        **options,
    )


# (key name or a raw Authorization value, method, path)
SEQUENCE = [
    ("reader", "GET", "/agents"),
    ("reader", "GET", "/agents"),
    ("writer", "POST", "/agents"),
    ("reader", "POST", "/agents"),  # 403 from the fast path: the key is indexed
    ("wildcard", "GET", "/agents"),
    ("admin", "POST", "/agents"),
    ("reader", "GET", "/health"),  # public: not the fast path
    ("unknown", "GET", "/agents"),
    ("wrong_secret", "GET", "/agents"),
    ("expired", "GET", "/agents"),
    ("UserKey short", "GET", "/agents"),
    ("reader", "GET", "/nowhere"),
    *[("reader", "GET", "/agents")] * 4,  # the burst spent: 429s
    ("writer", "GET", "/agents"),
]

Send = Callable[[str, str, list[tuple[str, str]]], Reply]


def replies(world: World, send: Send) -> list[Reply]:
    out = []
    for i, (key, method, path) in enumerate(SEQUENCE):
        value = world.header(key) if key in world.plaintexts else key
        headers = [("Authorization", value), ("X-Request-ID", f"req-{i}")]
        out.append(send(method, path, headers))
    return out


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("X-App", "1")])
    return [b"{}"]


def asgi_sender(verifier: Verifier) -> Send:
    mw = KeyGuardMiddleware(_asgi_app, verifier=verifier)
    return lambda method, path, headers: asyncio.run(asgi_call(mw, method, path, headers))


def wsgi_sender(verifier: Verifier) -> Send:
    mw = KeyGuardWSGIMiddleware(_wsgi_app, verifier=verifier)
    return lambda method, path, headers: wsgi_call(mw, method, path, headers)


def fastapi_sender(verifier: Verifier) -> Send:
    from fastapi import Depends, FastAPI, Response

    from keyguard.adapters.fastapi import KeyGuard

    guard = KeyGuard(verifier=verifier)
    app = FastAPI()
    guard.install(app)

    reader, writer = guard.require("agents:read"), guard.require("agents:write")

    async def stamp(response: Response) -> None:
        # An earlier dependency setting headers, one of them a rate-limit field keyguard sets
        # too: keyguard's value must replace it (one field), the other must stay.
        response.headers["x-ratelimit-limit"] = "999"
        response.headers["x-app"] = "1"

    @app.get("/agents")
    async def read(
        _: Annotated[None, Depends(stamp)], principal: Annotated[Principal, Depends(reader)]
    ) -> dict[str, str]:
        return {"key": principal.key_id}

    @app.post("/agents")
    async def write(principal: Annotated[Principal, Depends(writer)]) -> dict[str, str]:
        return {"key": principal.key_id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    return lambda method, path, headers: asyncio.run(asgi_call(app, method, path, headers))


def flask_sender(verifier: Verifier) -> Send:
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard

    app = Flask(__name__)
    KeyGuard(app, verifier=verifier)

    @app.route("/agents", methods=["GET", "POST"])
    def agents() -> dict[str, str]:
        return {}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {}

    return lambda method, path, headers: wsgi_call(app, method, path, headers)


SENDERS = {
    "asgi": asgi_sender,
    "wsgi": wsgi_sender,
    "fastapi-dependency": fastapi_sender,
    "flask": flask_sender,
}


@pytest.mark.parametrize("adapter", list(SENDERS))
def test_the_fast_path_answers_exactly_as_the_general_path(adapter: str) -> None:
    world = make_world()
    fast, slow = twin(world, Counted), twin(world, WithoutFastPath)
    got = replies(world, SENDERS[adapter](fast))
    want = replies(world, SENDERS[adapter](slow))
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"request {i} {SEQUENCE[i]}"
    statuses = {r.status for r in got}
    assert {200, 401, 403, 429} <= statuses
    assert sum(r.status == 429 for r in got) >= 2
    assert fast.general < slow.general


@pytest.mark.parametrize("adapter", list(SENDERS))
def test_a_verified_key_never_reaches_the_general_path_again(adapter: str) -> None:
    world = make_world()
    fast = twin(world, Counted)
    send = SENDERS[adapter](fast)
    auth = [("Authorization", world.header("writer"))]
    first = send("GET", "/agents", auth)
    assert first.status == 200
    before = fast.general
    later = [send("GET", "/agents", auth), send("POST", "/agents", auth)]
    assert [r.status for r in later] == [200, 200]
    assert "ratelimit" in later[0].headers
    assert fast.general == before  # answered by the fast path alone
    send("POST", "/agents", [("Authorization", world.header("reader"))])
    assert fast.general > before  # a key not verified yet goes the general way
