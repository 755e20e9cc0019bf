"""Per-request overhead of keyguard's ASGI middleware over the same bare app, beside peers.

Run: ``python benchmarks/bench_asgi.py`` (about a minute; ``--quick`` for a smoke run,
``--json PATH`` to keep the figures). Every app serves one route, ``GET /agents`` answering
a small JSONResponse, and is driven in-process: one event loop for the whole run, N requests
awaited back to back inside one coroutine, ``receive`` returning a constant message and
``send`` doing nothing — no HTTP client, no server, no per-request loop. Each request gets a
shallow copy of one prebuilt scope, as a server would build a fresh one; that copy is in
every row, so it cancels out of the overheads. keyguard rows are cache hits on a memory
store: the run fails if the store is read while timed. Goals: keyguard's full path (auth +
scope + the platform's three-window rate limit, in memory) adds under 3 µs over bare
Starlette; a 429 (key over its burst) costs under 10 µs per request.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Annotated, Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastapi import FastAPI, HTTPException, Security
from fastapi.security import APIKeyHeader
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    SimpleUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks._inprocess import (
    BODY,
    NARROW,
    NO_KEY,
    NOTE_429,
    NOTE_LIMITED,
    NOTE_NO_HEADERS,
    NOTE_NO_LIMIT,
    PATH,
    RATE_LIMIT_HEADERS,
    REQUESTS,
    SCOPE,
    Keys,
    Variant,
    admitting_limiter,
    frozen_limiter,
    parse_args,
    run,
)
from keyguard.adapters.asgi import KeyGuardMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Any]

#: slowapi's limit in the peer row. The cost of a check does not depend on the number, but a
#: real "100/minute" would turn every timed request after the 100th into a 429: the number is
#: high enough never to be reached, so the row measures the allowed path.
SLOWAPI_LIMIT = "1000000000/minute"
#: slowapi's limit in the 429 row: spent by one request before the checks, then every timed
#: request is refused for the rest of the day.
SLOWAPI_SPENT = "1/day"

_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return _REQUEST


async def send(message: Message) -> None:
    return None


def make_scope(authorization: str | None) -> Scope:
    headers = [(b"host", b"bench.local"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode("latin-1")))
    # No "state" key: servers copy the lifespan state per request; Starlette creates it.
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _serve(app: ASGIApp, scope: Scope, number: int) -> int:
    copy = scope.copy
    start = time.perf_counter_ns()
    for _ in range(number):
        await app(copy(), receive, send)
    return time.perf_counter_ns() - start


class ASGIDriver:
    """Every request of the run on one event loop, awaited back to back."""

    def __init__(self, keys: Keys) -> None:
        self.loop = asyncio.new_event_loop()
        self.scopes = {kind: make_scope(keys.header[kind]) for kind in REQUESTS}

    def probe(self, app: ASGIApp, request: str) -> tuple[int, list[str], bytes]:
        messages: list[Message] = []

        async def record(message: Message) -> None:
            messages.append(message)

        self.loop.run_until_complete(app(self.scopes[request].copy(), receive, record))
        starts = [m for m in messages if m["type"] == "http.response.start"]
        if len(starts) != 1:
            return -1, [], repr(messages).encode()
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        names = [k.decode("latin-1").lower() for k, _ in starts[0].get("headers", ())]
        return starts[0]["status"], names, body

    def timed(self, app: ASGIApp, request: str, number: int) -> int:
        return self.loop.run_until_complete(_serve(app, self.scopes[request], number))

    def close(self) -> None:
        self.loop.close()


# -- the hand-written floor ------------------------------------------------------------------
def _refusal(status: int) -> tuple[Message, Message]:
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")],
        },
        {"type": "http.response.body", "body": b"denied"},
    )


class FloorGuard:
    """The least an API-key check can do in pure ASGI: find the header, look its value up in a
    dict of key → scopes, check one scope, put the scopes in the scope. No hashing, no format
    check, no expiry or revocation, problem body, Starlette user — the floor, not a design."""

    def __init__(self, app: ASGIApp, *, table: dict[bytes, frozenset[str]], required: str) -> None:
        self.app = app
        self.table = table
        self.required = required
        self.unauthorized = _refusal(401)
        self.forbidden = _refusal(403)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = None
        for name, v in scope["headers"]:
            if name == b"authorization":
                value = v
                break
        scopes = self.table.get(value)  # type: ignore[arg-type]
        if scopes is None or self.required not in scopes:
            start, body = self.unauthorized if scopes is None else self.forbidden
            await send(start)
            await send(body)
            return
        scope["auth"] = scopes
        await self.app(scope, receive, send)


async def unreachable_app(scope: Scope, receive: Any, send: Any) -> None:
    """The app behind a guard that must refuse every request: answering 500 fails the check."""
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"the guard let a request through"})


# -- Starlette peers -------------------------------------------------------------------------
class DictBackend(AuthenticationBackend):
    """Starlette authentication at its cheapest: the header value looked up in a dict."""

    def __init__(self, table: dict[str, frozenset[str]]) -> None:
        self.table = table

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scopes = self.table.get(conn.headers.get("authorization", ""))
        if scopes is None:
            return None
        return AuthCredentials(list(scopes)), SimpleUser("bench")


async def agents(request: Request) -> JSONResponse:
    return JSONResponse(BODY)


def starlette_app(*middleware: Middleware, endpoint: Callable[..., Any] = agents) -> Starlette:
    return Starlette(routes=[Route(PATH, endpoint)], middleware=list(middleware))


def starlette_auth(keys: Keys) -> Starlette:
    @requires(SCOPE)
    async def agents_auth(request: Request) -> JSONResponse:
        return JSONResponse(BODY)

    return starlette_app(
        Middleware(AuthenticationMiddleware, backend=DictBackend(keys.table)),
        endpoint=agents_auth,
    )


def starlette_auth_slowapi(keys: Keys, limit: str = SLOWAPI_LIMIT) -> Starlette:
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @requires(SCOPE)
    @limiter.limit(limit)
    async def agents_limited(request: Request) -> JSONResponse:
        return JSONResponse(BODY)

    app = starlette_app(
        Middleware(AuthenticationMiddleware, backend=DictBackend(keys.table)),
        endpoint=agents_limited,
    )
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app


# -- FastAPI ---------------------------------------------------------------------------------
_API_KEY = APIKeyHeader(name="Authorization")
ApiKey = Annotated[str, Security(_API_KEY)]


def fastapi_app(*middleware: Middleware, dependencies: tuple[Any, ...] = ()) -> FastAPI:
    app = FastAPI(middleware=list(middleware))

    @app.get(PATH, dependencies=list(dependencies))
    async def agents_fastapi() -> JSONResponse:
        return JSONResponse(BODY)

    return app


def _api_key_dependency(keys: Keys) -> Any:
    table = keys.table

    async def agents_read(value: ApiKey) -> frozenset[str]:
        scopes = table.get(value)
        if scopes is None:
            raise HTTPException(status_code=401, detail="invalid key")
        if SCOPE not in scopes:
            raise HTTPException(status_code=403, detail="missing scope")
        return scopes

    return Security(agents_read)


def fastapi_api_key_header(keys: Keys) -> FastAPI:
    return fastapi_app(dependencies=(_api_key_dependency(keys),))


def fastapi_api_key_header_slowapi(keys: Keys) -> FastAPI:
    """The usual FastAPI stack: the APIKeyHeader dependency above plus slowapi's decorator
    (which needs the endpoint to take the ``Request``)."""
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get(PATH, dependencies=[_api_key_dependency(keys)])
    @limiter.limit(SLOWAPI_LIMIT)
    async def agents_fastapi(request: Request) -> JSONResponse:
        return JSONResponse(BODY)

    return app


# -- the rows ----------------------------------------------------------------------------------
BARE = "Starlette, bare"
FASTAPI_BARE = "FastAPI, bare"


KG_LIMITED = "Starlette + keyguard: auth + scope + 3-window limit (memory)"
KG_429 = "Starlette + keyguard: 429, burst spent (memory)"
KG_429_ALONE = "keyguard middleware alone (pure ASGI): 429, burst spent"
STARLETTE_SLOWAPI = "Starlette + AuthenticationMiddleware + slowapi"
SLOWAPI_429 = "Starlette + AuthenticationMiddleware + slowapi: 429"


def variants(keys: Keys) -> list[Variant]:
    """Every row, in print order. Adding a variant is one entry here."""

    def keyguard(**options: Any) -> Middleware:
        return Middleware(KeyGuardMiddleware, verifier=keys.verifier(**options))

    def auth_scope() -> Middleware:
        return keyguard(rate_limits=None)

    def limited(**options: Any) -> Middleware:
        return keyguard(limiter=admitting_limiter(), **options)

    floor_table = {k.encode("latin-1"): v for k, v in keys.table.items()}
    return [
        Variant(BARE, starlette_app),
        Variant(
            "Starlette + keyguard: auth + scope",
            lambda: starlette_app(auth_scope()),
            BARE,
            goal_us=3.0,
            note=NOTE_NO_LIMIT,
        ),
        Variant(
            KG_LIMITED,
            lambda: starlette_app(limited()),
            BARE,
            goal_us=3.0,
            headers_has=RATE_LIMIT_HEADERS,
            note=NOTE_LIMITED,
        ),
        Variant(
            "Starlette + keyguard: ... same, rate-limit headers off",
            lambda: starlette_app(limited(ietf_headers=False, legacy_headers=False)),
            BARE,
            goal_us=3.0,
            headers_lack=RATE_LIMIT_HEADERS,
            note=NOTE_NO_HEADERS,
        ),
        Variant(
            "Starlette + hand-written ASGI guard (floor)",
            lambda: starlette_app(Middleware(FloorGuard, table=floor_table, required=SCOPE)),
            BARE,
            note="dict lookup of the raw header value + one scope check; no hashing, no "
            "rate limit.",
        ),
        Variant(
            "Starlette + AuthenticationMiddleware + requires",
            lambda: starlette_auth(keys),
            BARE,
            note="trivial backend (dict lookup) + @requires('agents:read'): auth + scope only.",
        ),
        Variant(
            STARLETTE_SLOWAPI,
            lambda: starlette_auth_slowapi(keys),
            BARE,
            note="the same + slowapi's @limiter.limit (memory storage, ONE window, per "
            "client address, no headers); the limit is set too high to be reached.",
        ),
        Variant(FASTAPI_BARE, fastapi_app),
        Variant(
            "FastAPI + keyguard: auth + scope",
            lambda: fastapi_app(auth_scope()),
            FASTAPI_BARE,
        ),
        Variant(
            "FastAPI + keyguard: auth + scope + 3-window limit (memory)",
            lambda: fastapi_app(limited()),
            FASTAPI_BARE,
        ),
        Variant(
            "FastAPI + APIKeyHeader dependency",
            lambda: fastapi_api_key_header(keys),
            FASTAPI_BARE,
            note="Security(APIKeyHeader) + a dependency doing a dict lookup and a scope check.",
        ),
        Variant(
            "FastAPI + APIKeyHeader dependency + slowapi",
            lambda: fastapi_api_key_header_slowapi(keys),
            FASTAPI_BARE,
            note="the same + slowapi's @limiter.limit on the endpoint (one window, memory "
            "storage, limit too high to be reached).",
        ),
        Variant(
            "Starlette + keyguard: 401, no key",
            lambda: starlette_app(keyguard()),
            BARE,
            request=NO_KEY,
            status=401,
            note="denials are answered by the middleware (problem+json, fresh request id); "
            "the app never runs, so the overhead is against serving the request.",
        ),
        Variant(
            "Starlette + keyguard: 403, scope missing",
            lambda: starlette_app(keyguard()),
            BARE,
            request=NARROW,
            status=403,
        ),
        Variant(
            KG_429,
            lambda: starlette_app(keyguard(limiter=frozen_limiter())),
            BARE,
            status=429,
            prime=20,
            body_has=b'"rate_limited"',
            headers_has=("retry-after", *RATE_LIMIT_HEADERS),
            goal_us=10.0,
            goal_absolute=True,
            note=NOTE_429,
        ),
        Variant(
            KG_429_ALONE,
            lambda: KeyGuardMiddleware(
                unreachable_app, verifier=keys.verifier(limiter=frozen_limiter())
            ),
            BARE,
            status=429,
            prime=20,
            body_has=b'"rate_limited"',
            headers_has=("retry-after", *RATE_LIMIT_HEADERS),
            goal_us=10.0,
            goal_absolute=True,
            note="the same 429, KeyGuardMiddleware called directly as the ASGI app (no "
            "framework around it): what keyguard itself spends answering a 429.",
        ),
        Variant(
            SLOWAPI_429,
            lambda: starlette_auth_slowapi(keys, SLOWAPI_SPENT),
            BARE,
            status=429,
            prime=1,
            body_has=b"Rate limit exceeded",
            note=f"slowapi's 429: Starlette auth + slowapi with a limit of {SLOWAPI_SPENT!r}, "
            "spent by one request before timing; rendered by slowapi's "
            "_rate_limit_exceeded_handler (JSON body, no rate-limit headers: slowapi's default).",
        ),
        Variant(
            "Starlette + AuthenticationMiddleware: 403, no key",
            lambda: starlette_auth(keys),
            BARE,
            request=NO_KEY,
            status=403,
            note="peer denial: @requires raises HTTPException(403), rendered by Starlette.",
        ),
    ]


def main() -> None:
    args = parse_args(__doc__, number=2_000, repeat=35)
    keys = Keys()
    driver = ASGIDriver(keys)
    try:
        run(
            "ASGI",
            variants(keys),
            driver,
            number=args.number,
            repeat=args.repeat,
            expected_body=json.dumps(BODY, separators=(",", ":")).encode(),
            keys=keys,
            json_path=args.json,
            compare=[(KG_429, SLOWAPI_429), (KG_LIMITED, STARLETTE_SLOWAPI)],
        )
    finally:
        driver.close()


if __name__ == "__main__":
    main()
