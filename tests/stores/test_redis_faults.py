"""The Redis limiter when Redis misbehaves: slow for a moment, or gone.

A healthy Redis that stops answering for ~150 ms (paused with ``CLIENT PAUSE``, frozen with
SIGSTOP, or running commands at once while a proxy holds their replies back) while requests
arrive must still decide every request itself: in ``deny`` mode none
is refused for unavailability, in ``local`` mode no burst exceeds its quota, and a request
retried after a late reply is never counted twice. A Redis that is gone (killed: connections
refused) sends requests to the fallback at once and opens the breaker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from keyguard.core.ratelimit import (
    MemoryRateLimiter,
    RateDecision,
    ResilientLimiter,
    Window,
)
from keyguard.stores.redis_ratelimit import RedisRateLimiter
from tests.stores.redis_server import SlowReplies, ThrowawayRedis, import_redis

redis, _ = import_redis()

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The default budget (0.5 s) covers a 150 ms stall with room to spare on a quiet machine; a
# shared CI box running the whole suite can add hundreds of ms of scheduling delay, which is
# not what these tests are about. The first timeout is still the default 100 ms, so the
# retry path (a late reply, counted once) is exercised all the same.
SLACK = 2.0
PAUSE = 0.15


@pytest.fixture
def private_redis() -> Iterator[ThrowawayRedis]:
    srv = ThrowawayRedis()
    srv.start()
    yield srv
    srv.stop()


class Stall:
    """One way for a healthy Redis to stop answering for PAUSE seconds."""

    def __init__(self, srv: ThrowawayRedis, how: str) -> None:
        self.srv = srv
        self.how = how
        self.proxy = SlowReplies(srv.port) if how == "late-replies" else None
        self.url = self.proxy.url if self.proxy else srv.url

    def begin(self) -> Callable[[], None]:
        """Stall now; returns a function that waits until Redis answers on time again."""
        if self.proxy is not None:
            # Commands run at once; their replies arrive PAUSE late.
            proxy = self.proxy
            proxy.delay = PAUSE

            def end() -> None:
                proxy.delay = 0.0

            return end
        if self.how == "client-pause":
            self.srv.client_pause(PAUSE)
            return lambda: time.sleep(PAUSE)
        return self.srv.freeze(PAUSE).join

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()


@pytest.fixture(
    params=[
        pytest.param("client-pause", id="CLIENT-PAUSE"),
        pytest.param("sigstop", id="SIGSTOP"),
        pytest.param("late-replies", id="late-replies"),
    ]
)
def stall(request: pytest.FixtureRequest, private_redis: ThrowawayRedis) -> Iterator[Stall]:
    s = Stall(private_redis, request.param)
    yield s
    s.close()


def _through_a_pause(
    stall: Stall,
    lim: ResilientLimiter,
    bucket: str,
    windows: tuple[Window, ...],
    before: int,
    during: int,
) -> list[RateDecision]:
    """``before`` requests, then Redis stops answering and ``during`` more arrive at once from
    as many threads, while two more threads keep other keys busy (load)."""
    decisions = [lim.hit(bucket, windows) for _ in range(before)]
    # Open a connection per thread first (peeks count nothing), so the stalled requests go
    # out at once on open connections and reach Redis before their replies are late.
    warm = threading.Barrier(during)
    peekers = [
        threading.Thread(target=lambda: (warm.wait(), lim.peek(bucket, windows)))
        for _ in range(during)
    ]
    for t in peekers:
        t.start()
    for t in peekers:
        t.join(30)
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            lim.hit(f"load{i % 5}", windows)
            i += 1

    loaders = [threading.Thread(target=load) for _ in range(2)]
    for t in loaders:
        t.start()
    results: list[RateDecision] = []
    lock = threading.Lock()
    go = threading.Barrier(during + 1)

    def one() -> None:
        go.wait()
        d = lim.hit(bucket, windows)
        with lock:
            results.append(d)

    threads = [threading.Thread(target=one) for _ in range(during)]
    for t in threads:
        t.start()
    try:
        resume = stall.begin()
        go.wait()
        for t in threads:
            t.join(30)
        resume()
    finally:
        stop.set()
        for t in loaders:
            t.join(30)
    return decisions + results


def test_deny_mode_refuses_nothing_while_redis_stalls(stall: Stall) -> None:
    primary = RedisRateLimiter(url=stall.url, prefix="kgpause", budget=SLACK)
    lim = ResilientLimiter(primary, mode="deny")
    windows = (Window(1000, 60, "roomy"),)
    decisions = _through_a_pause(stall, lim, "k", windows, before=10, during=20)
    assert [d.unavailable for d in decisions].count(True) == 0, "503s while Redis was up"
    assert all(d.allowed for d in decisions)
    # Every request counted exactly once, although some were sent twice.
    assert primary.peek("k", windows).windows[0].remaining == 1000 - 30
    primary.close()


def test_local_mode_never_exceeds_a_burst_while_redis_stalls(stall: Stall) -> None:
    primary = RedisRateLimiter(url=stall.url, prefix="kgpause", budget=SLACK)
    lim = ResilientLimiter(primary, fallback=MemoryRateLimiter(), mode="local")
    windows = (Window(20, 60, "burst"),)
    decisions = _through_a_pause(stall, lim, "k", windows, before=10, during=20)
    assert not any(d.degraded for d in decisions), "Redis was reachable: no fallback"
    # Exactly the quota: more would be the fallback's fresh count, fewer a double count.
    assert sum(d.allowed for d in decisions) == 20
    primary.close()


def test_killed_redis_falls_back_at_once_and_opens_the_breaker(
    private_redis: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keyguard.ratelimit")
    primary = RedisRateLimiter(url=private_redis.url, prefix="kgkill")
    lim = ResilientLimiter(primary, fallback=MemoryRateLimiter(), mode="local")
    assert not lim.hit("k").degraded
    private_redis.kill()
    d = lim.hit("k")
    assert d.degraded
    assert d.allowed
    assert lim.state == "open", "one refused connection opens the breaker"
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    primary.close()


async def test_async_hits_with_late_replies_count_once(private_redis: ThrowawayRedis) -> None:
    proxy = SlowReplies(private_redis.port)
    primary = RedisRateLimiter(url=proxy.url, prefix="kgasync", budget=SLACK)
    lim = ResilientLimiter(primary, mode="deny")
    windows = (Window(1000, 60, "roomy"),)
    # A connection per task first, so the late requests reach Redis at once.
    await asyncio.gather(*(lim.apeek("k", windows) for _ in range(20)))
    proxy.delay = PAUSE
    decisions = await asyncio.gather(*(lim.ahit("k", windows) for _ in range(20)))
    proxy.delay = 0.0
    assert not any(d.unavailable for d in decisions)
    assert all(d.allowed for d in decisions)
    assert primary.stats["retries"] > 0, "the replies were late: requests were sent twice"
    assert (await primary.apeek("k", windows)).windows[0].remaining == 1000 - 20
    await primary.aclose()
    proxy.close()
