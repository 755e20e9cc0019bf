"""Clock steps (issue 7, item 11): within one process, the time used for expiry and rotation grace
never goes backwards, so a wall clock stepped back cannot revive an expired key or an old
secret whose grace has ended."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from keyguard.core.clock import WALL, Ratchet, ratchet
from keyguard.core.errors import ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import KeyFactory


class Wall:
    """A wall clock an operator (or NTP) can step."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def make(store: MemoryStore, wall: Wall, **kw: object) -> Verifier:
    return Verifier(
        store,
        hasher=Hasher(pepper_from_env=False),
        rate_limits=None,
        cache_ttl=0,  # every request judged against the store's record: the slow path
        clock=wall,
        **kw,  # type: ignore[arg-type]
    )


def test_an_expired_key_stays_expired_when_the_clock_steps_back() -> None:
    wall, store = Wall(), MemoryStore()
    key = KeyFactory(store).issue(expires_at=wall.now + 60)
    v = make(store, wall)
    assert v.verify(key.header).allowed
    wall.now += 61
    assert v.verify(key.header).code is ErrorCode.EXPIRED_API_KEY
    wall.now -= 3600  # the clock steps back an hour
    assert v.verify(key.header).code is ErrorCode.EXPIRED_API_KEY
    assert asyncio.run(v.averify(key.header)).code is ErrorCode.EXPIRED_API_KEY
    assert v.authenticate(key.header).code is ErrorCode.EXPIRED_API_KEY


def test_an_old_secret_stays_refused_when_the_clock_steps_back() -> None:
    wall, store = Wall(), MemoryStore()
    factory = KeyFactory(store)
    old = factory.issue()
    new = factory.rotate(old, grace_until=wall.now + 60)
    v = make(store, wall)
    assert v.verify(old.header).allowed
    wall.now += 61
    assert v.verify(old.header).code is ErrorCode.INVALID_API_KEY
    wall.now -= 3600
    assert v.verify(old.header).code is ErrorCode.INVALID_API_KEY
    assert asyncio.run(v.averify(old.header)).code is ErrorCode.INVALID_API_KEY
    assert v.verify(new.header).allowed


def test_a_step_back_before_first_use_is_not_seen_but_later_ones_are() -> None:
    """The ratchet starts at the first reading: what it guarantees is "never backwards from
    what this process has seen"."""
    wall, store = Wall(), MemoryStore()
    key = KeyFactory(store).issue(expires_at=wall.now + 60)
    v = make(store, wall)
    wall.now += 120
    v.verify(key.header)  # the process has now seen t0 + 120
    wall.now -= 100  # t0 + 20, before expiry on the wall clock
    assert v.verify(key.header).code is ErrorCode.EXPIRED_API_KEY


def test_last_used_never_goes_backwards_either() -> None:
    wall, store = Wall(), MemoryStore()
    key = KeyFactory(store).issue()
    v = make(store, wall, touch_interval=0)
    v.verify(key.header)
    first = store.get(key.key_id)
    assert first is not None
    assert first.last_used_at == wall.now
    wall.now -= 3600
    v.verify(key.header)
    again = store.get(key.key_id)
    assert again is not None
    assert again.last_used_at == first.last_used_at


# -- Ratchet ---------------------------------------------------------------------------------
def test_ratchet_holds_the_latest_time_and_follows_it_forward() -> None:
    wall = Wall()
    r = Ratchet(wall)
    assert r() == wall.now
    start = wall.now
    wall.now -= 10
    assert r() == start
    wall.now = start + 5
    assert r() == start + 5
    assert repr(r).startswith("Ratchet(")


def test_ratchet_logs_a_step_back_once(caplog: pytest.LogCaptureFixture) -> None:
    wall = Wall()
    r = Ratchet(wall)
    r()
    caplog.set_level(logging.WARNING, logger="keyguard.clock")
    wall.now -= 0.5  # jitter: held, not logged
    r()
    assert caplog.records == []
    wall.now -= 3600
    for _ in range(5):
        r()
    assert len(caplog.records) == 1
    assert "stepped back by 3600.5 s" in caplog.records[0].getMessage()
    wall.now += 10_000  # caught up; a new step is a new incident
    r()
    wall.now -= 100
    r()
    assert len(caplog.records) == 2


def test_ratchet_is_monotonic_across_threads() -> None:
    values = iter(range(1_000_000, 0, -1))  # a clock that only goes backwards
    lock = threading.Lock()

    def backwards() -> float:
        with lock:
            return float(next(values))

    r = Ratchet(backwards)
    seen: list[list[float]] = [[] for _ in range(8)]

    def work(out: list[float]) -> None:
        for _ in range(2_000):
            out.append(r())

    threads = [threading.Thread(target=work, args=(s,)) for s in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in seen:
        assert s == sorted(s)
        assert set(s) == {1_000_000.0}


def test_ratchet_helper() -> None:
    assert ratchet(time.time) is WALL
    r = Ratchet()
    assert ratchet(r) is r
    wall = Wall()
    assert isinstance(ratchet(wall), Ratchet)
    assert WALL() <= time.time() + 1


def test_the_verifier_uses_the_process_ratchet_by_default() -> None:
    v = Verifier(MemoryStore(), hasher=Hasher(pepper_from_env=False))
    assert v._clock is WALL
    wall = Wall()
    assert isinstance(make(MemoryStore(), wall)._clock, Ratchet)
