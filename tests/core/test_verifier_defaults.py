"""Every default of the Verifier, exercised by leaving the argument out (issue 16): a changed
default must fail a test. Also the configuration checks and the branches that keep failures
from turning into access."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.errors import ConfigurationError, ConflictError, ErrorCode, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.pepper import PEPPER_SETTING
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import DEFAULT_WINDOWS, MemoryRateLimiter, RateDecision
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import ScopeCatalog
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.elsewhere import elsewhere
from tests.keyfactory import KeyFactory


class Clock:
    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.touches: list[float] = []

    def get(self, key_id: str) -> KeyRecord | None:
        self.gets += 1
        return super().get(key_id)

    def touch(self, key_id: str, at: float) -> None:
        self.touches.append(at)
        super().touch(key_id, at)


@pytest.fixture(autouse=True)
def _no_pepper_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEYGUARD_PEPPER", "KEYGUARD_PEPPER_FILE", "KEYGUARD_ACCEPT_UNPEPPERED"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store() -> Counting:
    return Counting()


@pytest.fixture
def factory(store: Counting) -> KeyFactory:
    return KeyFactory(store)


def test_no_policy_means_authentication_only(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue()  # no scopes at all
    v = Verifier(store)
    assert v.policy is None
    for method, path in (("GET", "/"), ("DELETE", "/admin/anything")):
        assert v.verify(key.header, method, path).allowed
    assert v.verify(None, "POST", "/x").code is ErrorCode.MISSING_API_KEY
    assert v.verify(key.header).principal is not None  # method and path default to GET /


def test_method_and_path_default_to_get_slash(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue()
    v = Verifier(store, policy=RoutePolicy({"GET /": "agents:read"}, default="deny"))
    assert v.verify(key.header).code is ErrorCode.INSUFFICIENT_SCOPE
    assert asyncio.run(v.averify(key.header)).code is ErrorCode.INSUFFICIENT_SCOPE
    fast = v.verify_nowait(key.header)
    assert fast is not None
    assert fast.code is ErrorCode.INSUFFICIENT_SCOPE
    reader = factory.issue("agents:read")
    assert v.verify(reader.header).allowed
    assert v.verify_nowait(reader.header) is not None


def test_no_catalog_means_no_implications(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue("agents:write")
    policy = RoutePolicy({"GET /a": "agents:read"})
    catalog = ScopeCatalog(
        ["agents:read", "agents:write"], implications={"agents:write": ["agents:read"]}
    )
    assert Verifier(store, policy=policy, catalog=catalog).verify(key.header, "GET", "/a").allowed
    denied = Verifier(store, policy=policy).verify(key.header, "GET", "/a")
    assert denied.code is ErrorCode.INSUFFICIENT_SCOPE


def test_the_default_key_format(store: Counting, factory: KeyFactory) -> None:
    v = Verifier(store)
    assert v.key_format is DEFAULT_FORMAT
    other = "UserKey " + KeyFormat("zz").generate().plaintext
    assert v.verify(other).code is ErrorCode.INVALID_API_KEY_FORMAT
    assert store.gets == 0


def test_the_default_hasher_reads_the_environment(
    store: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Verifier(MemoryStore()).hasher.tag == "sha256"
    monkeypatch.setenv("KEYGUARD_PEPPER", "p" * 32)
    v = Verifier(MemoryStore())
    assert v.hasher.tag == "hmac-sha256"
    key = KeyFactory(store, Hasher("p" * 32, pepper_from_env=False)).issue()
    assert Verifier(store).verify(key.header).allowed


def test_the_default_cache_sizes(store: Counting) -> None:
    v = Verifier(store)
    assert v._cache.records.maxsize == 10_000
    assert v._cache.index_size == 10_000
    assert v._touched.maxsize == 10_000
    assert v._cache.negative.maxsize == 10_000


def test_a_cached_record_is_trusted_for_one_second(store: Counting, factory: KeyFactory) -> None:
    mono = Clock(100.0)
    key = factory.issue()
    v = Verifier(store, monotonic=mono)
    assert v.cache_ttl == 1.0
    assert v.verify(key.header).allowed
    with elsewhere(store):
        factory.change(key, revoked_at=1.0)
    mono.now += 0.999
    assert v.verify(key.header).allowed
    assert v.authenticate("userkey " + key.plaintext).allowed  # the slow path: cached too
    mono.now += 0.001
    assert v.verify(key.header).code is ErrorCode.REVOKED_API_KEY


def test_an_unknown_id_is_remembered_for_one_second(store: Counting) -> None:
    mono = Clock(100.0)
    generated = KeyFormat().generate()
    header = "UserKey " + generated.plaintext
    v = Verifier(store, monotonic=mono)
    assert v.negative_cache_ttl == 1.0
    assert v.verify(header).code is ErrorCode.INVALID_API_KEY
    with elsewhere(store):
        store.create(
            KeyRecord(
                key_id=generated.key_id,
                name="late",
                digest=Hasher(pepper_from_env=False).digest(generated.plaintext),
            )
        )
    mono.now += 0.999
    assert v.verify(header).code is ErrorCode.INVALID_API_KEY
    assert store.gets == 1
    mono.now += 0.001
    assert v.verify(header).allowed
    assert store.gets == 2


def test_headers_up_to_512_characters(store: Counting) -> None:
    v = Verifier(store)
    assert v.verify("UserKey " + "a" * 504).code is ErrorCode.INVALID_API_KEY_FORMAT
    assert v.verify("UserKey " + "a" * 505).code is ErrorCode.INVALID_REQUEST
    assert v.verify(b"UserKey " + b"a" * 505).code is ErrorCode.INVALID_REQUEST


def test_last_used_is_written_at_most_once_a_minute(store: Counting, factory: KeyFactory) -> None:
    wall = Clock()
    key = factory.issue()
    v = Verifier(store, clock=wall, cache_ttl=0)
    v.verify(key.header)
    wall.now += 59.999
    v.verify(key.header)
    wall.now += 0.001
    v.verify(key.header)
    assert store.touches == [wall.now - 60, wall.now]


def test_plain_digests_are_rehashed_when_migrating(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue()
    migrating = Hasher("p" * 32, pepper_from_env=False, accept_unpeppered=True)
    assert Verifier(store, hasher=migrating).verify(key.header).allowed
    record = store.get(key.key_id)
    assert record is not None
    assert record.digest.startswith("hmac-sha256$")


def test_a_previous_secret_is_never_rehashed_into_the_current_digest(
    store: Counting, factory: KeyFactory
) -> None:
    old = factory.issue()
    new = factory.rotate(old, grace_until=time.time() + 600)
    migrating = Hasher("p" * 32, pepper_from_env=False, accept_unpeppered=True)
    v = Verifier(store, hasher=migrating)
    assert v.verify(old.header).allowed
    record = store.get(old.key_id)
    assert record is not None
    assert record.digest == new.record.digest


def test_the_platform_windows_by_default(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue()
    v = Verifier(store)
    assert v.rate_limits == DEFAULT_WINDOWS
    assert isinstance(v.limiter, MemoryRateLimiter)
    assert v.owner_rate_limits is None
    first = v.verify(key.header)
    names = {k.lower() for k, _ in first.headers}
    assert {"ratelimit-policy", "ratelimit", "x-ratelimit-limit"} <= names  # both header sets
    assert [v.verify(key.header).allowed for _ in range(20)] == [True] * 19 + [False]


def test_no_owner_limits_by_default(store: Counting, factory: KeyFactory) -> None:
    keys = [factory.issue(owner="acme") for _ in range(2)]
    v = Verifier(store)
    for k in keys:
        assert all(v.verify(k.header).allowed for _ in range(20))


def test_the_default_brute_force_guard(store: Counting) -> None:
    v = Verifier(store, unknown_id_budget=None)
    guard = v.brute_force
    assert isinstance(guard, BruteForceGuard)
    assert (guard.threshold, guard.window) == (100, 60.0)
    codes = [v.verify(f"UserKey kg_{i}", peer="192.0.2.1").code for i in range(101)]
    # 100 failures are answered as such; the 101st within the minute is refused.
    assert codes == [ErrorCode.INVALID_API_KEY_FORMAT] * 100 + [ErrorCode.RATE_LIMITED]


def test_forwarded_for_is_not_trusted_by_default(store: Counting) -> None:
    v = Verifier(store, brute_force=BruteForceGuard(threshold=3), unknown_id_budget=None)
    assert v.trusted_proxies == 0
    codes = [
        v.verify("UserKey kg_x", peer="192.0.2.1", forwarded_for=f"10.0.0.{i}").code
        for i in range(4)
    ]
    assert codes[-1] is ErrorCode.RATE_LIMITED  # counted against the peer, whatever XFF says


def test_not_read_only_by_default(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue()
    v = Verifier(store)
    assert v.read_only is False
    assert store.get_setting(PEPPER_SETTING) == "none"
    v.verify(key.header)
    assert len(store.touches) == 1


def test_the_default_monotonic_clock(store: Counting) -> None:
    assert Verifier(store)._monotonic is time.monotonic


def test_authenticate_has_no_gate_without_a_peer(store: Counting) -> None:
    v = Verifier(store, unknown_id_budget=LookupBudget(1, 60), brute_force=BruteForceGuard(1))
    for _ in range(3):
        header = "UserKey " + KeyFormat().generate().plaintext
        assert v.authenticate(header).code is ErrorCode.INVALID_API_KEY
    assert store.gets == 3


# -- configuration checks -------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"cache_ttl": -0.001},
        {"negative_cache_ttl": -0.001},
        {"max_header_length": DEFAULT_FORMAT.max_length + len("UserKey ") - 1},
        {"trusted_proxies": -1},
        {"trusted_proxies": True},
        {"rate_limits": None, "limiter": MemoryRateLimiter()},
        {"rate_limits": None, "owner_rate_limits": "3/minute"},
    ],
)
def test_bad_configuration_is_refused(store: Counting, kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Verifier(store, **kw)


def test_configuration_boundaries_are_accepted(store: Counting) -> None:
    Verifier(store, cache_ttl=0, negative_cache_ttl=0)
    Verifier(store, max_header_length=DEFAULT_FORMAT.max_length + len("UserKey "))
    Verifier(store, rate_limits="5/minute")


# -- failure branches ------------------------------------------------------------------------
def test_revoked_and_expired_keys_do_not_count_as_guesses(
    store: Counting, factory: KeyFactory
) -> None:
    revoked = factory.issue(revoked_at=1.0)
    expired = factory.issue(expires_at=1.0)
    v = Verifier(store, brute_force=BruteForceGuard(threshold=1))
    for _ in range(3):
        assert v.verify(revoked.header, peer="192.0.2.1").code is ErrorCode.REVOKED_API_KEY
        assert v.verify(expired.header, peer="192.0.2.1").code is ErrorCode.EXPIRED_API_KEY


def test_a_blocked_answer_has_a_retry_after_of_at_least_one_second(store: Counting) -> None:
    clock = Clock(10.0)
    guard = BruteForceGuard(threshold=1, window=1.0, clock=clock)
    v = Verifier(store, brute_force=guard)
    assert v.verify("UserKey kg_x", peer="192.0.2.1").code is ErrorCode.INVALID_API_KEY_FORMAT
    clock.now += 0.999  # the oldest failure leaves the window in a millisecond
    refused = v.verify("UserKey kg_x", peer="192.0.2.1")
    assert refused.code is ErrorCode.RATE_LIMITED
    assert refused.retry_after == 1
    assert refused.status == 429


def test_a_store_error_on_lookup_fails_closed(
    store: Counting, factory: KeyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key = factory.issue()
    v = Verifier(store)

    def down(key_id: str) -> KeyRecord | None:
        raise StoreUnavailable("down")

    store.get = down  # type: ignore[method-assign]
    assert v.verify(key.header).code is ErrorCode.AUTH_UNAVAILABLE
    assert asyncio.run(v.averify(key.header)).code is ErrorCode.AUTH_UNAVAILABLE


def test_write_failures_after_success_do_not_deny(
    store: Counting, factory: KeyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key = factory.issue()
    v = Verifier(store, cache_ttl=0, touch_interval=0)

    def conflict(key_id: str, at: float) -> None:
        raise ConflictError("raced")

    def broken(key_id: str, at: float) -> None:
        raise StoreUnavailable("read-only replica")

    store.touch = conflict  # type: ignore[method-assign]
    assert v.verify(key.header).allowed
    assert caplog.records == []
    store.touch = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="keyguard.verifier"):
        assert v.verify(key.header).allowed
        assert asyncio.run(v.averify(key.header)).allowed
    assert "could not record key use" in caplog.text
    assert key.plaintext not in caplog.text


def test_verify_nowait_defers_to_averify_for_a_remote_limiter(
    store: Counting, factory: KeyFactory
) -> None:
    class Remote:
        in_process = False

        def __init__(self) -> None:
            self.inner = MemoryRateLimiter()

        def hit(self, *a: Any) -> RateDecision:
            return self.inner.hit(*a)

        async def ahit(self, *a: Any) -> RateDecision:
            return self.inner.hit(*a)

    key = factory.issue()
    v = Verifier(store, limiter=Remote(), cache_ttl=60)  # type: ignore[arg-type]
    assert asyncio.run(v.averify(key.header)).allowed
    assert v.verify_nowait(key.header) is None  # would need an await
    assert v.verify_nowait(key.header, "GET", "/") is None
    no_limit = Verifier(store, rate_limits=None, cache_ttl=60)
    assert no_limit.verify(key.header).allowed
    assert no_limit.verify_nowait(key.header) is not None


def test_the_fast_path_of_verify_stops_at_the_deadline(
    store: Counting, factory: KeyFactory
) -> None:
    mono = Clock(100.0)
    key = factory.issue()
    v = Verifier(store, monotonic=mono, rate_limits=None)
    assert v.verify(key.header).allowed
    assert store.gets == 1
    mono.now += 0.999
    assert v.verify(key.header).allowed
    assert store.gets == 1  # answered from the index
    factory.change(key, revoked_at=1.0)
    before = store.gets
    mono.now += 0.001  # the index entry's deadline (the record's freshness)
    assert v.verify(key.header).code is ErrorCode.REVOKED_API_KEY
    assert store.gets == before + 1


def test_repr_shows_no_key_material(store: Counting, factory: KeyFactory) -> None:
    key = factory.issue()
    v = Verifier(store)
    v.verify(key.header)
    text = repr(v) + repr(v._cache)
    assert key.plaintext not in text
    assert key.record.digest not in text
    assert "cache_ttl=1.0" in repr(v)
