"""The verifier at its edges: exact boundaries of stale_if_error, which address an early failure
is counted under, what invalidate() forgets, the cache counters, the lookup budget's refund,
and the guard's 429 decision as the verifier builds it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyguard.core import authn
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.decision import Decision
from keyguard.core.errors import ErrorCode, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keycache import CacheStats
from keyguard.core.keys import KeyFormat
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.policy import PUBLIC, RoutePolicy
from keyguard.core.records import KeyRecord
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.core.test_timing import NOW as TIMING_NOW
from tests.core.test_timing import classes as timing_classes
from tests.keyfactory import KeyFactory


class Store(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []
        self.fail = False

    def get(self, key_id: str) -> KeyRecord | None:
        self.gets.append(key_id)
        if self.fail:
            raise StoreUnavailable("down")
        return super().get(key_id)


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(store: Store, **kw: Any) -> Verifier:
    kw.setdefault("hasher", Hasher(pepper_from_env=False))
    kw.setdefault("rate_limits", None)
    return Verifier(store, **kw)


# -- the guard's 429, as the verifier builds it ----------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [(0, 1), (1, 1), (2, 2), (58, 58)])
def test_blocked_failure_is_the_whole_429(given: int, expected: int) -> None:
    failure = Decision(False, None, ErrorCode.INVALID_API_KEY, "no")
    assert authn.blocked(None, failure) is failure
    assert authn.blocked(given, failure) == Decision(
        False,
        None,
        ErrorCode.RATE_LIMITED,
        "Too many failed authentication attempts from this address.",
        retry_after=expected,
    )
    assert authn.blocked(given, failure).allowed is False


# -- an early failure is counted under the client's own address ----------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["verify", "averify"])
def test_malformed_guesses_count_against_the_address_that_sent_them(sync: bool) -> None:
    """A failure found before any store read (a bad checksum) is still counted under the
    client's address, resolved from the peer and X-Forwarded-For as configured: one
    address's guesses block that address only."""
    guard = BruteForceGuard(threshold=2, window=60, clock=Clock())
    v = make(Store(), brute_force=guard, trusted_proxies=1)
    good = KeyFormat().generate().plaintext
    bad = "UserKey " + good[:-1] + ("A" if good[-1] != "A" else "B")

    def check(peer: Any, xff: str | None) -> Decision:
        if sync:
            return v.verify(bad, peer=peer, forwarded_for=xff)
        return asyncio.run(v.averify(bad, peer=peer, forwarded_for=xff))

    codes = [check(("10.0.0.1", 443), "198.51.100.7").code for _ in range(3)]
    assert codes == [ErrorCode.INVALID_API_KEY_FORMAT] * 2 + [ErrorCode.RATE_LIMITED]
    assert guard.is_blocked("198.51.100.7") is not None
    assert guard.is_blocked("10.0.0.1") is None
    assert guard.is_blocked(None) is None
    # Another client behind the same proxy is not blocked.
    assert check(("10.0.0.1", 443), "198.51.100.8").code is ErrorCode.INVALID_API_KEY_FORMAT
    # Without a forwarded header the peer is the client.
    for _ in range(2):
        assert check("203.0.113.5", None).code is ErrorCode.INVALID_API_KEY_FORMAT
    assert guard.is_blocked("203.0.113.5") is None
    assert check("203.0.113.5", None).code is ErrorCode.RATE_LIMITED
    assert guard.is_blocked("203.0.113.5") is not None
    assert guard.is_blocked(None) is None  # nothing went to the shared "unknown" bucket


# -- stale_if_error: its bounds, exactly -----------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["verify", "averify"])
def test_stale_if_error_bounds_are_exact(sync: bool) -> None:
    store = Store()
    key = KeyFactory(store).issue()
    clock = Clock()

    # Two spaces: a spelling the fast-path index never holds, so the record cache answers.
    header = f"UserKey  {key.plaintext}"

    def check(v: Verifier) -> Decision:
        return v.verify(header) if sync else asyncio.run(v.averify(header))

    off = make(store, cache_ttl=1.0, monotonic=clock)
    on = make(store, cache_ttl=1.0, monotonic=clock, stale_if_error=1)
    for v in (off, on):
        assert check(v).allowed
    store.fail = True
    # The record stops being fresh at exactly 1 s: the store is asked, and it is down.
    clock.now += 1.0
    assert check(off).code is ErrorCode.AUTH_UNAVAILABLE  # no stale window at all
    assert check(on).allowed
    clock.now += 1.0  # exactly stale_if_error past freshness: still served
    assert check(on).allowed
    clock.now += 0.001
    assert check(on).code is ErrorCode.AUTH_UNAVAILABLE


