"""verify_nowait: the answers it gives without awaiting are the ones averify gives, it never
does I/O, and it stands aside (``None``) whenever the answer needs the store, a remote guard or
a remote limiter."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.decision import Decision
from keyguard.core.errors import ErrorCode
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.scopes import all_of
from keyguard.core.verifier import Verifier
from tests.core.test_verifier import CountingStore, make
from tests.keyfactory import KeyFactory


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def factory(store: CountingStore) -> KeyFactory:
    return KeyFactory(store)


POLICY = RoutePolicy({"GET /agents": "agents:read", "GET /open": "public"})
PEER = ("203.0.113.7", 4000)


def limiter() -> MemoryRateLimiter:
    # The same fake clock for twin verifiers: their limiters decide alike.
    return MemoryRateLimiter(clock=itertools.count(1_700_000_000.0, 0.25).__next__)


def twins(store: CountingStore, **options: Any) -> tuple[Verifier, Verifier]:
    options.setdefault("policy", POLICY)
    options.setdefault("cache_ttl", 60)
    options.setdefault("negative_cache_ttl", 60)
    # Each twin its own limiter and guard (10 failures a minute: the runs below cross it).
    return (
        make(store, limiter=limiter(), brute_force=BruteForceGuard(10, 60.0), **options),
        make(store, limiter=limiter(), brute_force=BruteForceGuard(10, 60.0), **options),
    )


def summary(decision: Decision) -> tuple[Any, ...]:
    return (
        decision.allowed,
        decision.code,
        decision.detail,
        decision.retry_after,
        decision.required,
        decision.headers,
        None if decision.principal is None else decision.principal.key_id,
    )


async def nowait_first(v: Verifier, header: Any, path: str, peer: Any) -> Decision:
    decision = v.verify_nowait(header, "GET", path, peer=peer)
    if decision is None:
        decision = await v.averify(header, "GET", path, peer=peer)
    return decision


def test_nowait_then_averify_answers_as_averify_alone(
    store: CountingStore, factory: KeyFactory
) -> None:
    reader = factory.issue("agents:read")
    narrow = factory.issue("tasks:read")
    revoked = factory.issue("agents:read", revoked_at=1.0)
    unknown = f"UserKey {factory.format.generate().plaintext}"
    requests = [
        (reader.header, "/agents"),
        (narrow.header, "/agents"),
        (None, "/agents"),
        ("Bearer x", "/agents"),
        ("UserKey not-a-key", "/agents"),
        (unknown, "/agents"),
        (revoked.header, "/agents"),
        (f"userkey  {reader.plaintext}", "/agents"),  # not the canonical spelling
        ("UserKey " + reader.plaintext[:-1] + "x", "/agents"),  # wrong checksum
        (reader.header, "/open"),
        ([reader.header, reader.header], "/agents"),
    ]
    fast, plain = twins(store)

    async def run() -> None:
        # The first pass fills the caches, the next ones hit them; three guesses a pass block
        # the address from the fourth pass on (the twins must agree on every 429 too).
        for _ in range(12):
            for header, path in requests:
                a = await nowait_first(fast, header, path, PEER)
                b = await plain.averify(header, "GET", path, peer=PEER)
                assert summary(a) == summary(b), (header, path)

    asyncio.run(run())
    blocked = fast.verify_nowait("UserKey not-a-key", "GET", "/agents", peer=PEER)
    assert blocked is not None
    assert blocked.code is ErrorCode.RATE_LIMITED


@pytest.mark.parametrize(
    "header",
    [None, "Bearer x", "UserKey not-a-key", ["UserKey a", "UserKey b"], "UserKey " + "a" * 600],
    ids=["missing", "other-scheme", "malformed", "two-values", "too-long"],
)
def test_malformed_requests_are_settled_without_the_store(
    store: CountingStore, header: Any
) -> None:
    v = make(store, policy=POLICY)
    decision = v.verify_nowait(header, "GET", "/agents", peer=PEER)
    assert decision is not None
    assert not decision.allowed
    assert store.gets == 0


def test_a_store_read_is_left_to_averify_and_spends_no_budget(
    store: CountingStore, factory: KeyFactory
) -> None:
    budget = LookupBudget(60, 60.0)
    v = make(store, policy=POLICY, unknown_id_budget=budget)
    unknown = f"UserKey {factory.format.generate().plaintext}"
    assert v.verify_nowait(unknown, "GET", "/agents", peer=PEER) is None
    assert store.gets == 0
    assert len(budget) == 0  # nothing taken: averify takes it when it reads the store
    assert not v.verify(unknown, "GET", "/agents", peer=PEER).allowed
    assert store.gets == 1
    assert len(budget) == 1
    # Now known to be unknown: settled from the negative cache, no read.
    denial = v.verify_nowait(unknown, "GET", "/agents", peer=PEER)
    assert denial is not None
    assert denial.code is ErrorCode.INVALID_API_KEY
    assert store.gets == 1


def test_without_a_peer_only_the_fast_path_answers(
    store: CountingStore, factory: KeyFactory
) -> None:
    v = make(store, policy=POLICY)
    assert v.verify_nowait("UserKey not-a-key", "GET", "/agents") is None
    key = factory.issue("agents:read")
    assert v.verify_nowait(key.header, "GET", "/agents") is None  # not indexed yet
    assert v.verify(key.header, "GET", "/agents").allowed
    assert v.verify_nowait(key.header, "GET", "/agents") is not None


class RemoteGuard(BruteForceGuard):
    """A guard that (as a Redis one would) cannot be asked without I/O."""

    in_process = False  # type: ignore[misc]


class RemoteLimiter(MemoryRateLimiter):
    in_process = False  # type: ignore[misc]


def test_a_remote_guard_leaves_denials_to_averify(store: CountingStore) -> None:
    v = make(store, policy=POLICY, brute_force=RemoteGuard())
    assert v.verify_nowait("UserKey not-a-key", "GET", "/agents", peer=PEER) is None
    v = make(store, policy=POLICY, brute_force=None)
    assert v.verify_nowait("UserKey not-a-key", "GET", "/agents", peer=PEER) is not None


def test_a_remote_limiter_leaves_the_request_to_averify_before_any_work(
    store: CountingStore, factory: KeyFactory
) -> None:
    key = factory.issue("agents:read")
    v = make(store, policy=POLICY, limiter=RemoteLimiter())
    assert v.verify(key.header, "GET", "/agents").allowed
    calls: list[object] = []
    v._index = _Spy(v._index, calls)
    assert v.verify_nowait(key.header, "GET", "/agents", peer=PEER) is None
    assert calls == []  # not even the index was read
    assert v.verify_nowait(key.header, "GET", "/open") is not None  # public: no limit


class _Spy(dict):  # type: ignore[type-arg]
    def __init__(self, inner: dict[bytes, Any], calls: list[object]) -> None:
        super().__init__(inner)
        self.calls = calls

    def get(self, key: Any, default: Any = None) -> Any:
        self.calls.append(key)
        return super().get(key, default)


def test_required_is_checked_before_the_rate_limit(
    store: CountingStore, factory: KeyFactory
) -> None:
    key = factory.issue("agents:read")
    v = make(store, policy=POLICY, rate_limits="2/minute", limiter=limiter())
    assert v.verify(key.header, "GET", "/agents").allowed  # indexed; one unit spent
    for _ in range(5):
        refused = v.verify_nowait(key.header, "GET", "/agents", required="agents:write")
        assert refused is not None
        assert refused.code is ErrorCode.INSUFFICIENT_SCOPE
    # The 403s consumed nothing: one unit is left.
    assert v.verify_nowait(key.header, "GET", "/agents").allowed  # type: ignore[union-attr]
    last = v.verify_nowait(key.header, "GET", "/agents")
    assert last is not None
    assert last.code is ErrorCode.RATE_LIMITED
    allowed = v.verify_nowait(
        key.header, "GET", "/open", required=all_of("agents:read")
    )  # public route but a requirement: averify decides
    assert allowed is None


def test_a_cached_keys_own_restrictions_apply_with_a_peer(
    store: CountingStore, factory: KeyFactory
) -> None:
    key = factory.issue("agents:read", allowed_networks=("198.51.100.0/24",))
    v = make(store, policy=POLICY, cache_ttl=60)
    assert v.verify(key.header, "GET", "/agents", peer=("198.51.100.9", 1)).allowed
    assert v.verify_nowait(key.header, "GET", "/agents") is None  # needs the address
    inside = v.verify_nowait(key.header, "GET", "/agents", peer=("198.51.100.9", 1))
    outside = v.verify_nowait(key.header, "GET", "/agents", peer=PEER)
    assert inside is not None
    assert inside.allowed
    assert outside is not None
    assert outside.code is ErrorCode.NETWORK_NOT_ALLOWED
