"""Which address the brute-force guard counts, through every adapter.

One table of client setups (a peer, ``X-Forwarded-For`` lines, ``trusted_proxies`` — or none,
the default) × every adapter. For each: two failed guesses answered 401, the third 429 with
``Retry-After``, all three counted under the expected bucket, and a guess from another source
still answered 401. Behind the table's rows: several ``X-Forwarded-For`` lines are one list in
order (the client writes the first), an entry that is not an address falls back to the peer, a
request without a peer is counted under one bucket, IPv6 is grouped by /64, and the header is
ignored unless ``trusted_proxies`` says otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.fastapi import KeyGuard
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core import bruteforce
from keyguard.core.bruteforce import UNKNOWN_CLIENT, BruteForceGuard
from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from tests.adapters import asgi_driver, wsgi_driver
from tests.adapters import test_django as django_tests
from tests.adapters import test_drf as drf_tests
from tests.adapters import test_fastapi as fastapi_tests
from tests.adapters import test_flask as flask_tests
from tests.adapters import test_starlette as starlette_tests
from tests.adapters.cases import Reply, World, make_policy, make_world
from tests.adapters.test_asgi import make_app as bare_asgi_app
from tests.adapters.test_wsgi import make_app as bare_wsgi_app

THRESHOLD = 2
RETRY_AFTER = "58"  # the clock sits at 1000 s: its 7.5 s sub-window stops counting at 1057.5


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class SpyGuard(BruteForceGuard):
    """Records the bucket of every failure it counts."""

    def __init__(self) -> None:
        super().__init__(threshold=THRESHOLD, window=60, clock=FakeClock())
        self.seen: list[str] = []

    def record_failure(self, client: str | None) -> int | None:
        self.seen.append(self.bucket(client))
        return super().record_failure(client)


# -- the client setups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    options: dict[str, Any]  # Verifier options: trusted_proxies, or nothing (the default)
    peer: Callable[[int], str | None]  # the transport's address for the i-th guess
    xff: Callable[[int], list[str]]  # its X-Forwarded-For lines, in order
    bucket: str  # what the guard must count
    control_peer: str | None  # a source that must not be blocked
    control_xff: list[str] = field(default_factory=list)


def fixed(value: Any) -> Callable[[int], Any]:
    return lambda i: value


LONG_ENTRY = "2001:db8::1%" + "x" * 60  # looks like an address, longer than any is

SETUPS = [
    pytest.param(
        Setup(
            {},
            fixed("192.0.2.10"),
            lambda i: [f"198.51.100.{i}"],  # a fresh spoofed address per guess
            "192.0.2.10",
            "192.0.2.11",
            ["198.51.100.0"],
        ),
        id="default-trusts-no-xff",
    ),
    pytest.param(
        Setup(
            {"trusted_proxies": 1},
            fixed("10.0.0.2"),
            lambda i: [f"6.6.6.{i}, 198.51.100.7"],
            "198.51.100.7",
            "10.0.0.2",
            ["198.51.100.8"],
        ),
        id="one-proxy",
    ),
    pytest.param(
        Setup(
            {"trusted_proxies": 1},
            fixed("10.0.0.2"),
            lambda i: [f"6.6.6.{i}", "198.51.100.7"],  # the proxy added a line of its own
            "198.51.100.7",
            "10.0.0.2",
            ["6.6.6.6", "198.51.100.8"],
        ),
        id="two-lines-one-proxy",
    ),
    pytest.param(
        Setup(
            {"trusted_proxies": 2},
            fixed("10.0.0.2"),
            lambda i: [f"6.6.6.{i}", "203.0.113.9", "10.0.0.9"],
            "203.0.113.9",
            "10.0.0.2",
            ["6.6.6.6", "203.0.113.10", "10.0.0.9"],
        ),
        id="three-lines-two-proxies",
    ),
    pytest.param(
        Setup(
            {"trusted_proxies": 1},
            fixed("192.0.2.10"),
            fixed(["not-an-address"]),
            "192.0.2.10",
            "192.0.2.11",
            ["not-an-address"],
        ),
        id="garbage-entry-falls-back-to-peer",
    ),
    pytest.param(
        Setup(
            {"trusted_proxies": 1},
            fixed("192.0.2.10"),
            fixed([LONG_ENTRY]),
            "192.0.2.10",
            "192.0.2.11",
            [LONG_ENTRY],
        ),
        id="over-long-entry-falls-back-to-peer",
    ),
    pytest.param(
        Setup({}, fixed(None), fixed([]), UNKNOWN_CLIENT, "192.0.2.11"),
        id="missing-peer",
    ),
    pytest.param(
        Setup(
            {"trusted_proxies": 1},
            fixed(None),
            fixed(["garbage"]),
            UNKNOWN_CLIENT,
            "192.0.2.11",
            ["garbage"],
        ),
        id="missing-peer-garbage-entry",
    ),
    pytest.param(
        Setup(
            {},
            lambda i: f"2001:db8:1:2::{i + 1:x}",  # a fresh address of one /64 per guess
            fixed([]),
            "2001:db8:1:2::/64",
            "2001:db8:1:3::1",
        ),
        id="ipv6-peers-of-one-64",
    ),
]


# -- the adapters --------------------------------------------------------------------------------

Transport = Callable[[Any, str, list[tuple[str, str]], str | None], Reply]


def via_asgi(app: Any, path: str, headers: list[tuple[str, str]], peer: str | None) -> Reply:
    async def with_peer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["client"] = None if peer is None else (peer, 4711)
        await app(scope, receive, send)

    # Real header lines: a repeated X-Forwarded-For arrives as several fields.
    return asyncio.run(asgi_driver.call(with_peer, "GET", path, headers))


def via_wsgi(app: Any, path: str, headers: list[tuple[str, str]], peer: str | None) -> Reply:
    def with_peer(environ: dict[str, Any], start_response: Any) -> Any:
        if peer is None:
            del environ["REMOTE_ADDR"]
        else:
            environ["REMOTE_ADDR"] = peer
        return app(environ, start_response)

    # The driver joins repeated fields with commas in order, as WSGI servers do.
    return wsgi_driver.call(with_peer, "GET", path, headers)


@dataclass(frozen=True)
class Adapter:
    """``build(world with the policy verifier, verifier without a policy)`` → (app, settings
    for Django or ``None``; Django's handler classes are made once the settings apply);
    ``transport`` sends one request to the app."""

    build: Callable[[World, Verifier], tuple[Any, dict[str, Any] | None]]
    transport: Transport


def fastapi_dependencies(world: World, plain: Verifier) -> tuple[Any, None]:
    guard = KeyGuard(verifier=plain)
    app = fastapi_tests.build([], fastapi_tests.route_dependencies(guard))
    guard.install(app)
    return app, None


def django_settings(urls: Any, verifier: Verifier, *, middleware: bool) -> dict[str, Any]:
    return {
        "ROOT_URLCONF": urls,
        "MIDDLEWARE": [django_tests.MIDDLEWARE] if middleware else [],
        "KEYGUARD": {"VERIFIER": verifier},
    }


ADAPTERS = [
    pytest.param(
        Adapter(
            lambda w, p: (KeyGuardMiddleware(bare_asgi_app([]), verifier=w.verifier), None),
            via_asgi,
        ),
        id="asgi",
    ),
    pytest.param(
        Adapter(lambda w, p: (starlette_tests.with_middleware(w, []), None), via_asgi),
        id="starlette-middleware",
    ),
    pytest.param(
        Adapter(lambda w, p: (starlette_tests.with_backend(w, []), None), via_asgi),
        id="starlette-backend",
    ),
    pytest.param(
        Adapter(lambda w, p: (fastapi_tests.middleware_only(w, []), None), via_asgi),
        id="fastapi-middleware",
    ),
    pytest.param(Adapter(fastapi_dependencies, via_asgi), id="fastapi-dependencies"),
    pytest.param(
        Adapter(lambda w, p: (fastapi_tests.policy_dependency(w, []), None), via_asgi),
        id="fastapi-policy-dependency",
    ),
    pytest.param(
        Adapter(
            lambda w, p: (KeyGuardWSGIMiddleware(bare_wsgi_app([]), verifier=w.verifier), None),
            via_wsgi,
        ),
        id="wsgi",
    ),
    pytest.param(
        Adapter(lambda w, p: (flask_tests.make_app(w.verifier, []), None), via_wsgi),
        id="flask-policy",
    ),
    pytest.param(
        Adapter(lambda w, p: (flask_tests.make_app(p, [], decorated=True), None), via_wsgi),
        id="flask-decorators",
    ),
    pytest.param(
        Adapter(
            lambda w, p: (
                WSGIHandler,
                django_settings(django_tests.table_urls([]), w.verifier, middleware=True),
            ),
            via_wsgi,
        ),
        id="django-wsgi",
    ),
    pytest.param(
        Adapter(
            lambda w, p: (
                ASGIHandler,
                django_settings(
                    django_tests.table_urls([], asynchronous=True), w.verifier, middleware=True
                ),
            ),
            via_asgi,
        ),
        id="django-asgi",
    ),
    pytest.param(
        Adapter(
            lambda w, p: (
                WSGIHandler,
                django_settings(django_tests.table_urls([], decorated=True), p, middleware=False),
            ),
            via_wsgi,
        ),
        id="django-decorators",
    ),
    pytest.param(
        Adapter(
            lambda w, p: (
                WSGIHandler,
                django_settings(drf_tests.table_urls([]), p, middleware=False),
            ),
            via_wsgi,
        ),
        id="drf",
    ),
]


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture(autouse=True)
def _quiet_unknown_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # The once-per-process warning has its own test (tests/core/test_bruteforce.py).
    monkeypatch.setattr(bruteforce, "_unknown_warned", True)


@contextmanager
def deployed(
    adapter: Adapter, world: World, options: dict[str, Any]
) -> Iterator[tuple[Callable[..., Reply], SpyGuard]]:
    guard = SpyGuard()
    common: dict[str, Any] = {"hasher": Hasher(pepper_from_env=False), "brute_force": guard}
    with_policy = Verifier(world.store, policy=make_policy(), **common, **options)
    plain = Verifier(world.store, **common, **options)
    app, settings = adapter.build(dataclasses.replace(world, verifier=with_policy), plain)
    context: AbstractContextManager[Any] = (
        nullcontext() if settings is None else override_settings(**settings)
    )
    with context:
        if app in (WSGIHandler, ASGIHandler):
            app = app()  # Django loads MIDDLEWARE when the handler is made
        yield (lambda path, headers, peer: adapter.transport(app, path, headers, peer)), guard


def code_of(reply: Reply) -> str:
    return str(json.loads(reply.body)["code"])


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("setup", SETUPS)
def test_guard_counts_the_right_address(setup: Setup, adapter: Adapter, world: World) -> None:
    guess = ("Authorization", world.header("wrong_secret"))
    with deployed(adapter, world, setup.options) as (send, guard):
        replies = [
            send("/agents", [guess, *(("X-Forwarded-For", v) for v in setup.xff(i))], setup.peer(i))
            for i in range(THRESHOLD + 1)
        ]
        assert [r.status for r in replies] == [401] * THRESHOLD + [429]
        assert [code_of(r) for r in replies] == ["invalid_api_key"] * THRESHOLD + ["rate_limited"]
        assert replies[-1].headers["retry-after"] == RETRY_AFTER
        assert guard.seen == [setup.bucket] * (THRESHOLD + 1)
        control = send(
            "/agents",
            [guess, *(("X-Forwarded-For", v) for v in setup.control_xff)],
            setup.control_peer,
        )
        assert (control.status, code_of(control)) == (401, "invalid_api_key")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_valid_key_from_a_blocked_address_still_gets_in(adapter: Adapter, world: World) -> None:
    with deployed(adapter, world, {}) as (send, guard):
        guess = ("Authorization", world.header("wrong_secret"))
        for _ in range(THRESHOLD + 1):
            send("/agents", [guess], None)
        assert guard.is_blocked(None) is not None
        reply = send("/agents", [("Authorization", world.header("reader"))], None)
        assert reply.status == 200


ASGI_ADAPTERS = [p for p in ADAPTERS if p.values[0].transport is via_asgi]


@pytest.mark.parametrize("adapter", ASGI_ADAPTERS)
@pytest.mark.parametrize("client", [(None, 4711), [None, 4711], ()], ids=["tuple", "list", "empty"])
def test_an_asgi_client_without_a_host_is_an_unknown_peer(
    adapter: Adapter, client: Any, world: World
) -> None:
    """A server that knows no host (``client = (None, port)``) gives no address: the shared
    unknown bucket, not one named "None"."""

    def transport(app: Any, path: str, headers: list[tuple[str, str]], peer: str | None) -> Reply:
        async def without_host(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope["client"] = client
            await app(scope, receive, send)

        return asyncio.run(asgi_driver.call(without_host, "GET", path, headers))

    guess = ("Authorization", world.header("wrong_secret"))
    with deployed(dataclasses.replace(adapter, transport=transport), world, {}) as (send, guard):
        replies = [send("/agents", [guess], None) for _ in range(THRESHOLD + 1)]
        assert [r.status for r in replies] == [401] * THRESHOLD + [429]
        assert guard.seen == [UNKNOWN_CLIENT] * (THRESHOLD + 1)
