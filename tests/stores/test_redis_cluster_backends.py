"""The rate limiter, the brute-force guard and the detector counters on a real Redis Cluster
(three masters started by the test), built from ``redis+cluster://`` URLs as a deployment
configures them; and what every Redis backend and the key store do when no node of a Cluster
answers: ``StoreUnavailable`` (503 through an adapter), never another exception, and recovery
once the Cluster is there."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.detector_counters import Window as CounterWindow
from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import BackendDown, RateDecision, ResilientLimiter, Window
from keyguard.core.ratelimit.settings import LimiterSettings
from keyguard.demo import shared_limiter_url
from keyguard.management.manager import KeyManager
from keyguard.stores import from_url
from keyguard.stores.detector_counters import detector_counters_from_url
from keyguard.stores.ratelimit_url import limiter_from_settings
from keyguard.stores.redis_client import split_url
from keyguard.stores.redis_ratelimit import RedisBruteForceGuard, RedisRateLimiter
from tests.adapters import asgi_driver
from tests.adapters.cases import Reply
from tests.redis_servers import Cluster, free_cluster_port
from tests.stores.redis_server import import_redis

redis, redis_asyncio = import_redis()

pytestmark = [pytest.mark.redis]

WINDOWS = (Window(3, 10.0, "burst"), Window(5, 60.0, "minute"))


def _remaining(decision: RateDecision) -> tuple[int, ...]:
    return tuple(w.remaining for w in decision.windows)


def _prefix() -> str:
    return "kgc" + uuid.uuid4().hex[:10]


def _holders(cluster: Cluster, prefix: str) -> dict[int, list[bytes]]:
    """Each node's keys under ``prefix``."""
    found: dict[int, list[bytes]] = {}
    for node in cluster.nodes:
        client = redis.Redis(host="127.0.0.1", port=node.port)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        finally:
            client.close()
        if keys:
            found[node.port] = keys
    return found


# -- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis+cluster://h:7000?prefix=p", ("redis://h:7000", "p", True)),
        ("REDISS+CLUSTER://h:7000/0", ("rediss://h:7000/0", None, True)),
        (
            "redis://h:6379/2?prefix=p&ssl_cert_reqs=none",
            ("redis://h:6379/2?ssl_cert_reqs=none", "p", False),
        ),
        ("unix:///run/redis.sock?db=1", ("unix:///run/redis.sock?db=1", None, False)),
    ],
)
def test_split_url(url: str, expected: tuple[str, str | None, bool]) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize(
    "url", ["http://h:7000", "redis+sentinel://h:26379", "redis+cluster://h:7000/1", "h:7000"]
)
def test_a_url_no_backend_serves_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisRateLimiter.from_url(url)


def test_a_cluster_store_implies_a_cluster_limiter_in_the_demo() -> None:
    assert shared_limiter_url("redis+cluster://h:7000?prefix=kg&timeout=0.2") == (
        "redis+cluster://h:7000?prefix=kg"
    )
    assert shared_limiter_url("rediss+cluster://h:7000") == "rediss+cluster://h:7000"
    assert shared_limiter_url("sqlite:///k.db") is None


# -- a Cluster that is up ----------------------------------------------------------------------


@pytest.mark.slow
def test_the_limiter_decides_on_the_cluster_sync_and_async(cluster: Cluster) -> None:
    prefix = _prefix()
    limiter = RedisRateLimiter.from_url(f"{cluster.url}?prefix={prefix}")
    try:
        assert limiter.cluster
        buckets = [f"key{i:03d}" for i in range(24)]
        for bucket in buckets:
            assert [limiter.hit(bucket, WINDOWS).allowed for _ in range(4)] == [
                True,
                True,
                True,
                False,
            ]

        async def more() -> list[bool]:
            try:
                return [(await limiter.ahit(b, WINDOWS)).allowed for b in (*buckets, "fresh")]
            finally:
                await limiter.aclose()

        # The async client sees the sync client's counts (refused), and counts on its own.
        assert asyncio.run(more()) == [False] * len(buckets) + [True]
        assert _remaining(limiter.peek("fresh", WINDOWS)) == (2, 4)
        held = _holders(cluster, prefix)
        # The buckets spread over the masters; each bucket's keys share one slot.
        assert len(held) == 3
        for keys in held.values():
            for key in keys:
                tag = key.split(b"{", 1)[1].split(b"}", 1)[0]
                assert all(b"{" + tag + b"}" in k for k in keys if tag in k)
        limiter.reset("fresh")
        assert _remaining(limiter.peek("fresh", WINDOWS)) == (3, 5)
    finally:
        limiter.close()


@pytest.mark.slow
def test_owner_limits_on_the_cluster(cluster: Cluster) -> None:
    prefix = _prefix()
    limiter = RedisRateLimiter.from_url(f"{cluster.url}?prefix={prefix}")
    owner_windows = (Window(4, 60.0, "minute"),)
    try:
        allowed = [
            limiter.hit_pair(f"k{i % 3}", WINDOWS, "team-a", owner_windows).allowed
            for i in range(6)
        ]
        assert allowed == [True, True, True, True, False, False]
    finally:
        limiter.close()


