"""Rate limits and the brute-force guard end to end, through the ASGI and WSGI middleware:
429 bodies and headers, all-or-nothing refusals, Retry-After that is honest."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.ratelimit import MemoryRateLimiter
from tests.adapters import asgi_driver, wsgi_driver
from tests.adapters.cases import Reply, World, make_world
from tests.adapters.test_asgi import make_app as make_asgi_app
from tests.adapters.test_wsgi import make_app as make_wsgi_app


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


Send = Callable[[str, str, list[tuple[str, str]]], Reply]


def asgi(world: World) -> Send:
    return asgi_driver.sync_send(KeyGuardMiddleware(make_asgi_app([]), verifier=world.verifier))


def wsgi(world: World) -> Send:
    return wsgi_driver.sender(KeyGuardWSGIMiddleware(make_wsgi_app([]), verifier=world.verifier))


ADAPTERS = [pytest.param(asgi, id="asgi"), pytest.param(wsgi, id="wsgi")]


def limited_world(clock: Clock, **options: Any) -> World:
    return make_world(
        limiter=MemoryRateLimiter(clock=clock), clock=clock, monotonic=clock, **options
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_burst_of_twenty_then_429_then_admitted_after_retry_after(
    adapter: Callable[[World], Send],
) -> None:
    clock = Clock()
    world = limited_world(clock)
    send = adapter(world)
    auth = [("Authorization", world.header("reader"))]
    for i in range(20):
        r = send("GET", "/agents", auth)
        assert r.status == 200, i
        assert r.headers["x-ratelimit-remaining"] == str(19 - i)
        assert r.headers["ratelimit-policy"] == (
            '"burst";q=20;w=10, "minute";q=100;w=60, "day";q=5000;w=86400'
        )
        assert r.headers["ratelimit"].startswith(f'"burst";r={19 - i};t=')
    clock.now += 3  # the burst was spent at t0; it frees at t0 + 10
    refused = send("GET", "/agents", auth)
    assert refused.status == 429
    problem = json.loads(refused.body)
    assert problem["code"] == "rate_limited"
    assert refused.headers["content-type"] == "application/problem+json"
    retry = int(refused.headers["retry-after"])
    assert retry == problem["retry_after"] == 7
    # On a 429 only the violated window is reported.
    assert refused.headers["ratelimit"].startswith('"burst";r=0;t=')
    assert "minute" not in refused.headers["ratelimit"]
    # Refused requests consume nothing: hammering while blocked does not push Retry-After.
    for _ in range(50):
        assert send("GET", "/agents", auth).status == 429
    clock.now += retry - 0.001
    assert send("GET", "/agents", auth).status == 429
    clock.now += 0.001
    assert send("GET", "/agents", auth).status == 200


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_keys_are_limited_independently(adapter: Callable[[World], Send]) -> None:
    clock = Clock()
    world = limited_world(clock)
    send = adapter(world)
    for _ in range(20):
        send("GET", "/agents", [("Authorization", world.header("reader"))])
    assert send("GET", "/agents", [("Authorization", world.header("reader"))]).status == 429
    assert send("GET", "/agents", [("Authorization", world.header("admin"))]).status == 200


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_per_key_override_from_the_record(adapter: Callable[[World], Send]) -> None:
    from keyguard.stores.memory import MemoryStore
    from tests.keyfactory import KeyFactory

    clock = Clock()
    world = limited_world(clock)
    tight = KeyFactory(world.store).issue("agents:read", rate_limit="2/minute")
    assert isinstance(world.store, MemoryStore)
    send = adapter(world)
    auth = [("Authorization", tight.header)]
    assert [send("GET", "/agents", auth).status for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_brute_force_guard_blocks_the_guessing_address_only(
    adapter: Callable[[World], Send],
) -> None:
    clock = Clock()
    world = limited_world(clock, brute_force=BruteForceGuard(threshold=5, window=60, clock=clock))
    send = adapter(world)
    owner = [("Authorization", world.header("reader"))]
    assert send("GET", "/agents", owner).status == 200  # the owner's key is in use (cached)
    guess = [("Authorization", world.header("unknown"))]
    codes = [json.loads(send("GET", "/agents", guess).body)["code"] for _ in range(7)]
    assert codes[:5] == ["invalid_api_key"] * 5
    assert codes[5:] == ["rate_limited"] * 2
    # The real owner of a key in use, even from the very same address, is never locked out.
    assert send("GET", "/agents", owner).status == 200
    # A key not in the cache would need a store read, which a blocked address does not get
    # (issue 7): it waits for the block to end like the guesser.
    assert send("GET", "/agents", [("Authorization", world.header("writer"))]).status == 429


def test_brute_force_guard_counts_the_forwarded_client_behind_a_trusted_proxy() -> None:
    clock = Clock()
    world = limited_world(
        clock,
        brute_force=BruteForceGuard(threshold=3, window=60, clock=clock),
        trusted_proxies=1,
    )
    send = asgi(world)
    attacker = [("Authorization", world.header("unknown")), ("X-Forwarded-For", "203.0.113.9")]
    other = [("Authorization", world.header("unknown")), ("X-Forwarded-For", "198.51.100.7")]
    statuses = [send("GET", "/agents", attacker).status for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert send("GET", "/agents", other).status == 401


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_headers_can_be_switched_off(adapter: Callable[[World], Send]) -> None:
    clock = Clock()
    world = limited_world(clock, ietf_headers=False)
    r = adapter(world)("GET", "/agents", [("Authorization", world.header("reader"))])
    assert "ratelimit" not in r.headers
    assert "ratelimit-policy" not in r.headers
    assert r.headers["x-ratelimit-limit"] == "20"
    world = limited_world(clock, legacy_headers=False)
    r = adapter(world)("GET", "/agents", [("Authorization", world.header("reader"))])
    assert "x-ratelimit-limit" not in r.headers
    assert "ratelimit" in r.headers


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_rate_limiting_can_be_disabled(adapter: Callable[[World], Send]) -> None:
    world = make_world(rate_limits=None)
    send = adapter(world)
    auth = [("Authorization", world.header("reader"))]
    assert all(send("GET", "/agents", auth).status == 200 for _ in range(50))
    assert "ratelimit" not in send("GET", "/agents", auth).headers


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_public_paths_are_not_rate_limited(adapter: Callable[[World], Send]) -> None:
    clock = Clock()
    world = limited_world(clock)
    send = adapter(world)
    assert all(send("GET", "/health", []).status == 200 for _ in range(50))


def test_flask_extension_rate_limits_and_adds_headers() -> None:
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard, current_principal

    clock = Clock()
    world = limited_world(clock)
    app = Flask(__name__)
    KeyGuard(app, verifier=world.verifier)

    @app.get("/agents")
    def agents() -> dict[str, Any]:
        principal = current_principal()
        return {"key_id": principal.key_id if principal else None}

    client = app.test_client()
    auth = {"Authorization": world.header("reader")}
    replies = [client.get("/agents", headers=auth) for _ in range(21)]
    assert [r.status_code for r in replies] == [200] * 20 + [429]
    assert replies[0].headers["RateLimit"].startswith('"burst";r=19;t=10')
    assert replies[0].headers["X-RateLimit-Remaining"] == "19"
    assert replies[20].headers["Retry-After"] == "10"
    assert replies[20].json == {**replies[20].json, "code": "rate_limited"}


# -- the rate-limit backend from settings and environment variables ------------------------------

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused


def _middleware_from_settings(world: World, **options: Any) -> Send:
    from keyguard.core.hashing import Hasher
    from tests.adapters.cases import make_policy

    app = KeyGuardMiddleware(
        make_asgi_app([]),
        store=world.store,
        policy=make_policy(),
        hasher=Hasher(pepper_from_env=False),
        **options,
    )
    return asgi_driver.sync_send(app)


@pytest.mark.parametrize(
    ("mode", "statuses"),
    [
        pytest.param("local", [200] * 20 + [429] * 10, id="local"),
        pytest.param("allow", [200] * 30, id="allow"),
        pytest.param("deny", [503] * 30, id="deny"),
    ],
)
def test_the_outage_mode_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, mode: str, statuses: list[int]
) -> None:
    """Issue 8: the fault mode must be selectable where users run it."""
    pytest.importorskip("redis")
    monkeypatch.setenv("KEYGUARD_RATELIMIT_URL", DEAD_REDIS)
    monkeypatch.setenv("KEYGUARD_RATELIMIT_MODE", mode)
    world = make_world()
    send = _middleware_from_settings(world)
    auth = [("Authorization", world.header("reader"))]
    replies = [send("GET", "/agents", auth) for _ in range(30)]
    assert [r.status for r in replies] == statuses
    if mode == "deny":
        assert json.loads(replies[0].body)["code"] == "auth_unavailable"
        assert int(replies[0].headers["retry-after"]) >= 1


def test_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("redis")
    monkeypatch.setenv("KEYGUARD_RATELIMIT_URL", DEAD_REDIS)
    monkeypatch.setenv("KEYGUARD_RATELIMIT_MODE", "deny")
    world = make_world()
    send = _middleware_from_settings(world, ratelimit_mode="allow", ratelimit_cooldown=60)
    auth = [("Authorization", world.header("reader"))]
    assert all(send("GET", "/agents", auth).status == 200 for _ in range(30))


def test_no_url_keeps_the_in_process_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    from keyguard.adapters._shared import build_verifier

    monkeypatch.delenv("KEYGUARD_RATELIMIT_URL", raising=False)
    monkeypatch.setenv("KEYGUARD_RATELIMIT_MODE", "deny")
    verifier = build_verifier(None, make_world().store, None, {})
    assert isinstance(verifier.limiter, MemoryRateLimiter)


def test_limiter_settings_that_cannot_apply_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from keyguard.adapters._shared import build_verifier
    from keyguard.core.errors import ConfigurationError

    store = make_world().store
    with pytest.raises(ConfigurationError, match="limiter= already is"):
        build_verifier(
            None, store, None, {"limiter": MemoryRateLimiter(), "ratelimit_mode": "deny"}
        )
    with pytest.raises(ConfigurationError, match="rate_limits=None"):
        build_verifier(None, store, None, {"rate_limits": None, "ratelimit_url": DEAD_REDIS})
    # A deployment-wide variable does not break an app that turned rate limiting off.
    monkeypatch.setenv("KEYGUARD_RATELIMIT_URL", DEAD_REDIS)
    assert build_verifier(None, store, None, {"rate_limits": None}).limiter is None
    monkeypatch.setenv("KEYGUARD_RATELIMIT_MODE", "sometimes")
    with pytest.raises(ConfigurationError, match="KEYGUARD_RATELIMIT_MODE"):
        build_verifier(None, store, None, {})


def test_flask_config_selects_the_backend_and_its_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("redis")
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard
    from keyguard.core.ratelimit import ResilientLimiter

    monkeypatch.delenv("KEYGUARD_RATELIMIT_MODE", raising=False)
    world = make_world()
    app = Flask(__name__)
    app.config.update(
        KEYGUARD_RATELIMIT_URL=DEAD_REDIS,
        KEYGUARD_RATELIMIT_MODE="deny",
        KEYGUARD_RATELIMIT_BUDGET=1.5,
        KEYGUARD_RATELIMIT_FAILURES=2,
    )
    ext = KeyGuard(app, store=world.store)
    limiter = ext.verifier.limiter
    assert isinstance(limiter, ResilientLimiter)
    assert (limiter.mode, limiter.failure_threshold) == ("deny", 2)
    assert limiter.primary.budget == 1.5  # type: ignore[attr-defined]


def test_django_settings_select_the_backend_and_its_mode() -> None:
    pytest.importorskip("redis")
    from tests.adapters.django_settings import configure

    configure()
    from keyguard.adapters.django import _build
    from keyguard.core.ratelimit import ResilientLimiter

    world = make_world()
    config = _build(
        {"STORE_URL": world.store, "RATELIMIT_URL": DEAD_REDIS, "RATELIMIT_MODE": "allow"}
    )
    limiter = config.verifier.limiter
    assert isinstance(limiter, ResilientLimiter)
    assert limiter.mode == "allow"
