"""The Redis rate limiter and brute-force guard against a real Redis.

The Lua script must reach exactly the decisions of :func:`keyguard.core.ratelimit.decide`
(the reference): a differential test replays generated traces through both with the same
clock and compares every decision and every header. Fault tests run a throwaway
``redis-server`` that they stop, pause and restart.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    LONG_WINDOW_BUCKETS,
    BackendDown,
    BackendSlow,
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RateState,
    ResilientLimiter,
    Window,
    decide,
    rate_limit_headers,
)
from keyguard.stores.redis_ratelimit import RedisBruteForceGuard, RedisRateLimiter
from tests.stores.redis_server import REDIS_URL, ThrowawayRedis, import_redis, reachable_or_skip

redis, redis_asyncio = import_redis()

pytestmark = pytest.mark.redis

T0 = 1_700_000_000


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    reachable_or_skip()
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(server: redis.Redis) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted afterwards."""
    name = "kgtest" + uuid.uuid4().hex[:10]
    yield name
    keys = list(server.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        server.delete(*keys)


@pytest.fixture
def limiter(server: redis.Redis, prefix: str) -> RedisRateLimiter:
    return RedisRateLimiter(server, prefix=prefix)


@pytest.fixture(scope="module")
def module_limiter(server: redis.Redis) -> Iterator[RedisRateLimiter]:
    # Module-scoped for Hypothesis, which runs many examples per test call; each example
    # uses a fresh bucket.
    name = "kgtest" + uuid.uuid4().hex[:10]
    yield RedisRateLimiter(server, prefix=name)
    keys = list(server.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        server.delete(*keys)


@pytest.fixture
async def alimiter(prefix: str) -> AsyncIterator[RedisRateLimiter]:
    reachable_or_skip()
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    yield RedisRateLimiter(async_client=client, prefix=prefix)
    await client.aclose()


@pytest.fixture
def private_redis(server: redis.Redis) -> Iterator[ThrowawayRedis]:
    srv = ThrowawayRedis()
    srv.start()
    yield srv
    srv.stop()


# -- the differential test: Redis decides exactly as decide() ------------------------------------

exact_window = st.tuples(st.integers(1, 6), st.sampled_from([1, 5, 10, 60, 3600]))
long_window = st.tuples(st.integers(1, 12), st.sampled_from([7200, 86400]))
window_sets = st.lists(st.one_of(exact_window, long_window), min_size=1, max_size=3).map(
    lambda ws: tuple(Window(limit, period, f"w{i}") for i, (limit, period) in enumerate(ws))
)
steps = st.sampled_from(
    [0, 0.001, 0.25, 0.5, 1, 1, 2, 7, 59, 61, 899, 900, 3600, 7200, 86400, -1, -30]
)
trace = st.lists(
    st.tuples(steps, st.sampled_from([1, 1, 1, 2, 3, 13]), st.booleans()),
    min_size=1,
    max_size=40,
)


def replay(
    lim: RedisRateLimiter, bucket: str, windows: tuple[Window, ...], events: list[Any]
) -> int:
    """Replays ``(step, cost, peek)`` events through Redis and decide(); returns admissions."""
    state: RateState | None = None
    t = T0 + 0.123457
    admitted = 0
    for step, cost, peek in events:
        t += step
        if peek and state is not None:
            expected, _ = decide(state, t, cost, windows, consume=False)
            got = lim.peek(bucket, windows, cost, now=t)
        else:
            expected, state = decide(state, t, cost, windows)
            got = lim.hit(bucket, windows, cost, now=t)
        assert got == expected, (t, cost, peek)
        assert rate_limit_headers(got) == rate_limit_headers(expected)
        admitted += got.allowed
    return admitted


@settings(database=None, deadline=None, max_examples=60)
@given(windows=window_sets, events=trace)
def test_redis_and_memory_agree_on_generated_traces(
    module_limiter: RedisRateLimiter, windows: tuple[Window, ...], events: list[Any]
) -> None:
    replay(module_limiter, uuid.uuid4().hex, windows, events)


def test_a_clock_stepping_back_into_an_unread_bucket_is_agreed_on(
    module_limiter: RedisRateLimiter,
) -> None:
    """Found by the trace property: the script assigned a Lua global on this path (refused by
    Redis, so the limiter failed closed) when a hit landed in a bucket it had not read."""
    events = [(-30, 2, False), (-30, 1, False)]
    replay(module_limiter, uuid.uuid4().hex, (Window(1, 7200, name="w0"),), events)


def test_redis_and_memory_agree_on_a_dense_default_trace(
    limiter: RedisRateLimiter, server: redis.Redis
) -> None:
    rng = random.Random(7)
    events = [
        (rng.choice([0, 0.01, 0.1, 0.3, 1, 5, 50, 1000]), rng.choice([1, 1, 1, 2, 5]), False)
        for _ in range(1500)
    ]
    assert replay(limiter, "dense", DEFAULT_WINDOWS, events) > 100
    # Expired units and buckets are deleted, not just skipped: state stays small.
    log_key, state_key = limiter.keys("dense")
    assert server.zcard(log_key) <= 100
    assert server.hlen(state_key) <= LONG_WINDOW_BUCKETS + 8


def test_script_flush_mid_run_is_invisible(limiter: RedisRateLimiter, server: redis.Redis) -> None:
    rng = random.Random(3)
    events = [(rng.choice([0, 0.2, 1, 3]), 1, rng.random() < 0.2) for _ in range(300)]
    state: RateState | None = None
    t = float(T0)
    for i, (step, cost, _peek) in enumerate(events):
        if i in (100, 200):
            server.script_flush()
        t += step
        expected, state = decide(state, t, cost)
        assert limiter.hit("flush", DEFAULT_WINDOWS, cost, now=t) == expected


# -- behaviour with Redis's own clock ------------------------------------------------------------


def test_redis_clock_burst(limiter: RedisRateLimiter, server: redis.Redis) -> None:
    results = [limiter.hit("k1") for _ in range(25)]
    assert [d.allowed for d in results] == [True] * 20 + [False] * 5
    refused = results[-1]
    assert refused.retry_after is not None
    assert 1 <= refused.retry_after <= 10
    assert [s.name for s in refused.violated] == ["burst"]
    assert isinstance(limiter, RateLimiter)
    log_key, state_key = limiter.keys("k1")
    # Every key expires: the longest window (a day) plus one 15-minute bucket and a second
    # (what a hit's state must outlive), plus the slack that spares setting it on every hit.
    for key in (log_key, state_key):
        assert (86400 + 900 + 1) * 1000 - 60_000 < server.pttl(key) <= (_RETAIN + _SLACK) * 1000


# -- expiry: set when due, never missing -----------------------------------------------------------

#: The default plan's retention after a hit (s): a day, one 15-minute bucket, a second; and the
#: slack added when the TTLs are set (min(half of it, an hour)).
_RETAIN = 86400 + 900 + 1
_SLACK = 3600


def _pexpires(server: redis.Redis) -> int:
    return int(server.info("commandstats").get("cmdstat_pexpire", {}).get("calls", 0))


def test_ttls_are_set_on_the_first_hit_and_then_only_when_due(
    limiter: RedisRateLimiter, server: redis.Redis
) -> None:
    before = _pexpires(server)
    for _ in range(15):
        assert limiter.hit("due").allowed
    # The first hit set both keys' TTLs; the next 14 found them far enough off.
    assert _pexpires(server) - before == 2
    log_key, state_key = limiter.keys("due")
    exp = int(server.hget(state_key, "exp"))
    seconds, micros = server.time()
    assert abs(exp - (seconds * 1_000_000 + micros) - (_RETAIN + _SLACK) * 1_000_000) < 60e6
    # Less than the retention left (as after an hour of hits): the next hit sets them again.
    for key in (log_key, state_key):
        server.pexpire(key, (_RETAIN - 10) * 1000)
    server.hset(state_key, "exp", str(exp - (_SLACK + 10) * 1_000_000))
    before = _pexpires(server)
    assert limiter.hit("due").allowed
    assert _pexpires(server) - before == 2
    for key in (log_key, state_key):
        assert server.pttl(key) > (_RETAIN + _SLACK) * 1000 - 60_000
    assert int(server.hget(state_key, "exp")) > exp - 60e6


@pytest.mark.parametrize("pair", [False, True], ids=["hit", "hit_pair"])
def test_no_key_is_ever_left_without_a_ttl(
    limiter: RedisRateLimiter, server: redis.Redis, pair: bool
) -> None:
    """Hits spaced so that the minute's log empties (Redis deletes an empty sorted set) and a
    later hit creates it again, with the caller's clock far from Redis's: every key of the
    bucket has a TTL after every hit, at least the retention a hit needs."""
    rng = random.Random(7)
    windows = DEFAULT_WINDOWS
    keys = limiter.pair_keys("pk", "po") if pair else limiter.keys("pk")
    t = T0
    for i in range(60):
        t += rng.choice([0.01, 0.5, 3, 61, 120, 4000])
        if pair:
            limiter.hit_pair("pk", windows, "po", windows, now=t)
        else:
            limiter.hit("pk", windows, now=t)
        if i % 7 == 3:  # now and then a bucket whose TTLs are due (as hours later)
            for key in keys[1::2]:
                if server.hget(key, "exp") is not None:
                    server.hset(key, "exp", "1")
        for key in keys:
            ttl = server.pttl(key)
            assert ttl != -1, (i, key)  # -1: the key exists without a TTL
            if ttl != -2:  # -2: no such key (a log emptied by the trim)
                assert ttl > _RETAIN * 1000 - 60_000, (i, key, ttl)


def test_a_short_plan_gets_half_its_retention_as_slack(
    limiter: RedisRateLimiter, server: redis.Redis
) -> None:
    windows = (Window(5, 10.0, name="burst"),)
    assert limiter.hit("short", windows).allowed
    retain_ms = 10_000 + 1_000  # the window and a second (an exact window: no bucket)
    for key in limiter.keys("short"):
        assert retain_ms - 5_000 < server.pttl(key) <= retain_ms + retain_ms // 2


def test_reported_reset_never_exceeds_the_window(limiter: RedisRateLimiter) -> None:
    """Issue 8: a fresh key's day window reported ``t=86710`` against ``w=86400``."""
    width = 86400 // LONG_WINDOW_BUCKETS
    assert [s.reset for s in limiter.hit("fresh").windows] == [10, 60, 86400]
    assert [s.reset for s in limiter.hit("set", now=T0 // width * width + 5).windows] == [
        10,
        60,
        86400,
    ]


def test_peek_writes_nothing_and_reset_forgets(
    limiter: RedisRateLimiter, server: redis.Redis
) -> None:
    assert limiter.peek("fresh").allowed
    assert server.exists(*limiter.keys("fresh")) == 0
    for _ in range(20):
        limiter.hit("fresh")
    assert not limiter.peek("fresh").allowed
    limiter.reset("fresh")
    assert limiter.hit("fresh").allowed


def test_key_names_share_a_cluster_slot_and_hold_no_secret(limiter: RedisRateLimiter) -> None:
    from redis.crc import key_slot

    log_key, state_key = limiter.keys("3F9aQ2xLm7Pw")
    assert log_key == f"{limiter.prefix}:rl:{{3F9aQ2xLm7Pw}}:log"
    assert state_key == f"{limiter.prefix}:rl:{{3F9aQ2xLm7Pw}}:state"
    assert key_slot(log_key.encode()) == key_slot(state_key.encode())
    for bad in ("a{b", "a}b", "", "a b"):
        with pytest.raises(ConfigurationError):
            limiter.keys(bad)


@pytest.mark.parametrize("cost", [0, -2, True])
def test_bad_cost_is_misuse(limiter: RedisRateLimiter, cost: int) -> None:
    with pytest.raises(ConfigurationError):
        limiter.hit("k", cost=cost)


def test_construction_from_url(server: redis.Redis) -> None:
    lim = RedisRateLimiter.from_url(f"{REDIS_URL}?prefix=kgurl{uuid.uuid4().hex[:6]}")
    try:
        assert lim.prefix.startswith("kgurl")
        assert lim.client is not None
        assert lim.async_client is not None
        assert lim.client.connection_pool.connection_kwargs["socket_timeout"] == 0.1
        assert lim.hit("u").allowed
        lim.reset("u")
    finally:
        lim.close()
    with pytest.raises(ConfigurationError):
        RedisRateLimiter(url="http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError) as info:
        RedisRateLimiter(url="redis://:s3cret@127.0.0.1:notaport/0")
    assert "s3cret" not in str(info.value)
    assert info.value.__cause__ is None
    with pytest.raises(ConfigurationError):
        RedisRateLimiter(url=f"{REDIS_URL}?prefix=a", prefix="b")
    with pytest.raises(ConfigurationError):
        RedisRateLimiter()
    with pytest.raises(ConfigurationError):
        RedisRateLimiter(server, prefix="a{b")
    with pytest.raises(ConfigurationError):
        RedisRateLimiter(server, socket_timeout=0)


# Clients of the loops asyncio.run() closed are dropped unclosed (nothing can await them any
# more): their sockets' warnings are this test's, collected before it ends.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_async_clients_from_a_url_follow_the_event_loop(server: redis.Redis, prefix: str) -> None:
    """A limiter built from a URL serves any event loop (one per ``asyncio.run()``, one per
    request of Starlette's TestClient used without ``with``): each loop gets its own clients,
    built once, instead of a RuntimeError every other call."""
    try:
        _event_loops(prefix)
    finally:
        gc.collect()  # the dropped clients are collected (and their warnings ignored) here


def _event_loops(prefix: str) -> None:
    lim = RedisRateLimiter.from_url(f"{REDIS_URL}?prefix={prefix}")
    windows = (Window(10, 60.0, "minute"),)
    seen: list[Any] = []

    async def two_hits() -> list[int]:
        out = []
        for _ in range(2):
            out.append((await lim.ahit("k", windows)).windows[0].remaining)
            seen.append(lim.async_client)
        return out

    try:
        assert [asyncio.run(two_hits()) for _ in range(3)] == [[9, 8], [7, 6], [5, 4]]
        # One pair of clients per loop, built when the loop first asks.
        assert [len({id(c) for c in seen[i : i + 2]}) for i in (0, 2, 4)] == [1, 1, 1]
        assert len({id(c) for c in seen}) == 3
        assert lim.stats["errors"] == lim.stats["disconnects"] == lim.stats["retries"] == 0

        async def closing() -> int:
            remaining = (await lim.ahit("k", windows)).windows[0].remaining
            await lim.aclose()
            return remaining

        assert asyncio.run(closing()) == 3

        async def after_aclose() -> list[int]:
            try:
                return await two_hits()
            finally:
                await lim.aclose()

        assert asyncio.run(after_aclose()) == [2, 1]  # a loop after aclose() gets new clients
    finally:
        lim.close()


def test_a_unix_socket_url(server: redis.Redis, tmp_path: Any) -> None:
    """``unix:///path`` reaches redis-py intact (it was once rewritten to ``unix:/path``)."""
    sock = tmp_path / "redis.sock"
    srv = ThrowawayRedis(None, "--unixsocket", str(sock), "--unixsocketperm", "700")
    srv.start()
    try:
        for db in (0, 2):
            lim = RedisRateLimiter.from_url(f"unix://{sock}?db={db}&prefix=kgsock")
            local = redis.Redis(unix_socket_path=str(sock), db=db)
            try:
                assert lim.hit("k", (Window(1, 60.0, "minute"),)).allowed
                assert not lim.hit("k", (Window(1, 60.0, "minute"),)).allowed
                assert local.exists(*lim.keys("k")) == 2  # counted in the URL's database
            finally:
                lim.close()
                local.close()
    finally:
        srv.stop()


async def test_missing_client_kind_is_misuse(server: redis.Redis) -> None:
    sync_only = RedisRateLimiter(server, prefix="kgx")
    with pytest.raises(ConfigurationError):
        await sync_only.ahit("k")
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    async_only = RedisRateLimiter(async_client=client, prefix="kgx")
    with pytest.raises(ConfigurationError):
        async_only.hit("k")
    await client.aclose()


# -- round trips ---------------------------------------------------------------------------------


def test_one_round_trip_per_request(private_redis: ThrowawayRedis) -> None:
    client = redis.Redis(port=private_redis.port)
    lim = RedisRateLimiter(client, prefix="kgrt")
    lim.hit("warm")  # loads the script and opens the connection

    sent = 0
    conn = client.connection_pool.get_connection()
    client.connection_pool.release(conn)
    original = type(conn).send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        sent += 1
        return original(self, *args, **kwargs)

    def evalsha_calls() -> int:
        stats = client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    before = client.info("commandstats")
    start = evalsha_calls()
    n = 200
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(conn), "send_packed_command", counting)
        for i in range(n):
            lim.hit(f"rt{i % 7}", cost=1 + i % 2)
    after = client.info("commandstats")
    assert sent == n
    assert evalsha_calls() - start == n
    for command in ("cmdstat_eval", "cmdstat_script"):
        assert after.get(command, {}).get("calls", 0) == before.get(command, {}).get("calls", 0)
    client.close()


# -- concurrency: 8 processes x 5 threads x 10 requests against one key --------------------------


def _worker(url: str, prefix: str, barrier: Any, results: Any) -> None:  # pragma: no cover
    # Runs in a spawned process (coverage is not collected there).
    client = redis.Redis.from_url(url)
    lim = RedisRateLimiter(client, prefix=prefix)
    admitted = 0
    lock = threading.Lock()
    start = threading.Barrier(5)

    def thread() -> None:
        nonlocal admitted
        start.wait()
        for _ in range(10):
            if lim.hit("contended").allowed:
                with lock:
                    admitted += 1

    threads = [threading.Thread(target=thread) for _ in range(5)]
    barrier.wait()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(admitted)
    client.close()


@pytest.mark.slow
def test_processes_and_threads_admit_exactly_the_burst(prefix: str, server: redis.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(REDIS_URL, prefix, barrier, results)) for _ in range(8)
    ]
    for p in procs:
        p.start()
    counts = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert sum(counts) == 20  # 400 requests within one 10 s burst window


# -- async client --------------------------------------------------------------------------------


async def test_async_client_agrees_with_decide(alimiter: RedisRateLimiter) -> None:
    state: RateState | None = None
    rng = random.Random(11)
    t = float(T0)
    for _ in range(200):
        t += rng.choice([0, 0.1, 0.5, 2, 30])
        cost = rng.choice([1, 1, 2])
        expected, state = decide(state, t, cost)
        assert await alimiter.ahit("async", DEFAULT_WINDOWS, cost, now=t) == expected
    peeked, _ = decide(state, t, 1, consume=False)
    assert await alimiter.apeek("async", now=t) == peeked
    await alimiter.areset("async")
    assert (await alimiter.ahit("async", now=t)).windows[0].remaining == 19


async def test_async_redis_clock_burst(alimiter: RedisRateLimiter) -> None:
    results = [(await alimiter.ahit("ak")).allowed for _ in range(22)]
    assert results == [True] * 20 + [False] * 2


# -- failure modes -------------------------------------------------------------------------------

DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused


def test_unreachable_redis_raises_backend_down_without_waiting() -> None:
    lim = RedisRateLimiter(url=DEAD_URL, budget=30)
    started = time.monotonic()
    with pytest.raises(BackendDown) as info:
        lim.hit("k")
    assert time.monotonic() - started < 10, "a refused connection does not wait for the budget"
    assert "127.0.0.1" not in str(info.value)
    assert isinstance(info.value, StoreUnavailable)
    # One immediate reconnect, no retry of a "slow" call.
    assert lim.stats.snapshot() == {"retries": 1, "timeouts": 0, "disconnects": 2, "errors": 0}
    with pytest.raises(BackendDown):
        lim.reset("k")
    lim.close()


async def test_unreachable_redis_async() -> None:
    lim = RedisRateLimiter(url=DEAD_URL)
    with pytest.raises(StoreUnavailable):
        await lim.ahit("k")
    with pytest.raises(StoreUnavailable):
        await lim.areset("k")
    await lim.aclose()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    ("mode", "allowed", "degraded", "unavailable"),
    [
        pytest.param("local", True, True, False, id="local"),
        pytest.param("allow", True, True, False, id="allow"),
        pytest.param("deny", False, False, True, id="deny"),
    ],
)
def test_modes_with_unreachable_redis(
    mode: str, allowed: bool, degraded: bool, unavailable: bool
) -> None:
    primary = RedisRateLimiter(url=DEAD_URL)
    lim = ResilientLimiter(primary, mode=mode, clock=Clock())  # type: ignore[arg-type]
    for _ in range(5):
        d = lim.hit("k")
        assert (d.allowed, d.degraded, d.unavailable) == (allowed, degraded, unavailable)
    assert lim.state == "open"
    if mode == "local":
        assert sum(lim.hit("k").allowed for _ in range(30)) == 15  # 20 in the burst, 5 used
    primary.close()


def test_breaker_opens_and_recovers_with_a_real_server(
    private_redis: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="keyguard.ratelimit")
    clock = Clock()
    primary = RedisRateLimiter(url=private_redis.url, prefix="kgbr")
    fallback = MemoryRateLimiter()
    lim = ResilientLimiter(primary, fallback=fallback, mode="local", cooldown=5, clock=clock)
    assert not lim.hit("k").degraded

    private_redis.stop()
    decisions = [lim.hit("k") for _ in range(5)]
    assert all(d.degraded and d.allowed for d in decisions)
    assert lim.state == "open"

    private_redis.start()  # same port, empty data
    clock.t = 4.9
    assert lim.hit("k").degraded, "still cooling down: Redis not tried"
    clock.t = 5.1
    d = lim.hit("k")
    assert not d.degraded
    assert lim.state == "closed"
    assert d.windows[0].remaining == 19  # the fresh server's count, not the fallback's
    assert any("circuit open" in r.getMessage() for r in caplog.records)
    assert any("recovered" in r.getMessage() for r in caplog.records)
    primary.close()


def test_slow_redis_is_retried_once_within_the_budget(private_redis: ThrowawayRedis) -> None:
    lim = RedisRateLimiter(url=private_redis.url, prefix="kgslow", socket_timeout=0.1, budget=1.0)
    assert lim.hit("k").allowed
    private_redis.client_pause(4.0)
    started = time.monotonic()
    with pytest.raises(BackendSlow) as info:
        lim.hit("k")
    assert time.monotonic() - started < 3.5, "the budget, not the pause, ended it"
    assert "within 1s" in str(info.value)
    # One fast call, one patient retry with the rest of the budget.
    assert lim.stats.snapshot() == {"retries": 1, "timeouts": 2, "disconnects": 0, "errors": 0}
    time.sleep(max(0.0, started + 4.05 - time.monotonic()))
    assert lim.hit("k").allowed
    lim.close()


def test_timeouts_and_budget_are_validated() -> None:
    for kwargs in ({"socket_timeout": 0}, {"budget": -1}, {"socket_timeout": 1, "budget": 0.5}):
        with pytest.raises(ConfigurationError):
            RedisRateLimiter(url=DEAD_URL, **kwargs)  # type: ignore[arg-type]


def test_a_retried_hit_is_counted_once(
    limiter: RedisRateLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hit sent again with the same request token (its first reply came too late) gets
    the first run's reply and counts nothing more."""
    from keyguard.stores import redis_ratelimit

    windows = (Window(3, 60, "a"),)
    monkeypatch.setattr(redis_ratelimit, "_token", lambda: "same")
    first = limiter.hit("k", windows, now=T0)
    assert limiter.hit("k", windows, now=T0 + 1) == first
    assert limiter.hit_pair("k", windows, "o", windows, now=T0) == (
        pair := limiter.hit_pair("k", windows, "o", windows, now=T0 + 1)
    )
    assert pair.allowed
    monkeypatch.undo()
    assert limiter.peek("k", windows, now=T0 + 2).windows[0].remaining == 2
    final = limiter.hit_pair("k", windows, "o", windows, now=T0 + 2)
    assert [s.remaining for s in final.windows] == [1, 1]


def test_a_client_that_decodes_replies_gets_the_same_decisions(
    server: redis.Redis, prefix: str
) -> None:
    """The scripts reply with one string; a client built with ``decode_responses=True`` hands
    it over as text, and the decisions (admitted, refused, replayed, pairs) are the same."""
    text = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        lims = [
            RedisRateLimiter(server, prefix=prefix + "b"),
            RedisRateLimiter(text, prefix=prefix + "t"),
        ]
        windows = (Window(2, 10, "a"), Window(3, 7200, "d"))
        for i in range(4):
            got = [lim.hit("k", windows, now=T0 + i) for lim in lims]
            assert got[0] == got[1]
        assert got[0].retry_after == 7
        assert [s.name for s in got[0].violated] == ["a"]
        pairs = [lim.hit_pair("k2", windows, "o", windows, now=T0) for lim in lims]
        assert pairs[0] == pairs[1]
        assert pairs[0].allowed
        peeks = [lim.peek("k", windows, 3, now=T0 + 4) for lim in lims]
        assert peeks[0] == peeks[1]
        assert peeks[0].retry_after is None
    finally:
        for p in (prefix + "b", prefix + "t"):
            keys = list(server.scan_iter(match=f"{p}:*", count=1000))
            if keys:
                server.delete(*keys)
        text.close()


def test_request_tokens_differ_in_forked_workers() -> None:
    import multiprocessing as mp

    from keyguard.stores import redis_ratelimit

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_token_to, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(10)
    ours = redis_ratelimit._token()
    assert theirs[:18] != ours[:18], "a forked worker draws its own token prefix"


def _token_to(queue: Any) -> None:  # pragma: no cover - runs in a forked child
    from keyguard.stores import redis_ratelimit

    queue.put(redis_ratelimit._token())


async def test_resilient_async_with_unreachable_redis() -> None:
    primary = RedisRateLimiter(url=DEAD_URL)
    lim = ResilientLimiter(primary, mode="deny", clock=Clock())
    d: RateDecision = await lim.ahit("k")
    assert d.unavailable
    assert not d.allowed
    await primary.aclose()


# -- the Redis brute-force guard -----------------------------------------------------------------


def test_redis_brute_force_guard(server: redis.Redis, prefix: str) -> None:
    guard = RedisBruteForceGuard(server, prefix=prefix, threshold=3, window=60)
    t = float(T0)
    assert guard.is_blocked("203.0.113.7", now=t) is None
    assert guard.record_failure("203.0.113.7", now=t) is None
    assert guard.record_failure("203.0.113.7", now=t + 10) is None
    assert guard.record_failure("203.0.113.7", now=t + 20) == 40
    assert guard.is_blocked("203.0.113.7", now=t + 59.5) == 1
    assert guard.is_blocked("203.0.113.7", now=t + 60) is None
    assert guard.is_blocked("198.51.100.1", now=t + 30) is None
    assert guard.is_blocked(None) is None
    assert server.pttl(guard.key("203.0.113.7")) > 0
    guard.reset("203.0.113.7")
    assert guard.is_blocked("203.0.113.7", now=t + 30) is None
    # With Redis's clock.
    for _ in range(3):
        guard.record_failure("2001:db8::1")
    assert guard.is_blocked("2001:db8::1") in (59, 60)


async def test_redis_brute_force_guard_async(prefix: str) -> None:
    reachable_or_skip()
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    guard = RedisBruteForceGuard(async_client=client, prefix=prefix, threshold=1, window=5)
    assert await guard.ais_blocked("a") is None
    assert await guard.arecord_failure("a") == 5
    await guard.areset("a")
    assert await guard.ais_blocked("a") is None
    await client.aclose()
    with pytest.raises(ConfigurationError):
        RedisBruteForceGuard(async_client=client, threshold=0)


def test_a_long_socket_timeout_stretches_the_default_budget() -> None:
    """``keyguard doctor`` asks with a 2 s timeout and no budget: one call, not an error."""
    lim = RedisRateLimiter.from_url(DEAD_URL, socket_timeout=2.0)
    assert (lim.socket_timeout, lim.budget) == (2.0, 2.0)
    assert RedisRateLimiter.from_url(DEAD_URL).budget == 0.5
    lim.close()