@pytest.mark.slow
def test_the_brute_force_guard_on_the_cluster(cluster: Cluster) -> None:
    guard = RedisBruteForceGuard(url=f"{cluster.url}?prefix={_prefix()}", threshold=3, window=60)
    try:
        addresses = [f"10.0.0.{i}" for i in range(12)]
        for address in addresses:
            assert guard.is_blocked(address) is None
            for _ in range(3):
                guard.record_failure(address)
            assert guard.is_blocked(address) is not None

        async def blocked() -> list[int | None]:
            try:
                return [await guard.ais_blocked(a) for a in (*addresses, "10.0.1.1")]
            finally:
                await guard.aclose()

        found = asyncio.run(blocked())
        assert all(b is not None for b in found[:-1])
        assert found[-1] is None
    finally:
        guard.close()


@pytest.mark.slow
def test_detector_counters_on_the_cluster(cluster: Cluster) -> None:
    counters = detector_counters_from_url(f"{cluster.url}?prefix={_prefix()}&timeout=1")
    window = CounterWindow(60.0, 6)
    now = time.time()
    assert [counters.add(f"name{i}", window, now) for i in range(5)] == [1] * 5
    assert counters.add("name0", window, now, 2) == 3
    assert counters.count("name0", window, now) == 3


@pytest.mark.slow
def test_a_cluster_deployment_end_to_end(cluster: Cluster) -> None:
    """Keys and rate-limit counts both on the Cluster, as a multi-machine deployment runs."""
    prefix = _prefix()
    store_url = f"{cluster.url}?prefix={prefix}"
    with KeyManager(store_url) as keys:
        created = keys.create("c", ["agents:read"], rate_limit="3/10s")

    async def endpoint(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    app = KeyGuardMiddleware(
        endpoint,
        store=store_url,
        policy=RoutePolicy({"GET /agents": "agents:read"}),
        ratelimit_url=store_url,
        ratelimit_mode="deny",
    )
    auth = [("Authorization", f"UserKey {created.plaintext}")]

    async def requests() -> list[Reply]:
        try:
            return [await asgi_driver.call(app, "GET", "/agents", auth) for _ in range(4)]
        finally:
            limiter = app.verifier.limiter
            assert isinstance(limiter, ResilientLimiter)
            assert isinstance(limiter.primary, RedisRateLimiter)
            assert limiter.primary.cluster
            await limiter.primary.aclose()
            await app.verifier.store.aclose()  # type: ignore[attr-defined]

    replies = asyncio.run(requests())
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert [r.headers.get("x-ratelimit-remaining") for r in replies[:3]] == ["2", "1", "0"]
    assert json.loads(replies[3].body)["code"] == "rate_limited"
    assert replies[3].headers["retry-after"] == "10"
    assert any(b":rl:" in k for keys_ in _holders(cluster, prefix).values() for k in keys_)


# -- a Cluster that is not there ----------------------------------------------------------------


def test_an_unreachable_cluster_is_unavailable_and_built_lazily() -> None:
    url = f"redis+cluster://127.0.0.1:{free_cluster_port()}?prefix=kgdown"
    started = time.monotonic()
    limiter = RedisRateLimiter.from_url(url, socket_timeout=0.2)  # no connection yet
    guard = RedisBruteForceGuard(url=url, socket_timeout=0.2)
    counters = detector_counters_from_url(url)
    assert time.monotonic() - started < 1.0
    with pytest.raises(BackendDown):
        limiter.hit("k", WINDOWS)
    with pytest.raises(BackendDown):  # tried again on the next call, not cached as broken
        limiter.hit("k", WINDOWS)
    with pytest.raises(StoreUnavailable):
        guard.record_failure("10.0.0.1")
    with pytest.raises(StoreUnavailable):
        counters.add("n", CounterWindow(60.0, 6), time.time())

    async def ahit() -> None:
        try:
            await limiter.ahit("k", WINDOWS)
        finally:
            await limiter.aclose()

    with pytest.raises(BackendDown):
        asyncio.run(ahit())
    assert limiter.stats["disconnects"] >= 3


def test_an_unreachable_cluster_store_is_a_503_not_an_error() -> None:
    url = f"redis+cluster://127.0.0.1:{free_cluster_port()}?prefix=kgdown&timeout=0.2"
    store = from_url(url)
    with pytest.raises(StoreUnavailable):
        store.get("abcdefghijkl")
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.aget("abcdefghijkl"))

    async def endpoint(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        raise AssertionError("never reached")

    app = KeyGuardMiddleware(
        endpoint, store=store, policy=RoutePolicy({"GET /agents": "agents:read"})
    )
    unknown = KeyFormat().generate().plaintext  # well formed: the store is asked
    reply = asgi_driver.sync_send(app)("GET", "/agents", [("Authorization", f"UserKey {unknown}")])
    assert reply.status == 503
    assert json.loads(reply.body)["code"] == "auth_unavailable"
    assert "retry-after" in reply.headers


@pytest.mark.slow
def test_a_limiter_made_before_the_cluster_starts_works_once_it_is_up() -> None:
    ports = [free_cluster_port() for _ in range(3)]
    url = f"redis+cluster://127.0.0.1:{ports[0]}?prefix={_prefix()}"
    limiter = limiter_from_settings(LimiterSettings(url=url, mode="deny", timeout=0.2))
    assert isinstance(limiter, ResilientLimiter)
    assert isinstance(limiter.primary, RedisRateLimiter)
    assert not limiter.hit("k", WINDOWS).allowed  # deny: fail closed while it is away
    with Cluster(ports):
        try:
            deadline = time.monotonic() + 30
            while not limiter.hit("k", WINDOWS).allowed:  # the breaker's cooldown, then Redis
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert _remaining(limiter.primary.peek("k", WINDOWS)) == (2, 4)
        finally:
            limiter.primary.close()
