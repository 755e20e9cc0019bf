"""The verifier hot path: order of checks, caching, revocation bound, re-hash, sync/async parity."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError, ErrorCode, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import any_of
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.elsewhere import elsewhere
from tests.keyfactory import KeyFactory


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.fail = False

    def get(self, key_id: str) -> KeyRecord | None:
        self.gets += 1
        if self.fail:
            raise StoreUnavailable("down")
        return super().get(key_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def factory(store: CountingStore) -> KeyFactory:
    return KeyFactory(store)


def make(store: CountingStore, **kw: Any) -> Verifier:
    kw.setdefault("hasher", Hasher(pepper_from_env=False))
    return Verifier(store, **kw)


def both(v: Verifier, header: Any, method: str = "GET", path: str = "/", **kw: Any) -> Any:
    """Run verify and averify on fresh copies of the state and insist they agree."""
    sync = v.verify(header, method, path, **kw)
    async_ = asyncio.run(v.averify(header, method, path, **kw))
    assert (sync.allowed, sync.code) == (async_.allowed, async_.code)
    return sync


@pytest.mark.parametrize(
    ("header", "code"),
    [
        pytest.param(None, ErrorCode.MISSING_API_KEY, id="none"),
        pytest.param("", ErrorCode.MISSING_API_KEY, id="empty"),
        pytest.param([], ErrorCode.MISSING_API_KEY, id="empty-list"),
        pytest.param("Bearer x", ErrorCode.MISSING_API_KEY, id="bearer"),
        pytest.param("UserKey", ErrorCode.MISSING_API_KEY, id="scheme-only"),
        pytest.param("UserKey    ", ErrorCode.MISSING_API_KEY, id="scheme-spaces"),
        pytest.param(["a", "b"], ErrorCode.INVALID_REQUEST, id="two-values"),
        pytest.param("UserKey " + "a" * 600, ErrorCode.INVALID_REQUEST, id="too-long"),
        pytest.param("UserKey kg_\x00", ErrorCode.INVALID_REQUEST, id="nul"),
        pytest.param("UserKey kg_\n", ErrorCode.INVALID_REQUEST, id="newline"),
        pytest.param(b"UserKey \xff\xfe", ErrorCode.INVALID_API_KEY_FORMAT, id="latin1-bytes"),
        pytest.param("UserKey kg_abc", ErrorCode.INVALID_API_KEY_FORMAT, id="short"),
        pytest.param("UserKey " + "x" * 54, ErrorCode.INVALID_API_KEY_FORMAT, id="junk"),
    ],
)
def test_malformed_requests_never_touch_the_store(
    store: CountingStore, header: Any, code: ErrorCode
) -> None:
    v = make(store)
    assert both(v, header).code is code
    assert store.gets == 0


def test_cache_hit_skips_the_store(store: CountingStore, factory: KeyFactory) -> None:
    key = factory.issue("agents:read")
    v = make(store, cache_ttl=60)
    for _ in range(5):
        assert v.verify(key.header).allowed
    assert store.gets == 1


def test_wrong_secret_for_cached_id_is_invalid_without_store(
    store: CountingStore, factory: KeyFactory
) -> None:
    from keyguard.core.keys import KeyFormat

    key = factory.issue()
    v = make(store, cache_ttl=60)
    assert v.verify(key.header).allowed
    wrong = "UserKey " + KeyFormat().generate(key.key_id).plaintext
    assert v.verify(wrong).code is ErrorCode.INVALID_API_KEY
    assert store.gets == 1
    assert v.verify(key.header).allowed  # the right key still works


def test_unknown_ids_are_negatively_cached(store: CountingStore) -> None:
    from keyguard.core.keys import KeyFormat

    v = make(store, negative_cache_ttl=60)
    header = "UserKey " + KeyFormat().generate().plaintext
    for _ in range(3):
        assert v.verify(header).code is ErrorCode.INVALID_API_KEY
    assert store.gets == 1


def test_unknown_id_does_the_same_digest_work_as_a_wrong_secret(
    store: CountingStore, factory: KeyFactory
) -> None:
    from keyguard.core.keys import KeyFormat

    calls: list[str] = []

    class Spy(Hasher):
        def verify(self, key: str, stored: str) -> bool:
            calls.append(stored.partition("$")[0])
            return super().verify(key, stored)

    key = factory.issue()
    v = Verifier(store, hasher=Spy(pepper_from_env=False), cache_ttl=0)
    v.verify("UserKey " + KeyFormat().generate().plaintext)
    unknown_work = list(calls)
    calls.clear()
    v.verify("UserKey " + KeyFormat().generate(key.key_id).plaintext)
    # The current digest and the previous one (a dummy when there is none): the same shape.
    assert unknown_work == calls == ["sha256", "sha256"]


def test_revocation_is_seen_within_cache_ttl(store: CountingStore, factory: KeyFactory) -> None:
    mono = Clock()
    key = factory.issue()
    v = make(store, cache_ttl=1.0, monotonic=mono)
    assert v.verify(key.header).allowed
    with elsewhere(store):
        factory.change(key, revoked_at=time.time(), revoked_reason="leak")
    mono.now += 0.5
    assert v.verify(key.header).allowed  # still inside the stated bound
    mono.now += 0.6
    assert v.verify(key.header).code is ErrorCode.REVOKED_API_KEY


def test_invalidate_makes_revocation_immediate(store: CountingStore, factory: KeyFactory) -> None:
    key = factory.issue()
    v = make(store, cache_ttl=3600)
    assert v.verify(key.header).allowed
    factory.change(key, revoked_at=time.time(), revoked_reason="leak")
    v.invalidate(key.key_id)
    assert v.verify(key.header).code is ErrorCode.REVOKED_API_KEY


def test_expiry_applies_even_on_the_fast_path(store: CountingStore, factory: KeyFactory) -> None:
    clock = Clock()
    key = factory.issue(expires_at=clock.now + 10)
    v = make(store, cache_ttl=3600, clock=clock, monotonic=clock)
    assert v.verify(key.header).allowed
    clock.now += 10
    assert v.verify(key.header).code is ErrorCode.EXPIRED_API_KEY


def test_expired_or_revoked_only_after_secret_matched(
    store: CountingStore, factory: KeyFactory
) -> None:
    from keyguard.core.keys import KeyFormat

    key = factory.issue(revoked_at=1.0, expires_at=1.0)
    v = make(store)
    assert v.verify(key.header).code is ErrorCode.REVOKED_API_KEY
    wrong = "UserKey " + KeyFormat().generate(key.key_id).plaintext
    assert v.verify(wrong).code is ErrorCode.INVALID_API_KEY


def test_rotation_grace_period(store: CountingStore, factory: KeyFactory) -> None:
    clock = Clock()
    old = factory.issue(created_at=clock.now)
    new = factory.rotate(old, grace_until=clock.now + 100)
    v = make(store, cache_ttl=3600, clock=clock, monotonic=clock)
    assert v.verify(old.header).allowed
    assert v.verify(new.header).allowed
    clock.now += 100
    assert v.verify(old.header).code is ErrorCode.INVALID_API_KEY
    assert v.verify(new.header).allowed


def test_store_failure_fails_closed(store: CountingStore, factory: KeyFactory) -> None:
    key = factory.issue()
    store.fail = True
    v = make(store)
    d = both(v, key.header)
    assert d.code is ErrorCode.AUTH_UNAVAILABLE
    assert d.status == 503
    assert d.retry_after == 1


def test_rehash_on_algorithm_change(store: CountingStore, factory: KeyFactory) -> None:
    key = factory.issue()
    assert key.record.digest.startswith("sha256$")
    # A peppered verifier refuses the plain digest...
    assert (
        not Verifier(store, hasher=Hasher("p" * 32, pepper_from_env=False))
        .verify(key.header)
        .allowed
    )
    # ...unless it is migrating, and then it re-hashes on first use.
    peppered = Hasher("p" * 32, pepper_from_env=False, accept_unpeppered=True)
    v = Verifier(store, hasher=peppered)
    assert v.verify(key.header).allowed
    stored = store.get(key.key_id)
    assert stored is not None
    assert stored.digest.startswith("hmac-sha256$")
    v2 = Verifier(store, hasher=peppered)
    assert v2.verify(key.header).allowed


def test_last_used_is_recorded_and_throttled(store: CountingStore, factory: KeyFactory) -> None:
    clock = Clock()
    key = factory.issue()
    v = make(store, clock=clock, cache_ttl=0, touch_interval=60)
    v.verify(key.header)
    first = store.get(key.key_id)
    assert first is not None
    assert first.last_used_at == clock.now
    clock.now += 30
    v.verify(key.header)
    second = store.get(key.key_id)
    assert second is not None
    assert second.last_used_at == first.last_used_at
    clock.now += 31
    v.verify(key.header)
    third = store.get(key.key_id)
    assert third is not None
    assert third.last_used_at == clock.now


def test_policy_and_extra_requirement(store: CountingStore, factory: KeyFactory) -> None:
    policy = RoutePolicy({"GET /a": "agents:read"}, public=["/open"])
    reader = factory.issue("agents:read")
    v = make(store, policy=policy)
    assert v.verify(None, "GET", "/open").allowed
    assert v.verify(reader.header, "GET", "/a").allowed
    d = v.verify(reader.header, "GET", "/a", required=any_of("tasks:read", "tasks:execute"))
    assert d.code is ErrorCode.INSUFFICIENT_SCOPE
    assert set(d.required) == {"tasks:read", "tasks:execute"}
    assert v.verify(reader.header, "GET", "/elsewhere").code is ErrorCode.INSUFFICIENT_SCOPE


def test_insufficient_scope_never_lists_the_keys_own_scopes(
    store: CountingStore, factory: KeyFactory
) -> None:
    key = factory.issue("agents:read", "knowledge:read")
    d = make(store).verify(key.header, required="agents:write")
    assert d.required == ("agents:write",)
    assert "knowledge" not in d.detail


def test_concurrent_async_misses(store: CountingStore, factory: KeyFactory) -> None:
    keys = [factory.issue() for _ in range(50)]
    v = make(store)

    async def go() -> list[bool]:
        results = await asyncio.gather(*(v.averify(k.header) for k in keys * 4))
        return [r.allowed for r in results]

    assert all(asyncio.run(go()))


def test_threads_hammering_tiny_caches_never_raise(
    store: CountingStore, factory: KeyFactory
) -> None:
    """cachetools caches are not thread-safe; the verifier must lock around them. Tiny caches
    force constant eviction, random well-formed ids fill the negative cache."""
    import threading

    from keyguard.core.keys import KeyFormat

    keys = [factory.issue() for _ in range(20)]
    v = make(
        store,
        cache_size=4,
        negative_cache_size=4,
        cache_ttl=0.001,
        rate_limits=None,
        brute_force=None,
    )
    fmt = KeyFormat()
    errors: list[BaseException] = []
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(300):
                if i % 2:
                    results.append(v.verify(keys[(n + i) % len(keys)].header).allowed)
                else:
                    d = v.verify("UserKey " + fmt.generate().plaintext)
                    assert d.code is ErrorCode.INVALID_API_KEY
                if i % 50 == 0:
                    v.invalidate(keys[i % len(keys)].key_id)
        except BaseException as exc:
            errors.append(exc)

    import sys

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose races
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert results
    assert all(results)


def test_read_only_never_writes(store: CountingStore, factory: KeyFactory) -> None:
    key = factory.issue()
    before = store.get(key.key_id)
    migrating = Hasher("p" * 32, pepper_from_env=False, accept_unpeppered=True)
    v = Verifier(store, hasher=migrating, read_only=True)
    assert v.verify(key.header).allowed
    assert store.get(key.key_id) == before  # neither re-hashed nor touched


def test_a_renamed_management_scope_is_privileged_on_routes(
    store: CountingStore, factory: KeyFactory
) -> None:
    from keyguard.core.policy import RoutePolicy
    from keyguard.core.scopes import ScopeCatalog

    catalog = ScopeCatalog.platform(manage_scope="keyadmin:manage")
    policy = RoutePolicy({"POST /keys": "keyadmin:manage"})
    v = make(store, catalog=catalog, policy=policy, rate_limits=None)
    for wildcard in ("keyadmin:*", "*:manage", "*:*"):
        key = factory.issue(wildcard)
        assert v.verify(key.header, "POST", "/keys").code == "insufficient_scope", wildcard
    assert v.verify(factory.issue("keyadmin:manage").header, "POST", "/keys").allowed
    assert v.verify(factory.issue("admin").header, "POST", "/keys").allowed


def test_a_failing_store_logs_one_line_per_incident(
    store: CountingStore, factory: KeyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key = factory.issue()
    v = make(store, cache_ttl=0)
    store.fail = True
    with caplog.at_level("DEBUG", logger="keyguard"):
        for _ in range(25):
            assert v.verify(key.header).code == "auth_unavailable"
        store.fail = False
        assert v.verify(key.header).allowed
    lines = [r for r in caplog.records if r.name == "keyguard.verifier"]
    assert [r.levelname for r in lines] == ["ERROR", "WARNING"]
    assert all(r.exc_info is None for r in lines)
    assert "recovered after 25 failed" in lines[1].getMessage()


def test_a_revocation_during_a_store_read_leaves_no_stale_valid_entry(
    factory: KeyFactory,
) -> None:
    """Revoke-while-filling: the record is read, the key is revoked and its invalidation
    arrives before the read's answer is cached. That answer serves its own request only; the
    next request reads the store again and sees the revocation (not after cache_ttl)."""

    class Racing(MemoryStore):
        verifier: Verifier | None = None
        race = False

        def get(self, key_id: str) -> KeyRecord | None:
            record = super().get(key_id)
            if self.race and record is not None and self.verifier is not None:
                self.race = False
                # Meanwhile, another process revokes it and the invalidation is pushed here.
                self._records[key_id] = record.evolve(revoked_at=1.0)
                self.verifier.invalidate(key_id)
            return record

    store = Racing()
    key = KeyFactory(store).issue()
    v = make(store, cache_ttl=60, rate_limits=None)
    store.verifier = v
    store.race = True
    assert v.verify(key.header).allowed  # read before the revocation: fine for this request
    assert v.verify(key.header).code == "revoked_api_key"


@pytest.mark.parametrize("sync", [True, False], ids=["verify", "averify"])
def test_stale_if_error_serves_known_keys_for_a_bounded_time(
    store: CountingStore, factory: KeyFactory, sync: bool
) -> None:
    clock = Clock()
    key = factory.issue()
    unknown = "UserKey " + KeyFormat().generate().plaintext

    def check(v: Verifier, header: str) -> Decision:
        return v.verify(header) if sync else asyncio.run(v.averify(header))

    off = make(store, cache_ttl=1.0, monotonic=clock, rate_limits=None)
    on = make(store, cache_ttl=1.0, monotonic=clock, rate_limits=None, stale_if_error=30)
    for v in (off, on):
        assert check(v, key.header).allowed
    store.fail = True
    clock.now += 2  # past freshness: the store would be read, and it is down
    assert check(off, key.header).code == "auth_unavailable"  # the default: fail closed
    assert check(on, key.header).allowed  # known key, last seen 1 s past freshness
    assert check(on, unknown).code == "auth_unavailable"  # never seen: no stale answer
    clock.now += 30
    assert check(on, key.header).code == "auth_unavailable"  # past the stale window
    store.fail = False
    assert check(on, key.header).allowed


def test_stale_if_error_is_validated(store: CountingStore) -> None:
    for bad in (-1, math.inf, True):
        with pytest.raises(ConfigurationError):
            make(store, stale_if_error=bad)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_change_made_in_this_process_reaches_the_cache_at_once(kind: str, tmp_path: Any) -> None:
    """A KeyManager and a Verifier sharing a store object: a revocation is refused on the very
    next request, however long the cache TTL (no waiting out the freshness bound)."""
    from keyguard.management import KeyManager
    from keyguard.stores.sqlite import SQLiteStore

    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "k.db")
    hasher = Hasher(pepper_from_env=False)
    manager = KeyManager(store, hasher=hasher)
    created = manager.create("k", ["agents:read"])
    v = Verifier(store, hasher=hasher, cache_ttl=3600, rate_limits=None)
    header = f"UserKey {created.plaintext}"
    assert v.verify(header).allowed
    assert v.verify(header).allowed  # now on the fast path
    manager.revoke(created.key_id, reason="test")
    assert v.verify(header).code == "revoked_api_key"
    store.close()
