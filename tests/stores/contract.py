"""The key-store contract as one test suite, mixed into the tests of every store.

A store's test module subclasses :class:`StoreContract` and provides one fixture,
``make_store``: a factory of fresh, empty stores that closes every store it made at teardown.
The suite's ``store`` fixture is one such store; the model-based test makes one per example.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from keyguard.core.errors import ConfigurationError, ConflictError, KeyExists, KeyNotFound
from keyguard.core.hashing import Hasher
from keyguard.core.pepper import PEPPER_SETTING, check_store
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus
from keyguard.stores.base import MAX_PAGE_SIZE, KeyStore
from tests.stores.usage_contract import UsageContract

StoreFactory = Callable[[], KeyStore]

DIGEST = "sha256$" + "0" * 64


def record(key_id: str = "k0000000000A", **fields: Any) -> KeyRecord:
    fields.setdefault("name", f"key {key_id}")
    fields.setdefault("digest", DIGEST)
    fields.setdefault("created_at", 1_000.0)
    return KeyRecord(key_id=key_id, **fields)


FULL = KeyRecord(
    key_id="3F9aQ2xLm7Pw",
    name="Clé de production 🔑 — «ünïcødé»",
    digest="hmac-sha256$" + "ab" * 32,
    scopes=frozenset({"agents:read", "tasks:execute", "admin", "keys:manage"}),
    owner="équipe-ü",
    created_at=1_700_000_000.123456,
    expires_at=1_800_000_000.5,
    revoked_at=1_750_000_000.25,
    revoked_reason="leaked in a CI log",
    created_by="parentKey001",
    rate_limit="50/10s, 1000/minute",
    metadata={
        "plan": "pro",
        "tags": ["a", "b", "ç"],
        "nested": {"n": 1, "f": 1.5, "t": True, "none": None, "deep": {"list": [1, [2, {}]]}},
        "big": 2**70,
    },
    last_used_at=1_760_000_000.75,
    previous_digest="sha256$" + "cd" * 32,
    previous_expires_at=1_760_000_100.0,
    rotated_at=1_759_999_999.0,
    prefix="acme",
    version=7,
)


def all_pages(store: KeyStore, *, limit: int, **filters: Any) -> list[KeyRecord]:
    """Walk every page of a listing, checking the page invariants on the way."""
    out: list[KeyRecord] = []
    cursor: str | None = None
    for _ in range(10_000):
        page = store.list(limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        out.extend(page.items)
        if page.next_cursor is None:
            return out
        assert len(page.items) == limit, "only the last page may be short"
        cursor = page.next_cursor
    raise AssertionError("pagination does not terminate")


class StoreContract(UsageContract):
    """Every behaviour of :class:`~keyguard.stores.base.KeyStore` that callers rely on."""

    @pytest.fixture
    def store(self, make_store: StoreFactory) -> KeyStore:
        return make_store()

    # -- get / create ----------------------------------------------------------------------
    def test_get_missing_is_none(self, store: KeyStore) -> None:
        assert store.get("nosuchkey000") is None

    def test_round_trip_of_every_field(self, store: KeyStore) -> None:
        store.create(FULL)
        got = store.get(FULL.key_id)
        assert got == FULL
        assert got is not None
        assert got.to_dict() == FULL.to_dict()
        assert isinstance(got.scopes, frozenset)

    def test_round_trip_of_defaults(self, store: KeyStore) -> None:
        rec = KeyRecord(key_id="minimal00001", name="", digest=DIGEST)
        store.create(rec)
        assert store.get(rec.key_id) == rec

    def test_create_duplicate_raises_and_keeps_the_original(self, store: KeyStore) -> None:
        store.create(record("dup000000001", name="first"))
        with pytest.raises(KeyExists):
            store.create(record("dup000000001", name="second"))
        got = store.get("dup000000001")
        assert got is not None
        assert got.name == "first"

    # -- update ------------------------------------------------------------------------
    def test_update_with_the_next_version(self, store: KeyStore) -> None:
        rec = record(scopes=frozenset({"a:read"}))
        store.create(rec)
        new = rec.evolve(name="renamed", scopes=frozenset({"b:write"}), metadata={"x": [1]})
        store.update(new)
        assert store.get(rec.key_id) == new
        newer = new.evolve(revoked_at=2_000.0, revoked_reason="done", owner=None)
        store.update(newer)
        assert store.get(rec.key_id) == newer

    @pytest.mark.parametrize("version", [1, 3, 0, 100], ids=["same", "skip", "older", "far"])
    def test_update_with_a_stale_version_conflicts(self, store: KeyStore, version: int) -> None:
        rec = record()
        store.create(rec)
        with pytest.raises(ConflictError):
            store.update(replace(rec, name="lost", version=version))
        assert store.get(rec.key_id) == rec

    def test_losing_writer_conflicts(self, store: KeyStore) -> None:
        rec = record()
        store.create(rec)
        store.update(rec.evolve(name="winner"))
        with pytest.raises(ConflictError):
            store.update(rec.evolve(name="loser"))
        got = store.get(rec.key_id)
        assert got is not None
        assert (got.name, got.version) == ("winner", 2)

    def test_update_missing_raises_not_found(self, store: KeyStore) -> None:
        with pytest.raises(KeyNotFound):
            store.update(record("ghost0000001").evolve(name="x"))
        assert store.get("ghost0000001") is None

    # -- a change and its audit event, one transaction ------------------------------------
    def test_create_and_update_write_their_audit_event_with_the_change(
        self, store: KeyStore
    ) -> None:
        rec = record()
        created = AuditEvent(at=1.0, action="create", key_id=rec.key_id, actor="a", details={})
        store.create(rec, audit=created)
        assert store.get(rec.key_id) == rec
        assert store.audit() == [created]
        new = rec.evolve(name="renamed")
        updated = AuditEvent(
            at=2.0, action="update", key_id=rec.key_id, actor="b", details={"name": "renamed"}
        )
        store.update(new, audit=updated)
        assert store.get(rec.key_id) == new
        assert store.audit() == [updated, created]
        # Without an event (the verifier's re-hash), nothing is audited.
        store.update(new.evolve(name="quiet"))
        assert store.audit() == [updated, created]

    def test_a_refused_change_writes_no_audit_event(self, store: KeyStore) -> None:
        rec = record()
        store.create(rec)

        def event(action: str) -> AuditEvent:
            return AuditEvent(at=1.0, action=action, key_id=rec.key_id, actor="a")

        with pytest.raises(KeyExists):
            store.create(record(name="twin"), audit=event("create"))
        with pytest.raises(ConflictError):
            store.update(replace(rec, name="stale", version=5), audit=event("update"))
        with pytest.raises(KeyNotFound):
            store.update(record("ghost0000001").evolve(name="x"), audit=event("ghost"))
        assert store.audit() == []
        assert store.get(rec.key_id) == rec

    def test_an_unserialisable_audit_event_refuses_the_change(self, store: KeyStore) -> None:
        rec = record()
        bad = AuditEvent(at=1.0, action="create", key_id=rec.key_id, actor="a", details={"x": {1}})
        with pytest.raises(ConfigurationError):
            store.create(rec, audit=bad)
        assert store.get(rec.key_id) is None
        store.create(rec)
        with pytest.raises(ConfigurationError):
            store.update(rec.evolve(name="x"), audit=bad)
        assert store.get(rec.key_id) == rec
        assert store.audit() == []

    # -- touch -------------------------------------------------------------------------
    def test_touch_is_monotonic_and_keeps_the_version(self, store: KeyStore) -> None:
        rec = record()
        store.create(rec)
        for at, expected in [(5.0, 5.0), (3.0, 5.0), (5.0, 5.0), (9.5, 9.5), (1.0, 9.5)]:
            store.touch(rec.key_id, at)
            got = store.get(rec.key_id)
            assert got is not None
            assert (got.last_used_at, got.version) == (expected, 1)
        assert got == replace(rec, last_used_at=9.5)

    def test_touch_missing_is_a_no_op(self, store: KeyStore) -> None:
        store.touch("ghost0000001", 5.0)
        assert store.get("ghost0000001") is None

    def test_update_keeps_a_newer_last_used_at(self, store: KeyStore) -> None:
        rec = record()
        store.create(rec)
        store.touch(rec.key_id, 50.0)
        # rec was read before the touch: its update must not move last_used_at backwards...
        store.update(rec.evolve(name="renamed"))
        got = store.get(rec.key_id)
        assert got is not None
        assert (got.name, got.last_used_at, got.version) == ("renamed", 50.0, 2)
        # ...but a newer last_used_at carried by an update wins.
        store.update(got.evolve(last_used_at=60.0))
        got = store.get(rec.key_id)
        assert got is not None
        assert got.last_used_at == 60.0

    # -- list ----------------------------------------------------------------------------
    def test_list_empty(self, store: KeyStore) -> None:
        page = store.list()
        assert page.items == ()
        assert page.next_cursor is None

    def test_list_orders_by_created_at_then_key_id(self, store: KeyStore) -> None:
        specs = [("c", 2.0), ("a", 3.0), ("b", 2.0), ("d", 1.0), ("e", 3.0), ("A", 2.0)]
        for key_id, created in specs:
            store.create(record(key_id * 12, created_at=created))
        got = [(r.created_at, r.key_id) for r in store.list().items]
        assert got == sorted((created, key_id * 12) for key_id, created in specs)

    def test_list_filters(self, store: KeyStore) -> None:
        now = 1_000.0
        recs = {
            "active": record("active000001", owner="o1", created_by="admin0000001"),
            "future": record("future000001", owner="o2", expires_at=now + 1),
            "expired": record("expired00001", owner="o1", expires_at=now - 1),
            "boundary": record("boundary0001", owner="o1", expires_at=now),  # expires *at* now
            "revoked": record("revoked00001", owner="o2", revoked_at=now - 5),
            "revexp": record("revexp000001", owner=None, revoked_at=1.0, expires_at=2.0),
            "child": record("child0000001", owner="o1", created_by="active000001"),
        }
        for rec in recs.values():
            store.create(rec)

        def ids(**filters: Any) -> set[str]:
            items = store.list(now=now, **filters).items
            return {name for name, rec in recs.items() if rec in items}

        assert ids() == set(recs)
        assert ids(owner="o1") == {"active", "expired", "boundary", "child"}
        assert ids(owner="nobody") == set()
        assert ids(status=KeyStatus.ACTIVE) == {"active", "future", "child"}
        assert ids(status=KeyStatus.EXPIRED) == {"expired", "boundary"}
        assert ids(status=KeyStatus.REVOKED) == {"revoked", "revexp"}
        assert ids(created_by="active000001") == {"child"}
        assert ids(owner="o1", status=KeyStatus.ACTIVE) == {"active", "child"}
        assert ids(owner="o2", status=KeyStatus.REVOKED, created_by="x") == set()
        # Status depends on the `now` the caller gives.
        later = store.list(now=now + 10, status=KeyStatus.EXPIRED).items
        assert {r.key_id for r in later} == {"expired00001", "boundary0001", "future000001"}

    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 25, 26, MAX_PAGE_SIZE])
    def test_pagination_has_no_gaps_or_duplicates(self, store: KeyStore, limit: int) -> None:
        # Many ties on created_at: the cursor must break them by key_id.
        recs = [record(f"key{i:09d}", created_at=float(i // 4)) for i in range(25)]
        for rec in reversed(recs):
            store.create(rec)
        assert all_pages(store, limit=limit) == recs

    def test_pagination_with_a_filter(self, store: KeyStore) -> None:
        recs = [
            record(f"key{i:09d}", created_at=float(i % 3), owner="even" if i % 2 else "odd")
            for i in range(30)
        ]
        for rec in reversed(recs):  # insertion order must not leak into the listing order
            store.create(rec)
        expected = sorted(
            (r for r in recs if r.owner == "even"), key=lambda r: (r.created_at, r.key_id)
        )
        assert all_pages(store, limit=4, owner="even") == expected

    def test_a_full_last_page_has_no_cursor(self, store: KeyStore) -> None:
        for i in range(4):
            store.create(record(f"key{i:09d}"))
        first = store.list(limit=2)
        assert first.next_cursor is not None
        second = store.list(limit=2, cursor=first.next_cursor)
        assert len(second.items) == 2
        assert second.next_cursor is None

    def test_cursor_is_a_position_not_a_snapshot(self, store: KeyStore) -> None:
        for i in (1, 2, 3):
            store.create(record(f"key{i:09d}", created_at=float(i)))
        first = store.list(limit=2)
        assert first.next_cursor is not None
        store.create(record("before000000", created_at=0.5))  # behind the cursor: not seen
        store.create(record("after0000000", created_at=9.0))  # ahead of it: seen
        rest = store.list(limit=10, cursor=first.next_cursor).items
        assert [r.key_id for r in rest] == ["key000000003", "after0000000"]

    @pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1, True, 1.5, "10"], ids=repr)
    def test_bad_limit(self, store: KeyStore, limit: Any) -> None:
        with pytest.raises(ConfigurationError):
            store.list(limit=limit)
        with pytest.raises(ConfigurationError):
            store.audit(limit=limit)

    @pytest.mark.parametrize(
        "cursor",
        [
            pytest.param("!!!", id="not-base64"),
            pytest.param("bm90LWEtY3Vyc29y", id="no-separator"),
            pytest.param("fGtleQ", id="no-time"),
            pytest.param("_-8", id="not-ascii"),
        ],
    )
    def test_malformed_cursor(self, store: KeyStore, cursor: str) -> None:
        store.create(record())
        with pytest.raises(ConfigurationError):
            store.list(cursor=cursor)

    # -- audit ---------------------------------------------------------------------------
    def test_audit(self, store: KeyStore) -> None:
        assert store.audit() == []
        events = [
            AuditEvent(
                at=100.0 + i,
                action="create" if i < 2 else "revoke",
                key_id=f"key{i % 2:09d}",
                actor="admin",
                details={"i": i, "why": "ünïcødé", "nested": {"ok": [True, None]}},
            )
            for i in range(6)
        ]
        for event in events:
            store.add_audit(event)
        newest_first = events[::-1]
        assert store.audit() == newest_first
        assert store.audit(limit=2) == newest_first[:2]
        assert store.audit(key_id="key000000001") == [
            e for e in newest_first if e.key_id.endswith("1")
        ]
        assert store.audit(key_id="key000000000", limit=1) == [events[4]]
        assert store.audit(key_id="nobody") == []

    # -- settings ------------------------------------------------------------------------
    def test_settings(self, store: KeyStore) -> None:
        assert store.get_setting("pepper_fingerprint") is None
        assert store.set_setting("pepper_fingerprint", "a", only_if_absent=True) == "a"
        # The first writer wins; later "if absent" writers get the stored value back.
        assert store.set_setting("pepper_fingerprint", "b", only_if_absent=True) == "a"
        assert store.get_setting("pepper_fingerprint") == "a"
        assert store.set_setting("pepper_fingerprint", "c") == "c"
        assert store.get_setting("pepper_fingerprint") == "c"
        assert store.get_setting("other") is None

    # -- once-only notification markers -----------------------------------------------------
    def test_a_notification_marker_is_claimed_once(self, store: KeyStore) -> None:
        name = "expiring:k0000000000A:1800000000"
        assert store.claim_notification(name, 3600) is True
        assert store.claim_notification(name, 3600) is False
        assert store.claim_notification("expiring:k0000000000B:1800000000", 3600) is True
        store.release_notification(name)
        assert store.claim_notification(name, 3600) is True
        store.release_notification("never-claimed")  # nothing to give back: no error

    def test_a_notification_marker_expires(self, store: KeyStore) -> None:
        assert store.claim_notification("rotation_due:x", 0.05, now=time.time()) is True
        time.sleep(0.3)  # Redis counts the ttl on its own clock, the others on ``now``
        assert store.claim_notification("rotation_due:x", 60, now=time.time()) is True
        assert store.claim_notification("rotation_due:x", 60, now=time.time()) is False

    @pytest.mark.parametrize(
        ("name", "ttl"),
        [
            pytest.param("", 60, id="empty"),
            pytest.param("a b", 60, id="space"),
            pytest.param("a\nb", 60, id="newline"),
            pytest.param("x" * 201, 60, id="too-long"),
            pytest.param("ok", 0, id="zero-ttl"),
            pytest.param("ok", -1, id="negative-ttl"),
            pytest.param("ok", True, id="bool-ttl"),
        ],
    )
    def test_bad_notification_markers(self, store: KeyStore, name: str, ttl: Any) -> None:
        with pytest.raises(ConfigurationError):
            store.claim_notification(name, ttl)

    def test_racing_claims_have_one_winner(self, store: KeyStore) -> None:
        barrier = threading.Barrier(8)

        def claim(_: int) -> bool:
            barrier.wait()
            return store.claim_notification("daily_limit:k0000000000A:2030-01-01", 3600)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(claim, range(8)))
        assert results.count(True) == 1

    def test_pepper_fingerprint_is_checked(self, store: KeyStore) -> None:
        plain = Hasher(pepper_from_env=False)
        peppered = Hasher("p" * 32, pepper_from_env=False)
        check_store(store, peppered, write=False)  # read-only: records nothing
        assert store.get_setting(PEPPER_SETTING) is None
        check_store(store, peppered)
        assert store.get_setting(PEPPER_SETTING) == peppered.fingerprint
        check_store(store, peppered)
        for wrong in (plain, Hasher("q" * 32, pepper_from_env=False)):
            with pytest.raises(ConfigurationError, match="pepper mismatch") as info:
                check_store(store, wrong)
            assert "p" * 16 not in str(info.value)
        assert store.get_setting(PEPPER_SETTING) == peppered.fingerprint

    def test_migrating_to_a_pepper_is_explicit(self, store: KeyStore) -> None:
        check_store(store, Hasher(pepper_from_env=False))
        with pytest.raises(ConfigurationError, match="pepper mismatch"):
            check_store(store, Hasher("p" * 32, pepper_from_env=False))
        migrating = Hasher("p" * 32, pepper_from_env=False, accept_unpeppered=True)
        check_store(store, migrating)
        assert store.get_setting(PEPPER_SETTING) == migrating.fingerprint
        # Once migrated, a process without the pepper is refused.
        with pytest.raises(ConfigurationError, match="pepper mismatch"):
            check_store(store, Hasher(pepper_from_env=False))

    # -- async ---------------------------------------------------------------------------
    async def test_async_parity(self, store: KeyStore) -> None:
        rec = record()
        store.create(rec)
        assert await store.aget(rec.key_id) == store.get(rec.key_id) == rec
        assert await store.aget("ghost0000001") is None
        await store.atouch(rec.key_id, 10.0)
        await store.atouch(rec.key_id, 5.0)
        await store.atouch("ghost0000001", 5.0)
        got = await store.aget(rec.key_id)
        assert got is not None
        assert (got.last_used_at, got.version) == (10.0, 1)
        many = await asyncio.gather(*(store.aget(rec.key_id) for _ in range(20)))
        assert all(r == got for r in many)
        await store.aclose()  # async connections belong to this event loop
        assert await store.aget(rec.key_id) == got  # a closed async side reopens on demand
        await store.aclose()

    # -- lifecycle -----------------------------------------------------------------------
    def test_ping_and_context_manager(self, make_store: StoreFactory) -> None:
        with make_store() as store:
            store.ping()
            assert "3F9aQ2xLm7Pw" not in repr(store)

    # -- concurrency ---------------------------------------------------------------------
    def test_concurrent_read_modify_write_loses_nothing(self, store: KeyStore) -> None:
        threads, per_thread = 20, 5
        store.create(record("hot000000001", metadata={"n": 0}))
        barrier = threading.Barrier(threads)

        def worker() -> int:
            barrier.wait()
            done = conflicts = 0
            while done < per_thread:
                current = store.get("hot000000001")
                assert current is not None
                try:
                    store.update(current.evolve(metadata={"n": current.metadata["n"] + 1}))
                except ConflictError:
                    conflicts += 1
                    continue
                done += 1
            return done

        with ThreadPoolExecutor(threads) as pool:
            successes = sum(f.result() for f in [pool.submit(worker) for _ in range(threads)])
        final = store.get("hot000000001")
        assert final is not None
        assert successes == threads * per_thread
        assert final.version == 1 + successes
        assert final.metadata["n"] == successes

    def test_concurrent_touches_and_updates(self, store: KeyStore) -> None:
        store.create(record("hot000000001"))

        def toucher(start: int) -> None:
            for i in range(start, 200, 4):
                store.touch("hot000000001", float(i))

        def updater() -> None:
            for _ in range(10):
                while True:
                    current = store.get("hot000000001")
                    assert current is not None
                    try:
                        store.update(current.evolve(name=current.name + "."))
                        break
                    except ConflictError:
                        continue

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(toucher, i) for i in range(4)] + [
                pool.submit(updater) for _ in range(2)
            ]
            for f in futures:
                f.result()
        final = store.get("hot000000001")
        assert final is not None
        assert (final.last_used_at, final.version) == (199.0, 21)

    # -- model-based -----------------------------------------------------------------------
    def test_matches_a_dict_model(self, make_store: StoreFactory) -> None:
        class Machine(_ModelMachine):
            def __init__(self) -> None:
                super().__init__(make_store)

        run_state_machine_as_test(
            Machine,
            settings=settings(max_examples=50, stateful_step_count=30, deadline=None),
        )


# -- the model-based test ------------------------------------------------------------------
KEY_IDS = ("kid000000001", "kid000000002", "kid000000003", "kid000000004")
TIMES = (1.0, 2.0, 3.0)
OPT_TIMES = st.sampled_from((None, 1.0, 2.0, 2.5, 4.0))
OWNERS = st.sampled_from((None, "o1", "o2"))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
METADATA = st.dictionaries(st.text(max_size=5), JSON, max_size=3)
SCOPES = st.frozensets(st.sampled_from(("admin", "agents:read", "agents:*", "tasks:execute")))


class _ModelMachine(RuleBasedStateMachine):
    """Drives a store and a plain dict through the same operations; they must agree."""

    def __init__(self, make_store: StoreFactory) -> None:
        super().__init__()
        self.store = make_store()
        self.model: dict[str, KeyRecord] = {}
        self.events: list[AuditEvent] = []
        self.clock = 0.0

    def teardown(self) -> None:
        self.store.close()

    @rule(
        key_id=st.sampled_from(KEY_IDS),
        name=st.text(max_size=8),
        created_at=st.sampled_from(TIMES),
        owner=OWNERS,
        created_by=st.sampled_from((None, KEY_IDS[0])),
        expires_at=OPT_TIMES,
        revoked_at=OPT_TIMES,
        scopes=SCOPES,
        metadata=METADATA,
    )
    def create(self, key_id: str, **fields: Any) -> None:
        rec = KeyRecord(key_id=key_id, digest=DIGEST, **fields)
        if key_id in self.model:
            with pytest.raises(KeyExists):
                self.store.create(rec)
        else:
            self.store.create(rec)
            self.model[key_id] = rec

    @rule(
        key_id=st.sampled_from(KEY_IDS),
        skew=st.sampled_from((0, 0, 0, -1, 1)),
        name=st.text(max_size=8),
        owner=OWNERS,
        expires_at=OPT_TIMES,
        revoked_at=OPT_TIMES,
        last_used_at=OPT_TIMES,
        metadata=METADATA,
    )
    def update(self, key_id: str, skew: int, **changes: Any) -> None:
        base = self.model.get(key_id) or KeyRecord(key_id=key_id, name="", digest=DIGEST)
        new = replace(base, version=base.version + 1 + skew, **changes)
        if key_id not in self.model:
            with pytest.raises(KeyNotFound):
                self.store.update(new)
        elif skew:
            with pytest.raises(ConflictError):
                self.store.update(new)
        else:
            self.store.update(new)
            # touch() runs outside the version scheme: an update never moves last_used_at back.
            if (base.last_used_at or 0.0) > (new.last_used_at or 0.0):
                new = replace(new, last_used_at=base.last_used_at)
            self.model[key_id] = new

    @rule(key_id=st.sampled_from(KEY_IDS), at=st.sampled_from((1.0, 2.0, 3.0, 4.0)))
    def touch(self, key_id: str, at: float) -> None:
        self.store.touch(key_id, at)
        rec = self.model.get(key_id)
        if rec is not None and (rec.last_used_at is None or rec.last_used_at < at):
            self.model[key_id] = replace(rec, last_used_at=at)

    @rule(
        owner=OWNERS,
        created_by=st.sampled_from((None, KEY_IDS[0])),
        status=st.sampled_from((None, *KeyStatus)),
        now=st.sampled_from((0.0, 2.0, 2.5, 5.0)),
        limit=st.integers(1, 5),
    )
    def list_all_pages(
        self,
        owner: str | None,
        created_by: str | None,
        status: KeyStatus | None,
        now: float,
        limit: int,
    ) -> None:
        expected = sorted(
            (
                r
                for r in self.model.values()
                if (owner is None or r.owner == owner)
                and (created_by is None or r.created_by == created_by)
                and (status is None or r.status(now) == status)
            ),
            key=lambda r: (r.created_at, r.key_id),
        )
        got = all_pages(
            self.store, limit=limit, owner=owner, created_by=created_by, status=status, now=now
        )
        assert got == expected

    @rule(
        key_id=st.sampled_from(KEY_IDS),
        action=st.sampled_from(("create", "revoke")),
        details=METADATA,
    )
    def add_audit(self, key_id: str, action: str, details: dict[str, Any]) -> None:
        self.clock += 1.0
        event = AuditEvent(at=self.clock, action=action, key_id=key_id, actor="a", details=details)
        self.store.add_audit(event)
        self.events.append(event)

    @rule(key_id=st.sampled_from((None, *KEY_IDS)), limit=st.integers(1, 4))
    def audit(self, key_id: str | None, limit: int) -> None:
        expected = [e for e in reversed(self.events) if key_id is None or e.key_id == key_id]
        assert self.store.audit(key_id=key_id, limit=limit) == expected[:limit]

    @invariant()
    def every_record_matches(self) -> None:
        for key_id in KEY_IDS:
            assert self.store.get(key_id) == self.model.get(key_id)
