"""Exact facts about the verifier that its twin tests cannot see (a change to a step both
skins share changes them alike): its configuration errors word for word, its defaults, the
cache's counters and bounds, the index's deadline in a key's expiry-warning window, a key's
own restrictions through ``authenticate``, the client address a failure is counted against,
and what is logged when the store fails."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import pytest

from keyguard.core import authn
from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.clock import to_iso
from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError, ErrorCode, StoreUnavailable
from keyguard.core.expiry import EXPIRY_HEADER
from keyguard.core.hashing import Hasher
from keyguard.core.keycache import KeyCache
from keyguard.core.keys import KeyFormat
from keyguard.core.lookup_budget import LookupBudget
from keyguard.core.ratelimit import MemoryRateLimiter, parse_windows
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import ScopeCatalog, all_of, any_of
from keyguard.core.verifier import Verifier
from keyguard.observability import Observer, UsageCounter
from keyguard.stores.memory import MemoryStore
from tests.core.test_verifier_twins import Clock
from tests.keyfactory import KeyFactory

T0 = 1_700_000_000.0
PEER = ("203.0.113.7", 4000)


class Store(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.touches: list[str] = []
        self.down = False

    def get(self, key_id: str) -> KeyRecord | None:
        self.gets += 1
        if self.down:
            raise StoreUnavailable("connection refused by 192.0.2.99")
        return super().get(key_id)

    def touch(self, key_id: str, at: float) -> None:
        self.touches.append(key_id)
        super().touch(key_id, at)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def factory(store: Store) -> KeyFactory:
    return KeyFactory(store)


def make(store: MemoryStore, **kw: Any) -> Verifier:
    kw.setdefault("hasher", Hasher(pepper_from_env=False))
    return Verifier(store, **kw)


# -- configuration ---------------------------------------------------------------------------------
class NoPairLimiter:
    """A limiter without ``hit_pair`` (owner limits need it)."""

    in_process = True

    def hit(self, bucket: str, windows: Any, cost: int = 1) -> Any:
        raise AssertionError("not called")


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"cache_ttl": -1}, "cache TTLs must be >= 0"),
    ({"negative_cache_ttl": -0.5}, "cache TTLs must be >= 0"),
    ({"max_header_length": 60}, "max_header_length is shorter than a key of this format"),
    ({"expiry_warning": -1}, "expiry_warning must be >= 0 seconds (or None)"),
    ({"expiry_warning": math.nan}, "expiry_warning must be >= 0 seconds (or None)"),
    ({"stale_if_error": -1}, "stale_if_error must be a number of seconds >= 0"),
    ({"stale_if_error": math.inf}, "stale_if_error must be a number of seconds >= 0"),
    ({"stale_if_error": True}, "stale_if_error must be a number of seconds >= 0"),
    (
        {"rate_limits": None, "limiter": MemoryRateLimiter()},
        "limiter= needs rate_limits (or leave limiter unset)",
    ),
    (
        {"rate_limits": None, "owner_rate_limits": "5/minute"},
        "owner_rate_limits needs rate_limits",
    ),
    (
        {"owner_rate_limits": "5/minute", "limiter": NoPairLimiter()},
        "owner_rate_limits needs a limiter with hit_pair",
    ),
    ({"trusted_proxies": -1}, "trusted_proxies must be an integer >= 0"),
    ({"trusted_proxies": True}, "trusted_proxies must be an integer >= 0"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_with_their_message(
    store: Store, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make(store, **options)
    assert str(caught.value) == message


def test_owner_windows_are_parsed_and_checked_against_the_keys(store: Store) -> None:
    v = make(store, rate_limits="10/minute", owner_rate_limits="100/hour")
    assert v.owner_rate_limits == parse_windows("100/hour")
    # The combined header names must not clash: a key window already named like an owner's.
    with pytest.raises(ConfigurationError, match="owner-"):
        make(store, rate_limits=parse_windows("10/minute"), owner_rate_limits="owner-x")


def test_the_edges_of_the_options_are_accepted(store: Store) -> None:
    v = make(store, expiry_warning=0, cache_ttl=0, negative_cache_ttl=0, trusted_proxies=0)
    assert v.expiry_warning == 0
    header_min = KeyFormat().max_length + len("UserKey ")
    assert make(store, max_header_length=header_min).max_header_length == header_min
    with pytest.raises(ConfigurationError):
        make(store, max_header_length=header_min - 1)
    assert make(store, expiry_warning=None).expiry_warning is None


def test_the_security_defaults(store: Store) -> None:
    v = Verifier(store)
    guard = v.brute_force
    assert isinstance(guard, BruteForceGuard)
    assert (guard.threshold, guard.window) == (100, 60.0)
    budget = v.unknown_id_budget
    assert isinstance(budget, LookupBudget)
    assert (budget.lookups, budget.per) == (60, 60.0)
    assert v.trusted_proxies == 0
    assert v.catalog is None
    catalog = ScopeCatalog({"agents:read": "Read agents"})
    assert make(store, catalog=catalog).catalog is catalog
    assert make(store, brute_force=None, unknown_id_budget=None).brute_force is None


class Plain:
    """A limiter or guard that does not say whether it is in-process: assumed remote."""

    def hit(self, bucket: str, windows: Any, cost: int = 1) -> Any:
        raise AssertionError("a remote limiter is not called without await")

    def is_blocked(self, client: str | None) -> int | None:
        return None


def test_backends_that_do_not_say_they_are_in_process_are_awaited(
    store: Store, factory: KeyFactory
) -> None:
    key = factory.issue("agents:read")
    v = make(store, limiter=Plain(), brute_force=Plain())
    assert (v._limit_inline, v._settle_inline) == (False, False)
    assert v.verify_nowait(key.header, "GET", "/", peer=PEER) is None
    assert v.verify_nowait("UserKey not-a-key", "GET", "/", peer=PEER) is None
    inline = make(store, limiter=MemoryRateLimiter(), brute_force=BruteForceGuard())
    assert (inline._limit_inline, inline._settle_inline) == (True, True)
    assert make(store, brute_force=None)._settle_inline


# -- the store failing -----------------------------------------------------------------------------
def test_a_store_failure_is_logged_with_the_store_and_the_cause(
    store: Store, factory: KeyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key = factory.issue()
    v = make(store)
    store.down = True
    with caplog.at_level(logging.WARNING, logger="keyguard.verifier"):
        assert v.verify(key.header).code is ErrorCode.AUTH_UNAVAILABLE
    text = caplog.text
    assert f"key store lookup ({store!r})" in text
    assert "connection refused by 192.0.2.99" in text


def test_an_observer_hears_of_store_failures(store: Store, factory: KeyFactory) -> None:
    heard: list[Any] = []

    class Listening(Observer):
        def store_failed(self, *args: Any) -> None:
            heard.append(args)

    key = factory.issue()
    v = make(store, observer=Listening())
    store.down = True
    assert v.verify(key.header).code is ErrorCode.AUTH_UNAVAILABLE
    assert heard


def test_usage_counting_takes_over_last_used_at(store: Store, factory: KeyFactory) -> None:
    key = factory.issue()
    counted = make(store, cache_ttl=0, observer=Observer(usage=UsageCounter(store, start=False)))
    assert counted.verify(key.header).allowed
    assert store.touches == []
    plain = make(store, cache_ttl=0, observer=Observer())
    assert plain.verify(key.header).allowed
    assert store.touches == [key.key_id]


# -- the cache and the index -----------------------------------------------------------------------
def test_the_cache_counts_exactly(store: Store, factory: KeyFactory) -> None:
    key = factory.issue()
    unknown = f"UserKey {KeyFormat().generate().plaintext}"
    mono = Clock(100.0)
    v = make(store, monotonic=mono, cache_ttl=10, negative_cache_ttl=10, brute_force=None)
    assert v.verify(key.header).allowed  # miss
    assert v.verify(key.header).allowed  # index
    assert v.verify(key.header).allowed  # index
    assert not v.verify(unknown).allowed  # miss
    assert not v.verify(unknown).allowed  # hit (negative)
    assert v.verify(f"userkey {key.plaintext}").allowed  # hit (not canonical: not indexed)
    assert v.verify(f"userkey {key.plaintext}").allowed  # hit
    stats = v.cache_stats()
    assert (stats.index_hits, stats.hits, stats.misses) == (2, 3, 2)
    assert (stats.records, stats.unknown, stats.indexed) == (1, 1, 1)
    assert stats.hit_ratio == 5 / 7
    assert store.gets == 2


def test_a_header_of_exactly_the_maximum_length_is_indexed(store: Store) -> None:
    fmt = KeyFormat(secret_length=64)
    factory = KeyFactory(store)
    factory.format = fmt
    key = factory.issue()
    v = make(store, key_format=fmt, max_header_length=len(key.header))
    assert v.verify(key.header).allowed
    assert v.verify(key.header).allowed
    assert v.cache_stats().index_hits == 1
    assert v.verify_nowait(key.header, "GET", "/") is not None


def test_only_the_canonical_spelling_is_indexed(store: Store, factory: KeyFactory) -> None:
    key = factory.issue()
    v = make(store)
    for header in (
        [key.header],
        f"userkey {key.plaintext}",
        f"UserKey  {key.plaintext}",
        f" UserKey {key.plaintext}",
    ):
        assert v.verify(header).allowed, header
        assert v.cache_stats().indexed == 0, header
    assert v.verify(key.header.encode()).allowed
    assert v.cache_stats().indexed == 1
    assert v.verify(key.header).allowed  # the same bytes: the index answers
    assert v.cache_stats().index_hits == 1


def test_a_one_item_header_list_is_that_header(store: Store, factory: KeyFactory) -> None:
    key = factory.issue()
    v = make(store)
    assert v.verify([key.header]).allowed
    assert v.verify((key.header.encode(),)).allowed
    assert v.verify([]).code is ErrorCode.MISSING_API_KEY
    assert v.verify([key.header, key.header]).code is ErrorCode.INVALID_REQUEST


def test_only_spaces_separate_the_scheme_from_the_key(store: Store, factory: KeyFactory) -> None:
    key = factory.issue()
    v = make(store)
    assert v.verify(f"  UserKey   {key.plaintext}  ").allowed
    # Any other white space is not printable, so refused before any parsing.
    for space in ("\t", "\u00a0", "\u2003"):
        assert v.verify(f"UserKey{space}{key.plaintext}").code is ErrorCode.INVALID_REQUEST


def test_the_index_stops_at_the_expiry_warning_window(store: Store, factory: KeyFactory) -> None:
    wall, mono = Clock(T0), Clock(500.0)
    window = 100.0
    key = factory.issue(expires_at=T0 + window + 10)
    v = make(store, clock=wall, monotonic=mono, cache_ttl=3600, expiry_warning=window)
    first = v.verify(key.header)
    assert first.allowed
    assert dict(first.headers).get(EXPIRY_HEADER) is None
    wall.now += 9.5
    mono.now += 9.5
    assert dict(v.verify(key.header).headers).get(EXPIRY_HEADER) is None
    assert v.cache_stats().index_hits == 1  # still answered by the index
    wall.now += 0.5  # exactly `window` seconds before the expiry: warned from now on
    mono.now += 0.5
    warned = v.verify(key.header)
    assert dict(warned.headers)[EXPIRY_HEADER] == to_iso(T0 + window + 10)
    # The warned decision is indexed in turn, warning included.
    wall.now += 1
    mono.now += 1
    again = v.verify(key.header)
    assert dict(again.headers)[EXPIRY_HEADER] == to_iso(T0 + window + 10)
    assert v.cache_stats().index_hits == 2
    assert store.gets == 1


def test_an_extra_header_already_on_a_decision_is_kept_with_the_warning(
    store: Store, factory: KeyFactory
) -> None:
    wall = Clock(T0)
    key = factory.issue(expires_at=T0 + 50)
    v = make(store, clock=wall, expiry_warning=100.0)
    decision = v.verify(key.header)
    assert decision.extra_headers == ((EXPIRY_HEADER, to_iso(T0 + 50)),)


def test_unknown_ids_are_remembered_until_the_id_is_created(
    store: Store, factory: KeyFactory
) -> None:
    fmt = KeyFormat()
    g = fmt.generate()
    v = make(store, negative_cache_ttl=60, brute_force=None)
    assert v.verify(f"UserKey {g.plaintext}").code is ErrorCode.INVALID_API_KEY
    assert v.cache_stats().unknown == 1
    hasher = Hasher(pepper_from_env=False)
    record = KeyRecord(key_id=g.key_id, name="late", digest=hasher.digest(g.plaintext))
    store.create(record)  # the store tells this process's verifier: the id is forgotten
    assert v.cache_stats().unknown == 0
    assert v.verify(f"UserKey {g.plaintext}").allowed


def test_invalidating_one_key_keeps_the_others(store: Store, factory: KeyFactory) -> None:
    a, b = factory.issue(), factory.issue()
    v = make(store, cache_ttl=60)
    assert v.verify(a.header).allowed
    assert v.verify(b.header).allowed
    v.invalidate(a.key_id)
    gets = store.gets
    assert v.verify(b.header).allowed
    assert store.gets == gets
    assert v.verify(a.header).allowed
    assert store.gets == gets + 1


def test_the_same_record_read_again_keeps_its_principal(store: Store, factory: KeyFactory) -> None:
    key = factory.issue(owner="acme", name="billing job")
    mono = Clock(0.0)
    v = make(store, monotonic=mono, cache_ttl=10)
    first = v.verify(f"userkey {key.plaintext}")  # not indexed: every request looks it up
    principal = first.principal
    assert principal is not None
    assert (principal.key_id, principal.name, principal.owner) == (
        key.key_id,
        "billing job",
        "acme",
    )
    mono.now = 11  # stale: read again, same version
    assert v.verify(f"userkey {key.plaintext}").principal is principal
    assert store.gets == 2
    mono.now = 15  # fresh for 10 s from the second read (not the first)
    assert v.verify(f"userkey {key.plaintext}").principal is principal
    assert store.gets == 2


def test_an_invalidation_while_a_read_is_in_flight_is_never_lost() -> None:
    cache = KeyCache(
        size=10, ttl=60, negative_size=10, negative_ttl=60, implications=None, dummy_digest="x$y"
    )
    record = KeyRecord(key_id="k" * 12, name="n", digest="sha256$00")
    for invalidations in (1, 2, 3):
        since = cache.generation
        for _ in range(invalidations):
            cache.invalidate(record.key_id)
        cache.put(record, record.key_id, 0.0, since=since)
        assert cache.lookup(record.key_id, 1.0) == (None, False), invalidations
        # Read again with nothing in between: cached.
        since = cache.generation
        cache.put(record, record.key_id, 0.0, since=since)
        entry, fresh = cache.lookup(record.key_id, 1.0)
        assert fresh
        assert entry is not None
        cache.invalidate(None)
    assert cache.generation > 0


def test_the_index_is_bounded_by_the_cache_size(store: Store, factory: KeyFactory) -> None:
    keys = [factory.issue() for _ in range(5)]
    v = make(store, cache_size=3)
    for key in keys:
        assert v.verify(key.header).allowed
        assert v.cache_stats().indexed <= 3
    assert v.cache_stats().indexed == 3


def test_scope_denials_are_exact_and_their_memo_bounded(store: Store, factory: KeyFactory) -> None:
    key = factory.issue("agents:read")
    v = make(store)
    requirement = any_of("tasks:read", all_of("a:b", "c:d"))
    denial = v.verify(key.header, required=requirement)
    assert denial.code is ErrorCode.INSUFFICIENT_SCOPE
    assert denial.required == requirement.scopes
    assert denial.detail == f"This API key lacks the required scope: {requirement.describe()}."
    assert v.verify(key.header, required=requirement) is denial  # memoised per requirement
    for i in range(authn._SCOPE_DENIALS_MAX + 10):
        assert not v.verify(key.header, required=f"r{i}:read").allowed
        assert len(authn._SCOPE_DENIALS) <= authn._SCOPE_DENIALS_MAX


# -- a key's own restrictions, and the client address ----------------------------------------------
@pytest.mark.parametrize("cached", [False, True], ids=["store-read", "index"])
def test_authenticate_applies_a_keys_restrictions_unless_told_not_to(
    store: Store, factory: KeyFactory, cached: bool
) -> None:
    suspended = factory.issue(suspended_at=T0)
    fenced = factory.issue(allowed_networks=("198.51.100.0/24",))
    v = make(store, trusted_proxies=1)

    def code(key: Any, **kw: Any) -> ErrorCode | None:
        if cached:
            v.authenticate(key.header, restrictions=False)  # indexed first
        return v.authenticate(key.header, **kw).code

    assert code(suspended) is ErrorCode.SUSPENDED_API_KEY
    assert code(suspended, peer=PEER) is ErrorCode.SUSPENDED_API_KEY
    assert code(suspended, restrictions=False) is None
    assert code(fenced) is ErrorCode.NETWORK_NOT_ALLOWED
    assert code(fenced, peer=("198.51.100.7", 1)) is None
    assert code(fenced, peer="198.51.100.7") is None
    assert code(fenced, peer=PEER) is ErrorCode.NETWORK_NOT_ALLOWED
    assert code(fenced, peer=PEER, restrictions=False) is None
    # Behind one trusted proxy, the address it appended is the client's.
    assert code(fenced, peer=PEER, forwarded_for="198.51.100.7") is None
    assert code(fenced, peer=PEER, forwarded_for=b"198.51.100.7") is None
    assert code(fenced, peer=PEER, forwarded_for="10.0.0.1, 203.0.113.9") is (
        ErrorCode.NETWORK_NOT_ALLOWED
    )
    assert code(fenced, peer=(), forwarded_for="198.51.100.7") is None


def test_failures_are_counted_against_the_forwarded_client(
    store: Store, factory: KeyFactory
) -> None:
    key = factory.issue()
    wrong = f"UserKey {KeyFormat().generate(key.key_id).plaintext}"
    guard = BruteForceGuard(3, 60.0)
    v = make(store, brute_force=guard, trusted_proxies=1)
    assert v.verify(key.header, peer=PEER).allowed  # cached: the wrong secrets read nothing
    for _ in range(3):
        assert v.verify(wrong, peer=PEER, forwarded_for=b"192.0.2.44").status == 401
    assert v.verify(wrong, peer=PEER, forwarded_for=b"192.0.2.44").status == 429
    assert guard.is_blocked("192.0.2.44") is not None
    assert guard.is_blocked(PEER[0]) is None
    blocked = v.verify(wrong, peer=PEER, forwarded_for="192.0.2.44")
    assert blocked.code is ErrorCode.RATE_LIMITED
    # Anonymous calls (no peer, no forwarded value) are never counted.
    for _ in range(5):
        assert v.authenticate(wrong).code is ErrorCode.INVALID_API_KEY


def test_write_failures_are_logged_with_their_traceback(
    store: Store, factory: KeyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    key = factory.issue()

    def broken(key_id: str, at: float) -> None:
        raise StoreUnavailable("read-only replica")

    store.touch = broken  # type: ignore[method-assign]
    v = make(store, cache_ttl=0, touch_interval=0)
    with caplog.at_level(logging.WARNING, logger="keyguard.verifier"):
        assert v.verify(key.header).allowed
    (record,) = caplog.records
    assert record.getMessage() == f"could not record key use for {key.key_id}"
    assert record.exc_info is not None
    assert "read-only replica" in caplog.text


def test_decisions_are_the_singletons_the_renderer_knows(store: Store) -> None:
    v = make(store)
    missing = v.verify(None)
    assert isinstance(missing, Decision)
    assert missing.code is ErrorCode.MISSING_API_KEY
    assert v.verify(None) is missing


# -- defaults of the call, and the no-await answer -------------------------------------------------
def test_the_method_and_path_default_to_get_slash(store: Store, factory: KeyFactory) -> None:
    from keyguard.core.policy import RoutePolicy

    reader = factory.issue("root:read")
    v = make(store, policy=RoutePolicy({"GET /": "root:read"}))
    assert v.verify(reader.header).allowed
    assert asyncio.run(v.averify(reader.header)).allowed
    nowait = v.verify_nowait(reader.header)
    assert nowait is not None
    assert nowait.allowed
    assert not v.verify(reader.header, "POST").allowed
    assert not v.verify(reader.header, "GET", "/other").allowed


@pytest.mark.parametrize("spelling", ["str", "bytes"])
def test_verify_nowait_answers_a_cached_key_in_either_spelling(
    store: Store, factory: KeyFactory, spelling: str
) -> None:
    key = factory.issue()
    header: str | bytes = key.header if spelling == "str" else key.header.encode()
    v = make(store)
    assert v.verify(header).allowed
    answer = v.verify_nowait(header, "GET", "/")
    assert answer is not None
    assert answer.allowed
    assert v.cache_stats().index_hits == 1


class Racing(Store):
    """A store whose every read races with an invalidation (a revocation published by
    another process while the read is in flight)."""

    verifier: Verifier | None = None

    def get(self, key_id: str) -> KeyRecord | None:
        record = super().get(key_id)
        if self.verifier is not None:
            self.verifier.invalidate(key_id)
        return record


@pytest.mark.parametrize("call", ["verify", "averify"])
def test_a_read_that_raced_an_invalidation_is_used_once_and_not_cached(call: str) -> None:
    store = Racing()
    key = KeyFactory(store).issue()
    v = make(store, cache_ttl=60)
    store.verifier = v

    def run() -> Decision:
        if call == "verify":
            return v.verify(key.header)
        return asyncio.run(v.averify(key.header))

    assert run().allowed
    assert run().allowed
    assert store.gets == 2  # the first answer was not cached: read again
    assert v.cache_stats().records == 0
    store.verifier = None
    assert run().allowed
    assert run().allowed
    assert store.gets == 3


# -- the lookup budget's settings, and the cache's own bookkeeping --------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"lookups": 0}, "lookups must be an integer >= 1, got 0"),
        ({"lookups": True}, "lookups must be an integer >= 1, got True"),
        ({"lookups": 2.5}, "lookups must be an integer >= 1, got 2.5"),
        ({"per": 0}, "per must be a number of seconds > 0, got 0"),
        ({"per": math.inf}, "per must be a number of seconds > 0, got inf"),
        ({"per": "60"}, "per must be a number of seconds > 0, got '60'"),
        ({"max_clients": 0}, "max_clients must be an integer >= 1"),
        ({"max_clients": True}, "max_clients must be an integer >= 1"),
    ],
)
def test_bad_lookup_budgets_are_refused_with_their_message(
    args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LookupBudget(**args)
    assert str(caught.value) == message


def test_the_smallest_lookup_budget_works() -> None:
    clock = Clock(0.0)
    budget = LookupBudget(1, 0.5, max_clients=1, clock=clock)
    assert (budget.lookups, budget.per, budget.max_clients) == (1, 0.5, 1)
    assert budget.take("a")
    assert not budget.take("a")
    clock.now = 0.5  # one lookup per half second
    assert budget.take("a")
    assert budget.take("b")  # evicts "a": one address tracked at most
    assert len(budget) == 1
    assert budget.take("a")


def _cache(**kw: Any) -> KeyCache:
    kw.setdefault("size", 10)
    return KeyCache(
        ttl=60, negative_size=10, negative_ttl=60, implications=None, dummy_digest="x$y", **kw
    )


def test_invalidating_a_key_whose_index_entry_is_gone_is_fine() -> None:
    cache = _cache()
    record = KeyRecord(key_id="k" * 12, name="n", digest="sha256$00")
    entry = cache.put(record, record.key_id, 0.0)
    cache.remember(b"digest-1", entry, 10.0)
    assert cache.index[b"digest-1"] == (entry.allowed, 10.0, entry.principal)  # its own decision
    del cache.index[b"digest-1"]  # evicted by newer keys
    cache.invalidate(record.key_id)
    assert cache.lookup(record.key_id, 1.0) == (None, False)


class Silent(Store):
    """A store that does not tell this process's caches about its writes (a third-party
    store written against the protocol alone)."""

    def _changed(self, key_id: str) -> None:
        pass


def test_a_record_found_after_its_id_was_unknown_clears_the_negative_entry() -> None:
    store = Silent()
    mono = Clock(0.0)
    v = make(store, monotonic=mono, negative_cache_ttl=5, brute_force=None)
    g = KeyFormat().generate()
    header = f"UserKey {g.plaintext}"
    assert v.verify(header).code is ErrorCode.INVALID_API_KEY
    hasher = Hasher(pepper_from_env=False)
    store.create(KeyRecord(key_id=g.key_id, name="late", digest=hasher.digest(g.plaintext)))
    assert v.verify(header).code is ErrorCode.INVALID_API_KEY  # remembered as unknown
    mono.now = 6
    assert v.verify(header).allowed
    assert v.cache_stats().unknown == 0


def test_a_changed_record_replaces_only_its_own_entry() -> None:
    store = Silent()
    factory = KeyFactory(store)
    a, b = factory.issue("x:read"), factory.issue()
    mono = Clock(0.0)
    v = make(store, monotonic=mono, cache_ttl=5)
    assert v.verify(a.header).allowed
    mono.now = 4
    assert v.verify(f"userkey {b.plaintext}").allowed  # cached until 9, never indexed
    factory.change(a, scopes=frozenset({"x:write"}))
    mono.now = 6  # a's entry is stale: read again, a new version
    decision = v.verify(a.header)
    assert decision.principal is not None
    assert decision.principal.grants.scopes == frozenset({"x:write"})
    gets = store.gets
    mono.now = 7
    assert v.verify(f"userkey {b.plaintext}").allowed
    assert store.gets == gets  # b's entry was left alone


class Minimal:
    """An observer written against the RequestObserver protocol alone (no store_failed)."""

    owns_last_used = False
    timed = False
    merges_admitted = False

    def admitted(self, *args: Any) -> None:
        pass

    def refused(self, *args: Any) -> None:
        pass

    def responded(self, *args: Any) -> None:
        pass


def test_an_observer_need_not_hear_of_store_failures(store: Store, factory: KeyFactory) -> None:
    key = factory.issue()
    v = make(store, observer=Minimal())  # type: ignore[arg-type]
    store.down = True
    assert v.verify(key.header).code is ErrorCode.AUTH_UNAVAILABLE


@pytest.mark.parametrize("call", ["verify", "averify", "verify_nowait"])
def test_a_public_path_requested_with_a_key_is_not_charged(
    store: Store, factory: KeyFactory, call: str
) -> None:
    from keyguard.core.decision import ALLOW_PUBLIC
    from keyguard.core.policy import RoutePolicy

    key = factory.issue("agents:read")
    policy = RoutePolicy({"GET /agents": "agents:read"}, public=["/open"])
    v = make(store, policy=policy, rate_limits="1/minute")
    for _ in range(3):
        if call == "verify":
            decision = v.verify(key.header, "GET", "/open", peer=PEER)
        elif call == "averify":
            decision = asyncio.run(v.averify(key.header, "GET", "/open", peer=PEER))
        else:
            answer = v.verify_nowait(key.header, "GET", "/open", peer=PEER)
            assert answer is not None
            decision = answer
        assert decision is ALLOW_PUBLIC
        assert decision.headers == ()
    assert store.gets == 0  # the key was not even looked at
    assert v.verify(key.header, "GET", "/agents").allowed  # its one unit is still there
