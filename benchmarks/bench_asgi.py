"""Per-request cost of keyguard's ASGI paths over the same bare app, beside floors and peers.

Run: ``python benchmarks/bench_asgi.py`` (about a minute and a half; ``--quick`` for a smoke
run, ``--json PATH`` to keep the figures). Every app serves one route, ``GET /agents``
answering a small JSON body, and is driven in-process: one event loop for the whole run, N
requests awaited back to back inside one coroutine, ``receive`` returning a constant message
and ``send`` doing nothing — no HTTP client, no server, no per-request loop. Each request gets
a shallow copy of one of 10,000 prebuilt scopes (one per client address, in turn), as a server
builds a fresh one; that cost is in every row, so it cancels out of the overheads. keyguard
rows are cache hits on a memory store: the run fails if the store is read while timed.

Rows: bare Starlette and FastAPI; the hand-written floors (pure-ASGI guard; inside FastAPI as
middleware and as a dependency; each denial); keyguard's full path (auth + scope + the
platform's three windows + rate-limit headers), headers off, auth + scope only; its 401
(malformed, unknown id, no key), 403 and 429 whole-request denials; the documented FastAPI
way (a ``guard.require`` dependency) and the middleware inside FastAPI; peers (Starlette
``AuthenticationMiddleware`` + ``requires``, its 401 and 403, slowapi and its 429, FastAPI
``APIKeyHeader``). The goals judged on these rows are printed at the end (see ``goals.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Annotated, Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import APIKeyHeader
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from benchmarks import _labels as L
from benchmarks._floor import FIXED_HEADER_STR, Floor, FloorGuard
from benchmarks._inprocess import (
    BODY,
    CLIENTS,
    MALFORMED,
    NARROW,
    NO_KEY,
    NOTE_429,
    NOTE_FLOOR,
    NOTE_LIMITED,
    NOTE_NO_HEADERS,
    NOTE_NO_LIMIT,
    NOTE_STUB,
    PATH,
    RATE_LIMIT_HEADERS,
    REQUESTS,
    SCOPE,
    UNKNOWN,
    Keys,
    StubLimiter,
    Variant,
    admitting_clock,
    admitting_limiter,
    client_address,
    frozen_clock,
    frozen_limiter,
    parse_args,
    run,
    select,
)
from keyguard import Principal
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.fastapi import KeyGuard

# slowapi is a peer from the bench extra: without it, its rows are skipped with a note.
try:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address
except ImportError as exc:  # pragma: no cover - depends on the environment
    Limiter = None
    _NO_SLOWAPI = f"slowapi rows: slowapi is not installed ({exc}); pip install -e '.[bench]'"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Any]

#: slowapi's limit in the peer row. The cost of a check does not depend on the number, but a
#: real "100/minute" would turn every timed request after the 100th into a 429: the number is
#: high enough never to be reached, so the row measures the allowed path.
SLOWAPI_LIMIT = "1000000000/minute"
#: slowapi's limit in the 429 row: spent before the checks (per client address, so one
#: request per address), then every timed request is refused for the rest of the day.
SLOWAPI_SPENT = "1/day"

_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return _REQUEST


async def send(message: Message) -> None:
    return None


def make_scope(authorization: str | None, client: str = "127.0.0.1") -> Scope:
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
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _serve(app: ASGIApp, scopes: Any, number: int) -> int:
    start = time.perf_counter_ns()
    for scope in itertools.islice(scopes, number):
        await app(scope.copy(), receive, send)
    return time.perf_counter_ns() - start


class ASGIDriver:
    """Every request of the run on one event loop, awaited back to back."""

    def __init__(self, keys: Keys, clients: int = CLIENTS) -> None:
        self.loop = asyncio.new_event_loop()
        self.scopes = {
            kind: itertools.cycle(
                [make_scope(keys.header[kind], client_address(i)) for i in range(clients)]
            )
            for kind in REQUESTS
        }

    def probe(self, app: ASGIApp, request: str) -> tuple[int, list[str], bytes]:
        messages: list[Message] = []

        async def record(message: Message) -> None:
            messages.append(message)

        self.loop.run_until_complete(app(next(self.scopes[request]).copy(), receive, record))
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


async def unreachable_app(scope: Scope, receive: Any, send: Any) -> None:
    """The app behind a guard that must refuse every request: answering 500 fails the check."""
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"the guard let a request through"})


# -- Starlette -------------------------------------------------------------------------------
async def agents(request: Request) -> JSONResponse:
    return JSONResponse(BODY)


def starlette_app(*middleware: Middleware, endpoint: Callable[..., Any] = agents) -> Starlette:
    return Starlette(routes=[Route(PATH, endpoint)], middleware=list(middleware))


class DictBackend(AuthenticationBackend):
    """Starlette authentication at its cheapest: the header value looked up in a dict. With
    ``strict``, a header that is not a known key raises ``AuthenticationError`` (the
    middleware's ``on_error`` answers 401); without, it is anonymous (``requires`` → 403)."""

    def __init__(self, table: dict[str, frozenset[str]], *, strict: bool = False) -> None:
        self.table = table
        self.strict = strict

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        value = conn.headers.get("authorization")
        scopes = self.table.get(value or "")
        if scopes is None:
            if self.strict and value is not None:
                raise AuthenticationError("invalid key")
            return None
        return AuthCredentials(list(scopes)), SimpleUser("bench")


def _unauthorized(conn: HTTPConnection, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=401)


def starlette_auth(keys: Keys, *, strict: bool = False) -> Starlette:
    @requires(SCOPE)
    async def agents_auth(request: Request) -> JSONResponse:
        return JSONResponse(BODY)

    return starlette_app(
        Middleware(
            AuthenticationMiddleware,
            backend=DictBackend(keys.table, strict=strict),
            on_error=_unauthorized,
        ),
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
# Every FastAPI endpoint returns a dict, as FastAPI's (and keyguard's) documentation does:
# FastAPI serialises it and copies the headers a dependency set on its Response parameter.
_API_KEY = APIKeyHeader(name="Authorization")
ApiKey = Annotated[str, Security(_API_KEY)]


def fastapi_app(*middleware: Middleware, dependencies: tuple[Any, ...] = ()) -> FastAPI:
    app = FastAPI(middleware=list(middleware))

    @app.get(PATH, dependencies=list(dependencies))
    async def agents_fastapi() -> dict[str, Any]:
        return BODY

    return app


def fastapi_keyguard_dependency(keys: Keys, **options: Any) -> FastAPI:
    """The README's FastAPI example: ``KeyGuard(...)``, a ``guard.require(...)`` dependency in
    the endpoint's signature returning the Principal, ``guard.install(app)``."""
    guard = KeyGuard(verifier=keys.verifier(policy=None, **options))
    app = FastAPI()

    dependency = guard.require(SCOPE)

    # ``key: Annotated[Principal, Depends(dependency)]`` in the README: the same dependency;
    # spelled as a default here because this module's annotations are strings and
    # ``dependency`` is local (FastAPI could not resolve it).
    @app.get(PATH)
    async def list_agents(key: Principal = Depends(dependency)) -> dict[str, Any]:  # noqa: B008
        return BODY

    guard.install(app)
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


def fastapi_api_key_header_slowapi(keys: Keys) -> FastAPI:
    """The usual FastAPI stack: the APIKeyHeader dependency above plus slowapi's decorator
    (which needs the endpoint to take the ``Request``)."""
    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get(PATH, dependencies=[_api_key_dependency(keys)])
    @limiter.limit(SLOWAPI_LIMIT)
    async def agents_fastapi(request: Request) -> dict[str, Any]:
        return BODY

    return app


# -- the floor as a FastAPI dependency -------------------------------------------------------
def fastapi_dependency(floor: Floor) -> Callable[..., Any]:
    """The floor as a FastAPI dependency: denials raise ``HTTPException``, the fixed header
    goes on the ``Response`` parameter (FastAPI copies it to the endpoint's response)."""
    check = floor.check
    name, value_ = FIXED_HEADER_STR

    async def floor_guard(request: Request, response: Response) -> frozenset[str]:
        value = None
        for n, v in request.scope["headers"]:
            if n == b"authorization":
                value = v
                break
        status, extra = check(value)
        if status != 200:
            headers = {"Retry-After": str(extra), name: value_} if status == 429 else None
            raise HTTPException(status_code=status, detail="denied", headers=headers)
        response.headers[name] = value_
        return extra  # type: ignore[no-any-return]

    return floor_guard


# -- the rows ----------------------------------------------------------------------------------
def variants(keys: Keys, clients: int = CLIENTS) -> tuple[list[Variant], list[str]]:
    """Every row, in print order, and notes on the rows left out. Adding a row is one entry."""

    def keyguard(**options: Any) -> Middleware:
        return Middleware(KeyGuardMiddleware, verifier=keys.verifier(**options))

    def floor(clock: Callable[[], float]) -> Middleware:
        return Middleware(FloorGuard, floor=Floor(keys, clock))

    def full(**options: Any) -> Middleware:
        return keyguard(limiter=admitting_limiter(), **options)

    limited = {"headers_has": RATE_LIMIT_HEADERS}
    rows = [
        Variant(L.S_BARE, starlette_app),
        Variant(
            L.S_FLOOR, lambda: starlette_app(floor(admitting_clock())), L.S_BARE, note=NOTE_FLOOR
        ),
        Variant(L.S_KG_FULL, lambda: starlette_app(full()), L.S_BARE, note=NOTE_LIMITED, **limited),
        Variant(
            L.S_KG_NO_HEADERS,
            lambda: starlette_app(full(ietf_headers=False, legacy_headers=False)),
            L.S_BARE,
            headers_lack=RATE_LIMIT_HEADERS,
            note=NOTE_NO_HEADERS,
        ),
        Variant(
            L.S_KG_AUTH,
            lambda: starlette_app(keyguard(rate_limits=None)),
            L.S_BARE,
            note=NOTE_NO_LIMIT,
        ),
        Variant(
            L.S_KG_STUB,
            lambda: starlette_app(keyguard(limiter=StubLimiter())),
            L.S_BARE,
            note=NOTE_STUB,
            **limited,
        ),
        Variant(
            L.S_AUTH,
            lambda: starlette_auth(keys),
            L.S_BARE,
            note="trivial backend (dict lookup) + @requires('agents:read'): auth + scope only.",
        ),
    ]
    deny = "whole-request denial: the guard answers, the app never runs."
    denials = [
        (L.FLOOR_401_MALFORMED, L.KG_401_MALFORMED, MALFORMED, 401),
        (L.FLOOR_401_UNKNOWN, L.KG_401_UNKNOWN, UNKNOWN, 401),
        (L.FLOOR_403, L.KG_403, NARROW, 403),
    ]
    for floor_label, kg_label, request, status in denials:
        rows.append(
            Variant(
                floor_label,
                lambda: starlette_app(floor(admitting_clock())),
                L.S_BARE,
                request=request,
                status=status,
                note=deny,
            )
        )
        rows.append(
            Variant(
                kg_label,
                lambda: starlette_app(full()),
                L.S_BARE,
                request=request,
                status=status,
                body_has=b'"status"',
                note=deny,
            )
        )
    rows += [
        Variant(
            L.KG_401_NO_KEY,
            lambda: starlette_app(full()),
            L.S_BARE,
            request=NO_KEY,
            status=401,
            note=deny,
        ),
        Variant(
            L.FLOOR_429,
            lambda: starlette_app(floor(frozen_clock())),
            L.S_BARE,
            status=429,
            prime=20,
            headers_has=("retry-after",),
            note=deny,
        ),
        Variant(
            L.KG_429,
            lambda: starlette_app(keyguard(limiter=frozen_limiter())),
            L.S_BARE,
            status=429,
            prime=20,
            body_has=b'"rate_limited"',
            headers_has=("retry-after", *RATE_LIMIT_HEADERS),
            note=NOTE_429,
        ),
        Variant(
            L.KG_429_ALONE,
            lambda: KeyGuardMiddleware(
                unreachable_app, verifier=keys.verifier(limiter=frozen_limiter())
            ),
            L.S_BARE,
            status=429,
            prime=20,
            body_has=b'"rate_limited"',
            headers_has=("retry-after", *RATE_LIMIT_HEADERS),
            note="the same 429, KeyGuardMiddleware called directly as the ASGI app (no "
            "framework around it): what keyguard itself spends answering a 429.",
        ),
        Variant(
            L.S_AUTH_401,
            lambda: starlette_auth(keys, strict=True),
            L.S_BARE,
            request=UNKNOWN,
            status=401,
            note="peer denial: the backend raises AuthenticationError for a value that is no "
            "known key; AuthenticationMiddleware's on_error answers 401 (plain text).",
        ),
        Variant(
            L.S_AUTH_403,
            lambda: starlette_auth(keys),
            L.S_BARE,
            request=NO_KEY,
            status=403,
            note="peer denial: @requires raises HTTPException(403), rendered by Starlette.",
        ),
    ]
    fastapi_rows = [
        Variant(L.F_BARE, fastapi_app),
        Variant(
            L.F_FLOOR_MIDDLEWARE,
            lambda: fastapi_app(floor(admitting_clock())),
            L.F_BARE,
            note=NOTE_FLOOR,
        ),
        Variant(
            L.F_FLOOR_DEPENDENCY,
            lambda: fastapi_app(
                dependencies=(Depends(fastapi_dependency(Floor(keys, admitting_clock()))),)
            ),
            L.F_BARE,
            headers_has=("ratelimit-policy",),
            note="the floor's check as an async FastAPI dependency (Request, Response); the "
            "fixed header set on the Response parameter.",
        ),
        Variant(
            L.F_KG_DEPENDENCY,
            lambda: fastapi_keyguard_dependency(keys, limiter=admitting_limiter()),
            L.F_BARE,
            note="README's FastAPI example: KeyGuard(verifier=...), "
            "Annotated[Principal, Depends(guard.require('agents:read'))], guard.install(app); "
            "default rate limits (admitting clock), headers on.",
            **limited,
        ),
        Variant(
            L.F_KG_DEPENDENCY_AUTH,
            lambda: fastapi_keyguard_dependency(keys, rate_limits=None),
            L.F_BARE,
        ),
        Variant(
            L.F_KG_DEPENDENCY_STUB,
            lambda: fastapi_keyguard_dependency(keys, limiter=StubLimiter()),
            L.F_BARE,
            note=NOTE_STUB,
            **limited,
        ),
        Variant(L.F_KG_MIDDLEWARE, lambda: fastapi_app(full()), L.F_BARE, **limited),
        Variant(
            L.F_API_KEY,
            lambda: fastapi_app(dependencies=(_api_key_dependency(keys),)),
            L.F_BARE,
            note="Security(APIKeyHeader) + a dependency doing a dict lookup and a scope check.",
        ),
    ]
    skipped: list[str] = []
    if Limiter is None:
        skipped.append(_NO_SLOWAPI)
    else:
        rows.insert(
            [v.label for v in rows].index(L.S_AUTH) + 1,
            Variant(
                L.S_AUTH_SLOWAPI,
                lambda: starlette_auth_slowapi(keys),
                L.S_BARE,
                note="the same + slowapi's @limiter.limit (memory storage, ONE window, per "
                "client address, no headers); the limit is set too high to be reached.",
            ),
        )
        rows.append(
            Variant(
                L.SLOWAPI_429,
                lambda: starlette_auth_slowapi(keys, SLOWAPI_SPENT),
                L.S_BARE,
                status=429,
                prime=clients,
                body_has=b"Rate limit exceeded",
                note=f"slowapi's 429: Starlette auth + slowapi with a limit of {SLOWAPI_SPENT!r} "
                "per client address, spent before timing; slowapi's default handler.",
            )
        )
        fastapi_rows.append(
            Variant(
                L.F_API_KEY_SLOWAPI,
                lambda: fastapi_api_key_header_slowapi(keys),
                L.F_BARE,
                note="the same + slowapi's @limiter.limit on the endpoint (one window, memory "
                "storage, limit too high to be reached).",
            )
        )
    return rows + fastapi_rows, skipped


def collect(args: Any) -> dict[str, Any]:
    keys = Keys()
    clients = 200 if args.quick else CLIENTS
    driver = ASGIDriver(keys, clients)
    rows, skipped = variants(keys, clients)
    rows = select(rows, getattr(args, "rows", None))
    try:
        return run(
            "asgi",
            "ASGI (Starlette, FastAPI)",
            rows,
            driver,
            number=args.number,
            repeat=args.repeat,
            keys=keys,
            json_path=args.json,
            skipped=skipped,
            clients=clients,
        )
    finally:
        driver.close()


def main() -> None:
    args = parse_args(__doc__, number=2_000, repeat=35)
    data = collect(args)
    from benchmarks.goals import print_goals

    print_goals({"asgi": data})


if __name__ == "__main__":
    main()