# -- invalidate() ---------------------------------------------------------------------------------


def test_invalidate_forgets_one_key_or_all() -> None:
    store = Store()
    factory = KeyFactory(store)
    a, b = factory.issue(), factory.issue()
    v = make(store, cache_ttl=3600, monotonic=Clock())
    for key in (a, b):
        assert v.authenticate(f"UserKey  {key.plaintext}").allowed  # not indexed: cache only
    assert store.gets == [a.key_id, b.key_id]
    v.invalidate(a.key_id)
    for key in (a, b):
        assert v.authenticate(f"UserKey  {key.plaintext}").allowed
    assert store.gets == [a.key_id, b.key_id, a.key_id]  # b came from the cache
    v.invalidate()
    for key in (a, b):
        assert v.authenticate(f"UserKey  {key.plaintext}").allowed
    assert store.gets[3:] == [a.key_id, b.key_id]


# -- cache counters -------------------------------------------------------------------------------


def test_cache_stats_count_every_kind_of_answer() -> None:
    store = Store()
    key = KeyFactory(store).issue()
    v = make(store, cache_ttl=3600, negative_cache_ttl=3600, monotonic=Clock())
    assert v.cache_stats() == CacheStats(0, 0, 0, 0, 0, 0)
    assert v.cache_stats().hit_ratio is None
    assert v.authenticate(key.header).allowed  # a miss: read, cached and indexed
    assert v.authenticate(key.header).allowed  # the index answers
    assert v.authenticate(f"UserKey  {key.plaintext}").allowed  # the record cache answers
    unknown = "UserKey " + KeyFormat().generate().plaintext
    assert v.authenticate(unknown).code is ErrorCode.INVALID_API_KEY  # a miss
    assert v.authenticate(unknown).code is ErrorCode.INVALID_API_KEY  # known-unknown: a hit
    stats = v.cache_stats()
    assert stats == CacheStats(index_hits=1, hits=2, misses=2, records=1, unknown=1, indexed=1)
    assert stats.hit_ratio == 3 / 5


# -- the lookup budget ----------------------------------------------------------------------------


def test_a_refund_gives_back_exactly_one_lookup() -> None:
    budget = LookupBudget(3, 60.0, clock=Clock())
    assert budget.take("a")
    assert budget.take("a")
    budget.refund("a")  # the second id existed
    assert budget.take("a")
    assert budget.take("a")
    assert not budget.take("a")  # 3 taken for unknown ids: spent
    budget.refund("never-seen")  # nothing to give back
    assert len(budget) == 1
    budget.refund(None)


# -- verify_nowait's defaults ---------------------------------------------------------------------


def test_verify_nowait_defaults_to_get_slash() -> None:
    policy = RoutePolicy({"GET /": PUBLIC}, default="deny")
    v = make(Store(), policy=policy)
    assert v.verify_nowait(None) == v.verify_nowait(None, "GET", "/")
    decision = v.verify_nowait(None)
    assert decision is not None
    assert decision.allowed
    assert decision.principal is None
    refused = v.verify_nowait(None, "POST", "/")
    assert refused is None or not refused.allowed


# -- the same digest work for every kind of key id (what test_timing.py measures, counted) ------


@pytest.mark.parametrize("pepper", [None, "p" * 32], ids=["sha256", "hmac"])
def test_every_kind_of_id_does_the_same_digest_work(pepper: str | None) -> None:
    """A wrong secret costs two digest comparisons, with the configured algorithm, whatever
    its key id is: unknown, or a key active, rotated (in or past its grace), revoked (with or
    without a previous secret) or expired. Counted, not timed, so it holds under any load."""
    calls: list[str] = []

    class Spy(Hasher):
        def verify(self, key: str, stored: str) -> bool:
            calls.append(stored.partition("$")[0])
            return super().verify(key, stored)

    hasher = Spy(pepper=pepper, pepper_from_env=False)
    store = MemoryStore()
    headers = timing_classes(store, hasher)
    v = Verifier(store, hasher=hasher, rate_limits=None, clock=lambda: TIMING_NOW)
    tag = "sha256" if pepper is None else "hmac-sha256"
    for name, hs in headers.items():
        for header in hs:
            for _ in range(2):  # a store read, then the cache
                calls.clear()
                assert v.authenticate(header).code is ErrorCode.INVALID_API_KEY, name
                assert calls == [tag, tag], name
