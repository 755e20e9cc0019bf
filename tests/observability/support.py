"""Helpers for the observability tests: an observed world (the adapters' shared key table with
a list sink and a usage counter), ASGI and WSGI apps answering a chosen status, and the
transports for both."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.verifier import Verifier
from keyguard.observability import Emitter, ListSink, Observer, UsageCounter
from keyguard.stores.base import KeyStore
from tests.adapters import asgi_driver, wsgi_driver
from tests.adapters.cases import Reply, World, make_policy, make_world

Send = Callable[[str, str, list[tuple[str, str]]], Reply]


@dataclass
class Observed:
    world: World
    sink: ListSink
    emitter: Emitter
    usage: UsageCounter
    verifier: Verifier

    def events(self) -> list[Any]:
        assert self.usage.flush()  # admitted requests' events come through the usage tally
        assert self.emitter.flush()
        return self.sink.events

    def close(self) -> None:
        self.usage.close()
        self.emitter.close()


def observed_world(**verifier_options: Any) -> Observed:
    """The adapters' key table (every key state) behind a verifier with an observer."""
    world = make_world()
    sink = ListSink()
    emitter = Emitter([sink])
    usage = UsageCounter(world.store, start=False)
    verifier_options.setdefault("hasher", Hasher(pepper_from_env=False))
    verifier_options.setdefault("policy", make_policy())
    verifier = Verifier(
        world.store, observer=Observer(events=emitter, usage=usage), **verifier_options
    )
    world.verifier = verifier
    return Observed(world, sink, emitter, usage, verifier)


def observe(store: KeyStore, verifier_options: dict[str, Any]) -> tuple[Verifier, ListSink]:
    sink = ListSink()
    observer = Observer(events=Emitter([sink]), usage=UsageCounter(store, start=False))
    verifier_options.setdefault("hasher", Hasher(pepper_from_env=False))
    return Verifier(store, observer=observer, **verifier_options), sink


def asgi_app(status: int = 200, *, fail: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if fail:
            raise RuntimeError("the application failed")
        principal = scope.get("keyguard")
        body = json.dumps({"key_id": principal.key_id if principal else None}).encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def wsgi_app(status: int = 200, *, fail: bool = False) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if fail:
            raise RuntimeError("the application failed")
        principal = environ.get("keyguard.principal")
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps({"key_id": principal.key_id if principal else None}).encode()]

    return app


def asgi_send(verifier: Verifier, status: int = 200, *, fail: bool = False) -> Send:
    mw = KeyGuardMiddleware(asgi_app(status, fail=fail), verifier=verifier)

    def send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
        return asyncio.run(asgi_driver.call(mw, method, path, headers))

    return send


def wsgi_send(verifier: Verifier, status: int = 200, *, fail: bool = False) -> Send:
    mw = KeyGuardWSGIMiddleware(wsgi_app(status, fail=fail), verifier=verifier)
    return lambda method, path, headers: wsgi_driver.call(mw, method, path, headers)


#: Both middlewares, for parametrised tests.
TRANSPORTS = {"asgi": asgi_send, "wsgi": wsgi_send}


#: The twin tests' routes: one needing a scope, one public.
TWIN_POLICY = RoutePolicy({"GET /agents": "agents:read", "GET /open": "public"})


def twin_verifier(store: KeyStore, observer: Observer | None, **options: Any) -> Verifier:
    """The verifier the observed-path twin tests (ASGI and WSGI) put behind both middlewares,
    with ``observer`` or without: a limiter of 3 a minute on a clock moving half a second per
    read, a brute-force guard of 3 failures a minute, one trusted proxy."""
    return Verifier(
        store,
        policy=TWIN_POLICY,
        hasher=Hasher(pepper_from_env=False),
        limiter=MemoryRateLimiter(clock=itertools.count(1_700_000_000.0, 0.5).__next__),
        rate_limits="3/minute",
        brute_force=BruteForceGuard(3, 60.0),
        trusted_proxies=1,
        observer=observer,
        **options,
    )
