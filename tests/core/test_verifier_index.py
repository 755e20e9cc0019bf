"""The fast-path index: only the canonical spelling of a key is indexed, at most two digests per
record, never for a refused request; header variants cannot grow memory (issue 7, item 3)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import sys
import tracemalloc
from collections.abc import Iterator
from hashlib import blake2s
from typing import Any

import pytest

from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.core.errors import ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.keycache import MAX_SPELLINGS
from keyguard.core.policy import RoutePolicy
from keyguard.core.verifier import Verifier
from tests.core.test_verifier import Clock, CountingStore, make
from tests.keyfactory import KeyFactory


def variants(plaintext: str) -> Iterator[str]:
    """51,200 spellings of one key: every letter case of the scheme x 1-20 spaces between the
    scheme and the key x 0-19 trailing spaces (the canonical spelling is one of them)."""
    for letters in itertools.product(*((c.lower(), c.upper()) for c in "userkey")):
        scheme = "".join(letters)
        for between in range(1, 21):
            for trailing in range(20):
                yield scheme + " " * between + plaintext + " " * trailing


def digest(header: str) -> bytes:
    return blake2s(header.encode()).digest()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def factory(store: CountingStore) -> KeyFactory:
    return KeyFactory(store)


def test_the_canonical_spelling_is_indexed_and_answered_without_hashing(
    store: CountingStore, factory: KeyFactory
) -> None:
    key = factory.issue()
    v = make(store, cache_ttl=60, rate_limits=None)
    assert v.verify(key.header).allowed
    assert set(v._index) == {digest(key.header)}
    calls: list[str] = []

    class Spy(Hasher):
        def verify(self, key: str, stored: str) -> bool:
            calls.append(stored)
            return super().verify(key, stored)

    v.hasher = Spy(pepper_from_env=False)
    assert v.verify(key.header).allowed  # str
    assert v.verify(key.header.encode()).allowed  # bytes, the same digest
    assert v.verify_nowait(key.header) is not None
    assert calls == []
    assert store.gets == 1


@pytest.mark.parametrize(
    "spelling",
    ["userkey {}", "USERKEY {}", "UserKey  {}", " UserKey {}", "UserKey {} ", "uSeRkEy   {}  "],
)
def test_other_spellings_are_accepted_but_never_indexed(
    store: CountingStore, factory: KeyFactory, spelling: str
) -> None:
    key = factory.issue()
    v = make(store, cache_ttl=60, rate_limits=None)
    header = spelling.format(key.plaintext)
    for _ in range(3):
        assert v.verify(header).allowed
        assert asyncio.run(v.averify(header)).allowed
        assert v.authenticate(header).allowed
        assert asyncio.run(v.aauthenticate(header)).allowed
        assert v.verify_nowait(header) is None  # never a fast-path answer
    assert v._index == {}
    assert store.gets == 1  # the record itself is cached


def test_a_key_over_its_limit_is_indexed_once_and_refused_from_the_fast_path(
    store: CountingStore, factory: KeyFactory
) -> None:
    """The index holds authentication only; the rate limit applies on the fast path too. So a
    refused request may index its key (once: the canonical spelling), and the refusals that
    follow cost no digest computation."""
    key = factory.issue(rate_limit="1/day")
    v = make(store, cache_ttl=60)
    assert v.verify(key.header).allowed
    v.invalidate(key.key_id)
    assert v._index == {}
    for _ in range(50):
        assert v.verify(key.header).code is ErrorCode.RATE_LIMITED
        assert asyncio.run(v.averify(key.header)).code is ErrorCode.RATE_LIMITED
        refused = v.verify_nowait(key.header)
        assert refused is not None
        assert refused.code is ErrorCode.RATE_LIMITED
    assert set(v._index) == {digest(key.header)}


def test_a_key_without_the_scope_is_refused_from_the_fast_path(
    store: CountingStore, factory: KeyFactory
) -> None:
    calls: list[str] = []

    class Spy(Hasher):
        def verify(self, key: str, stored: str) -> bool:
            calls.append(stored)
            return super().verify(key, stored)

    key = factory.issue("agents:read")
    policy = RoutePolicy({"GET /a": "agents:write", "GET /b": "agents:read"})
    v = make(store, cache_ttl=60, policy=policy, hasher=Spy(pepper_from_env=False))
    assert v.verify(key.header, "GET", "/a").code is ErrorCode.INSUFFICIENT_SCOPE
    assert set(v._index) == {digest(key.header)}
    calls.clear()
    for _ in range(3):
        assert v.verify(key.header, "GET", "/a").code is ErrorCode.INSUFFICIENT_SCOPE
        assert asyncio.run(v.averify(key.header, "GET", "/a")).code is (
            ErrorCode.INSUFFICIENT_SCOPE
        )
        fast = v.verify_nowait(key.header, "GET", "/a")
        assert fast is not None
        assert fast.code is ErrorCode.INSUFFICIENT_SCOPE
        assert v.verify(key.header, "GET", "/a", required="agents:read").code is (
            ErrorCode.INSUFFICIENT_SCOPE
        )
        assert v.verify(key.header, "GET", "/b").allowed
        assert v.verify(key.header, "GET", "/b", required="agents:write").code is (
            ErrorCode.INSUFFICIENT_SCOPE
        )
    assert calls == []  # every answer from the fast path, scopes checked each time
    assert len(v._index) == 1


def test_at_most_two_digests_per_record(store: CountingStore, factory: KeyFactory) -> None:
    clock = Clock()
    old = factory.issue()
    new = factory.rotate(old, grace_until=clock.now + 100)
    v = make(store, cache_ttl=60, rate_limits=None, clock=clock, monotonic=clock)
    assert v.verify(old.header).allowed
    assert v.verify(new.header).allowed
    assert set(v._index) == {digest(old.header), digest(new.header)}
    assert MAX_SPELLINGS == 2
    # A third digest for the same record (impossible through verify: only the canonical
    # spellings of the two secrets verify) is refused by the cache itself.
    entry = v._cache.records[old.key_id]
    v._cache.remember(b"x" * 32, entry, clock.now + 10)
    assert len(v._index) == 2
    assert entry.verified == {digest(old.header), digest(new.header)}


def test_an_entry_replaced_meanwhile_is_not_indexed(
    store: CountingStore, factory: KeyFactory
) -> None:
    key = factory.issue()
    v = make(store, cache_ttl=60, rate_limits=None)
    assert v.verify(key.header).allowed
    entry = v._cache.records[key.key_id]
    v.invalidate(key.key_id)  # e.g. a revocation pushed by the store
    v._cache.remember(digest(key.header), entry, 1e18)
    assert v._index == {}


def test_the_fast_path_never_answers_past_its_deadline(
    store: CountingStore, factory: KeyFactory
) -> None:
    mono = Clock()
    key = factory.issue()
    v = make(store, cache_ttl=5, rate_limits=None, monotonic=mono)
    assert v.verify(key.header).allowed
    ((_, deadline, _),) = v._index.values()
    assert deadline == mono.now + 5
    mono.now = deadline - 0.001
    assert v.verify_nowait(key.header) is not None
    mono.now = deadline
    assert v.verify_nowait(key.header) is None  # at the deadline: no longer
    factory.change(key, revoked_at=1.0)
    assert v.verify(key.header).code is ErrorCode.REVOKED_API_KEY


def test_the_index_deadline_stops_at_expiry_and_grace(
    store: CountingStore, factory: KeyFactory
) -> None:
    clock = Clock()
    old = factory.issue(expires_at=clock.now + 50)
    new = factory.rotate(old, grace_until=clock.now + 20)
    v = make(store, cache_ttl=3600, rate_limits=None, clock=clock, monotonic=clock)
    assert v.verify(old.header).allowed
    assert v.verify(new.header).allowed
    assert v._index[digest(old.header)][1] == clock.now + 20
    assert v._index[digest(new.header)][1] == clock.now + 50
    clock.now += 20
    assert v.verify_nowait(old.header) is None
    assert v.verify(old.header).code is ErrorCode.INVALID_API_KEY
    assert v.verify(new.header).allowed
    clock.now += 30
    assert v.verify_nowait(new.header) is None
    assert v.verify(new.header).code is ErrorCode.EXPIRED_API_KEY


def _flood_memory(run: Any, headers: list[str]) -> int:
    """Bytes still allocated (tracemalloc) after ``run`` sent every header, from after a
    warm-up of 500 of them."""
    run(headers[:500])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run(headers[500:])
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def _flood_blocks(run: Any, headers: list[str]) -> int:
    """Memory blocks still allocated (``sys.getallocatedblocks``) after the flood: a cheap
    stand-in for tracemalloc on the issue's full 50,000 variants (before the fix each variant
    kept at least one block: its digest in the per-record set)."""
    run(headers[:500])
    gc.collect()
    before = sys.getallocatedblocks()
    run(headers[500:])
    gc.collect()
    return sys.getallocatedblocks() - before


#: The issue's flood, and a smaller one measured with tracemalloc (which slows every
#: allocation down). Before the fix each variant kept ~130 bytes: 3,000 → ~400 KB.
FLOODS = [
    pytest.param(3_500, id="3k"),
    pytest.param(50_500, id="50k", marks=pytest.mark.slow),
]


def _assert_flat(run: Any, headers: list[str]) -> None:
    if len(headers) <= 5_000:
        grown = _flood_memory(run, headers)
        assert grown < 64 * 1024, grown  # before the fix: ~6.6 MB for 51,200 variants
    else:
        blocks = _flood_blocks(run, headers)
        assert blocks < 5_000, blocks  # before the fix: > 50,000


@pytest.mark.parametrize("count", FLOODS)
def test_a_flood_of_header_variants_leaves_memory_flat(
    store: CountingStore, factory: KeyFactory, count: int
) -> None:
    key = factory.issue(rate_limit="1/day")
    v = make(store, cache_ttl=3600)
    headers = list(itertools.islice(variants(key.plaintext), count))
    assert v.verify(key.header).allowed  # the day's one request; every variant gets 429

    def run(batch: list[str]) -> None:
        for h in batch:
            assert v.verify(h, peer="192.0.2.1").code is ErrorCode.RATE_LIMITED

    _assert_flat(run, headers)
    assert len(v._index) <= 1
    assert len(v._cache.records[key.key_id].verified) <= 1
    assert store.gets == 1


@pytest.mark.parametrize("count", FLOODS)
def test_a_flood_of_header_variants_through_the_asgi_middleware(
    store: CountingStore, factory: KeyFactory, count: int
) -> None:
    key = factory.issue(rate_limit="1/day")
    v = make(store, cache_ttl=3600)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("every variant is over the limit")

    middleware = KeyGuardMiddleware(app, verifier=v)
    headers = list(itertools.islice(variants(key.plaintext), count))
    statuses: dict[int, int] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1
        elif message["type"] == "http.response.body":
            assert json.loads(message["body"])["code"] == "rate_limited"

    async def batch(hs: list[str]) -> None:
        for h in hs:
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/",
                "headers": [(b"authorization", h.encode())],
                "client": ("192.0.2.1", 4000),
            }
            await middleware(scope, receive, send)

    assert v.verify(key.header).allowed
    _assert_flat(lambda hs: asyncio.run(batch(hs)), headers)
    assert statuses == {429: len(headers)}
    assert len(v._index) <= 1
    assert len(v._cache.records[key.key_id].verified) <= 1
    assert store.gets == 1


def test_variants_of_many_keys_do_not_evict_each_other(
    store: CountingStore, factory: KeyFactory
) -> None:
    keys = [factory.issue() for _ in range(8)]
    v: Verifier = make(store, cache_ttl=3600, cache_size=8, rate_limits=None)
    for k in keys:
        assert v.verify(k.header).allowed
    for k in keys:
        for h in itertools.islice(variants(k.plaintext), 200):
            assert v.verify(h).allowed
    assert set(v._index) == {digest(k.header) for k in keys}
