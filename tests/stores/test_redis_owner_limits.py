"""Per-owner rate limits in Redis: ``hit_pair`` decides exactly as :func:`decide_pair`, in one
round trip, with a key's and its owner's state in one Cluster slot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import (
    MemoryRateLimiter,
    RateDecision,
    RateLimiter,
    RateState,
    ResilientLimiter,
    Window,
    decide_pair,
    rate_limit_headers,
)
from keyguard.stores.redis_ratelimit import RedisRateLimiter
from tests.stores.redis_server import REDIS_URL, ThrowawayRedis, import_redis, reachable_or_skip

redis, redis_asyncio = import_redis()

pytestmark = pytest.mark.redis

T0 = 1_700_000_000


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    reachable_or_skip()
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def _drop(server: redis.Redis, name: str) -> None:
    keys = list(server.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        server.delete(*keys)


@pytest.fixture
def limiter(server: redis.Redis) -> Iterator[RedisRateLimiter]:
    name = "kgtest" + uuid.uuid4().hex[:10]
    yield RedisRateLimiter(server, prefix=name)
    _drop(server, name)


@pytest.fixture(scope="module")
def module_limiter(server: redis.Redis) -> Iterator[RedisRateLimiter]:
    name = "kgtest" + uuid.uuid4().hex[:10]
    yield RedisRateLimiter(server, prefix=name)
    _drop(server, name)


@pytest.fixture
async def alimiter(server: redis.Redis) -> AsyncIterator[RedisRateLimiter]:
    name = "kgtest" + uuid.uuid4().hex[:10]
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    yield RedisRateLimiter(async_client=client, prefix=name)
    await client.aclose()
    _drop(server, name)


# -- the differential test -----------------------------------------------------------------------

exact_window = st.tuples(st.integers(1, 6), st.sampled_from([1, 5, 10, 60, 3600]))
long_window = st.tuples(st.integers(1, 12), st.sampled_from([7200, 86400]))
owner_exact = st.tuples(st.integers(2, 12), st.sampled_from([1, 5, 10, 60, 3600]))
owner_long = st.tuples(st.integers(2, 20), st.sampled_from([7200, 86400]))


def window_sets(kinds: Any) -> Any:
    return st.lists(kinds, min_size=1, max_size=3).map(
        lambda ws: tuple(Window(limit, period, f"w{i}") for i, (limit, period) in enumerate(ws))
    )


steps = st.sampled_from(
    [0, 0.001, 0.25, 0.5, 1, 1, 2, 7, 59, 61, 899, 900, 3600, 7200, 86400, -1, -30]
)
trace = st.lists(
    st.tuples(st.integers(0, 2), steps, st.sampled_from([1, 1, 1, 2, 3, 13])),
    min_size=1,
    max_size=40,
)


def replay(
    lim: RedisRateLimiter,
    owner: str,
    key_windows: list[tuple[Window, ...]],
    owner_windows: tuple[Window, ...],
    events: list[Any],
) -> int:
    """Replays ``(key, step, cost)`` through Redis and decide_pair(); returns admissions."""
    key_states: list[RateState | None] = [None] * len(key_windows)
    owner_state: RateState | None = None
    t = T0 + 0.123457
    admitted = 0
    for k, step, cost in events:
        t += step
        expected, key_states[k], owner_state = decide_pair(
            key_states[k], owner_state, t, cost, key_windows[k], owner_windows
        )
        got = lim.hit_pair(f"key{k}", key_windows[k], owner, owner_windows, cost, now=t)
        assert got == expected, (t, k, cost)
        assert rate_limit_headers(got) == rate_limit_headers(expected)
        admitted += got.allowed
    return admitted


@settings(database=None, deadline=None, max_examples=60)
@given(
    key_windows=st.lists(window_sets(st.one_of(exact_window, long_window)), min_size=3, max_size=3),
    owner_windows=window_sets(st.one_of(owner_exact, owner_long)),
    events=trace,
)
def test_redis_and_memory_agree_on_generated_pair_traces(
    module_limiter: RedisRateLimiter,
    key_windows: list[tuple[Window, ...]],
    owner_windows: tuple[Window, ...],
    events: list[Any],
) -> None:
    replay(module_limiter, "owner:" + uuid.uuid4().hex, key_windows, owner_windows, events)


def test_redis_and_memory_agree_on_a_dense_default_trace(limiter: RedisRateLimiter) -> None:
    import random

    rng = random.Random(11)
    key = (Window(20, 10, "burst"), Window(100, 60, "minute"), Window(5000, 86400, "day"))
    owner = (Window(50, 10, "burst"), Window(150, 60, "minute"), Window(8000, 86400, "day"))
    events = [
        (rng.randrange(3), rng.choice([0, 0.01, 0.1, 0.3, 1, 5, 50, 1000]), rng.choice([1, 2]))
        for _ in range(1200)
    ]
    assert replay(limiter, "owner:acme", [key] * 3, owner, events) > 100


# -- keys, slots, round trips --------------------------------------------------------------------

KEY = (Window(5, 60, "minute"),)
OWNER = (Window(3, 60, "minute"),)


def test_pair_keys_share_one_cluster_slot_and_hold_no_secret(limiter: RedisRateLimiter) -> None:
    from redis.crc import key_slot

    keys = limiter.pair_keys("3F9aQ2xLm7Pw", "owner:acme")
    p = limiter.prefix
    assert keys == [
        f"{p}:rl:{{owner:acme}}:k:3F9aQ2xLm7Pw:log",
        f"{p}:rl:{{owner:acme}}:k:3F9aQ2xLm7Pw:state",
        f"{p}:rl:{{owner:acme}}:log",
        f"{p}:rl:{{owner:acme}}:state",
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    # The owner's keys are the ones a plain hit on the owner bucket uses.
    assert keys[2:] == limiter.keys("owner:acme")
    for key, owner in (("a{b", "o"), ("k", "a}b"), ("", "o"), ("k", ""), ("a b", "o"), ("x", "x")):
        with pytest.raises(ConfigurationError):
            limiter.pair_keys(key, owner)
        with pytest.raises(ConfigurationError):
            limiter.hit_pair(key, KEY, owner, OWNER)


@pytest.mark.parametrize("cost", [0, -2, True])
def test_bad_cost_is_misuse(limiter: RedisRateLimiter, cost: int) -> None:
    with pytest.raises(ConfigurationError):
        limiter.hit_pair("k", KEY, "owner:o", OWNER, cost)


def test_owner_limit_across_keys_with_redis_clock(
    limiter: RedisRateLimiter, server: redis.Redis
) -> None:
    assert isinstance(limiter, RateLimiter)
    got = [limiter.hit_pair(k, KEY, "owner:acme", OWNER) for k in ("a", "b", "a", "b")]
    assert [d.allowed for d in got] == [True, True, True, False]
    refused = got[-1]
    assert refused.retry_after is not None
    assert 59 <= refused.retry_after <= 60
    assert [w.name for w in refused.violated] == ["owner-minute"]
    # A refusal consumed nothing: the key's log still holds only its admitted unit.
    log_b = limiter.pair_keys("b", "owner:acme")[0]
    assert server.zcard(log_b) == 1
    assert server.zcard(limiter.pair_keys("b", "owner:acme")[2]) == 3
    assert limiter.hit_pair("c", KEY, "owner:other", OWNER).allowed
    assert limiter.hit("b", KEY).allowed, "the key alone lives in other Redis keys"
    # Each key outlives a hit by its retention (the minute and a second), plus half of that
    # as slack (so that the TTLs need not be set again on every hit).
    for key in limiter.pair_keys("a", "owner:acme"):
        assert 61_000 - 5_000 < server.pttl(key) <= 61_000 + 30_500


async def test_async_pair_agrees_with_decide_pair(alimiter: RedisRateLimiter) -> None:
    ks: RateState | None = None
    os_: RateState | None = None
    t = T0 + 0.5
    for i in range(30):
        t += 0.7
        expected, ks, os_ = decide_pair(ks, os_, t, 1 + i % 2, KEY, OWNER)
        got = await alimiter.ahit_pair("k", KEY, "owner:o", OWNER, 1 + i % 2, now=t)
        assert got == expected
    with pytest.raises(ConfigurationError):
        alimiter.hit_pair("k", KEY, "owner:o", OWNER)  # no sync client


def test_one_round_trip_per_pair(private_redis: ThrowawayRedis) -> None:
    client = redis.Redis(port=private_redis.port)
    lim = RedisRateLimiter(client, prefix="kgrt")
    lim.hit_pair("warm", KEY, "owner:warm", OWNER)  # loads the script, opens the connection

    sent = 0
    conn = client.connection_pool.get_connection()
    client.connection_pool.release(conn)
    original = type(conn).send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal sent
        sent += 1
        return original(self, *args, **kwargs)

    def calls(stats: dict[str, Any], command: str) -> int:
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    before = client.info("commandstats")
    n = 200
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(conn), "send_packed_command", counting)
        for i in range(n):
            lim.hit_pair(f"rt{i % 7}", KEY, f"owner:o{i % 3}", OWNER, cost=1 + i % 2)
    after = client.info("commandstats")
    assert sent == n
    assert calls(after, "evalsha") - calls(before, "evalsha") == n
    for command in ("eval", "script"):
        assert calls(after, command) == calls(before, command)
    client.close()


@pytest.fixture
def private_redis(server: redis.Redis) -> Iterator[ThrowawayRedis]:
    srv = ThrowawayRedis()
    srv.start()
    yield srv
    srv.stop()


def test_script_flush_is_invisible(limiter: RedisRateLimiter, server: redis.Redis) -> None:
    assert limiter.hit_pair("a", KEY, "owner:f", OWNER, now=T0).allowed
    server.script_flush()
    assert limiter.hit_pair("b", KEY, "owner:f", OWNER, now=T0 + 1).allowed
    d = limiter.hit_pair("a", KEY, "owner:f", OWNER, cost=2, now=T0 + 2)
    assert not d.allowed
    assert d.retry_after == 58


def test_resilient_pair_falls_back_when_redis_is_down() -> None:
    lim = RedisRateLimiter(url="redis://127.0.0.1:1/0", socket_timeout=0.05)
    resilient = ResilientLimiter(lim, fallback=MemoryRateLimiter())
    d: RateDecision = resilient.hit_pair("a", KEY, "owner:acme", OWNER)
    assert d.allowed
    assert d.degraded
    assert [w.name for w in d.windows] == ["minute", "owner-minute"]
    lim.close()
