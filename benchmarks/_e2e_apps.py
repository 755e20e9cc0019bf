"""The apps ``bench_e2e.py`` serves with uvicorn (``--factory benchmarks._e2e_apps:<name>``).

Each factory reads the Authorization values the load generator will send (one per line) from
the file named by ``KGBENCH_KEYS_FILE``. Every app answers ``GET /agents`` with the same small
JSONResponse:

* ``bare`` — Starlette, nothing else.
* ``keyguard`` — Starlette + ``KeyGuardMiddleware``: the full default path (auth + scope via
  a ``RoutePolicy``, the platform's three windows in the default ``MemoryRateLimiter`` with
  the real clock, rate-limit headers on), every key in a memory store. The verifier cache is
  sized to hold every key (``cache_size`` = 2 x keys, ``cache_ttl`` an hour) and every key is
  verified once at start-up, as in a server that has been running: the timed requests are
  cache hits, like the in-process rows. The load is spread over enough keys that none
  reaches its limits (see ``bench_e2e.py``), so every answer is a 200.
* ``keyguard_ietf`` — the same with ``legacy_headers=False``: the two IETF fields
  (``RateLimit-Policy``, ``RateLimit``) instead of five, which is what the three legacy
  ``X-RateLimit-*`` fields cost under a server that checks every header it writes.
* ``floor`` — Starlette + the hand-written pure-ASGI guard of ``_floor.py`` (parse, SHA-256,
  dict lookup, one scope, one GCRA window with the real clock, one fixed header) over the
  same keys: what any guard written in Python costs under the same server and load.
* ``slowapi`` — Starlette ``AuthenticationMiddleware`` (dict lookup of the header value) +
  ``@requires`` + slowapi's ``@limiter.limit`` (memory storage; a limit too high to reach).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser, requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/agents"
SCOPE = "agents:read"
BODY: dict[str, Any] = {"agents": []}
KEYS_ENV = "KGBENCH_KEYS_FILE"


def headers() -> list[str]:
    with open(os.environ[KEYS_ENV], encoding="ascii") as f:
        return [line.strip() for line in f if line.strip()]


async def agents(request: Request) -> JSONResponse:
    return JSONResponse(BODY)


def bare() -> Starlette:
    return Starlette(routes=[Route(PATH, agents)])


def keyguard(**options: Any) -> Starlette:
    from keyguard.adapters.asgi import KeyGuardMiddleware
    from keyguard.core.hashing import Hasher
    from keyguard.core.policy import RoutePolicy
    from keyguard.core.records import KeyRecord
    from keyguard.core.verifier import Verifier
    from keyguard.stores.memory import MemoryStore

    values = headers()
    store = MemoryStore()
    hasher = Hasher(pepper_from_env=False)
    for value in values:
        key = value.removeprefix("UserKey ")
        store.create(
            KeyRecord(
                key_id=key[3:15], name="bench", digest=hasher.digest(key), scopes=frozenset({SCOPE})
            )
        )
    verifier = Verifier(
        store,
        policy=RoutePolicy({f"GET {PATH}": SCOPE}),
        hasher=hasher,
        cache_size=2 * len(values),
        cache_ttl=3600.0,
        **options,
    )
    for value in values:
        if not verifier.verify(value, "GET", PATH).allowed:
            raise RuntimeError("a benchmark key was refused at start-up")
    return Starlette(
        routes=[Route(PATH, agents)], middleware=[Middleware(KeyGuardMiddleware, verifier=verifier)]
    )


def floor() -> Starlette:
    import time

    from benchmarks._floor import Floor, FloorGuard

    table = dict.fromkeys(headers(), frozenset({SCOPE}))
    guard = Floor(table, time.monotonic, required=SCOPE)
    return Starlette(routes=[Route(PATH, agents)], middleware=[Middleware(FloorGuard, floor=guard)])


def keyguard_ietf() -> Starlette:
    """The same full path sending the IETF fields only (``legacy_headers=False``)."""
    return keyguard(legacy_headers=False)


class DictBackend(AuthenticationBackend):
    def __init__(self, table: dict[str, frozenset[str]]) -> None:
        self.table = table

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        scopes = self.table.get(conn.headers.get("authorization", ""))
        if scopes is None:
            return None
        return AuthCredentials(list(scopes)), SimpleUser("bench")


def slowapi() -> Starlette:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")

    @requires(SCOPE)
    @limiter.limit("1000000000/minute")
    async def agents_limited(request: Request) -> JSONResponse:
        return JSONResponse(BODY)

    table = dict.fromkeys(headers(), frozenset({SCOPE}))
    app = Starlette(
        routes=[Route(PATH, agents_limited)],
        middleware=[Middleware(AuthenticationMiddleware, backend=DictBackend(table))],
    )
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    return app
