"""KeyManager: validation, lifecycle, no privilege escalation, audit, and key hygiene."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import keyguard.management.reader
from keyguard.core.errors import (
    ConfigurationError,
    ConflictError,
    ErrorCode,
    InvalidOperation,
    KeyExists,
    KeyguardError,
    KeyNotFound,
    PermissionDenied,
    ScopeError,
    StoreUnavailable,
)
from keyguard.core.hashing import Hasher
from keyguard.core.keys import BASE62, GeneratedKey, KeyFormat
from keyguard.core.pepper import PEPPER_SETTING
from keyguard.core.ratelimit import Window, parse_windows
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus
from keyguard.core.scopes import ScopeCatalog
from keyguard.core.store import KeyStore
from keyguard.management import UNSET, CreatedKey, KeyManager
from keyguard.stores.memory import MemoryStore

T0 = 1_800_000_000.0
DAY = 86400.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> Iterator[MemoryStore]:
    with MemoryStore() as s:
        yield s


def make_manager(store: MemoryStore, clock: FakeClock, **kw: Any) -> KeyManager:
    return KeyManager(store, hasher=Hasher(pepper_from_env=False), clock=clock, **kw)


@pytest.fixture
def manager(store: MemoryStore, clock: FakeClock) -> KeyManager:
    return make_manager(store, clock)


def code(manager: KeyManager, plaintext: str) -> ErrorCode | None:
    return manager.verify(plaintext).code


def other_secret(plaintext: str) -> str:
    """Same key id, a different (well-formed) secret."""
    return KeyFormat().generate(plaintext.split("_")[1]).plaintext


# -- create ---------------------------------------------------------------------------------------
def test_create_returns_the_plaintext_once_and_stores_only_its_digest(
    manager: KeyManager, store: MemoryStore
) -> None:
    created = manager.create(
        "ci deploy",
        ["agents:read", "tasks:execute"],
        owner="team-a",
        expires_in=timedelta(days=90),
        rate_limit="1000/min",
        metadata={"env": "prod", "n": 3},
    )
    rec = created.record
    assert created.plaintext.startswith(f"kg_{rec.key_id}_")
    assert store.get(rec.key_id) == rec
    assert rec.digest == Hasher(pepper_from_env=False).digest(created.plaintext)
    assert created.plaintext not in json.dumps(rec.to_dict())
    assert rec.scopes == {"agents:read", "tasks:execute"}
    assert rec.owner == "team-a"
    assert rec.created_at == T0
    assert rec.expires_at == T0 + 90 * DAY
    assert rec.rate_limit == "1000/minute"  # normalised
    assert rec.metadata == {"env": "prod", "n": 3}
    assert rec.created_by is None
    assert manager.verify(created.plaintext).allowed


def test_created_key_repr_hides_the_plaintext(manager: KeyManager) -> None:
    created = manager.create("k", ["agents:read"])
    for text in (repr(created), str(created), f"{created}", repr(created.record)):
        assert created.plaintext not in text
        assert created.plaintext.split("_")[2] not in text
    assert "redacted" in repr(created)
    with pytest.raises(AttributeError):
        created.plaintext = "x"  # type: ignore[misc]


def test_create_accepts_aware_datetimes_and_epoch_seconds(manager: KeyManager) -> None:
    when = datetime.fromtimestamp(T0 + DAY, UTC)
    assert manager.create("a", expires_at=when).record.expires_at == T0 + DAY
    assert manager.create("b", expires_at=T0 + 5).record.expires_at == T0 + 5
    assert manager.create("c", expires_in=60).record.expires_at == T0 + 60


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"name": ""}, ConfigurationError, "name", id="empty-name"),
        pytest.param({"name": "   "}, ConfigurationError, "name", id="blank-name"),
        pytest.param({"name": "x" * 201}, ConfigurationError, "200", id="long-name"),
        pytest.param({"name": "a\nb"}, ConfigurationError, "control", id="newline-name"),
        pytest.param({"name": 42}, ConfigurationError, "string", id="non-str-name"),
        pytest.param(
            {"scopes": ["agents:read", "nope:read", "zzz:write"]},
            ScopeError,
            "nope:read, zzz:write",
            id="unknown-scopes-listed",
        ),
        pytest.param({"scopes": ["Agents:read"]}, ScopeError, "malformed", id="bad-scope"),
        pytest.param({"scopes": "agents:read"}, ConfigurationError, "single", id="scope-str"),
        pytest.param({"expires_at": T0 - 1}, ConfigurationError, "future", id="past"),
        pytest.param({"expires_at": T0}, ConfigurationError, "future", id="now"),
        pytest.param(
            {"expires_at": datetime(2030, 1, 1)},
            ConfigurationError,
            "timezone",
            id="naive-datetime",
        ),
        pytest.param(
            {"expires_at": T0 + 10, "expires_in": 10}, ConfigurationError, "not both", id="both"
        ),
        pytest.param({"expires_in": -5}, ConfigurationError, "positive", id="negative-in"),
        pytest.param({"expires_in": 0}, ConfigurationError, "positive", id="zero-in"),
        pytest.param({"expires_in": math.nan}, ConfigurationError, "finite", id="nan-in"),
        pytest.param({"expires_at": math.inf}, ConfigurationError, "range", id="inf-at"),
        pytest.param({"expires_in": 1e300}, ConfigurationError, "range", id="huge-in"),
        pytest.param({"expires_at": True}, ConfigurationError, "epoch", id="bool-at"),
        pytest.param({"rate_limit": "lots"}, ConfigurationError, "rate-limit", id="bad-limit"),
        pytest.param({"rate_limit": ""}, ConfigurationError, "empty", id="empty-limit"),
        pytest.param({"metadata": {"x": object()}}, ConfigurationError, "JSON", id="meta-obj"),
        pytest.param({"metadata": {1: "a"}}, ConfigurationError, "keys", id="meta-int-key"),
        pytest.param({"metadata": {"x": math.nan}}, ConfigurationError, "JSON", id="meta-nan"),
        pytest.param(
            {"metadata": {"x": "y" * 17000}}, ConfigurationError, "16 KiB", id="meta-too-big"
        ),
        pytest.param({"metadata": ["a"]}, ConfigurationError, "mapping", id="meta-list"),
        pytest.param({"owner": ""}, ConfigurationError, "owner", id="empty-owner"),
        pytest.param({"actor": ""}, ConfigurationError, "actor", id="empty-actor"),
    ],
)
def test_create_rejects_bad_input(
    manager: KeyManager,
    store: MemoryStore,
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    kwargs = {"name": "key", **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(error, match=match):
        manager.create(name, **kwargs)
    assert store.list().items == ()
    assert store.audit() == []


def test_metadata_is_copied(manager: KeyManager) -> None:
    meta: dict[str, Any] = {"tags": ["a"]}
    rec = manager.create("k", metadata=meta).record
    meta["tags"].append("b")
    assert rec.metadata == {"tags": ["a"]}


class CollidingFormat(KeyFormat):
    """Hands out the given key ids first, then random ones."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__()
        self.ids = ids

    def generate(self, key_id: str | None = None) -> GeneratedKey:
        if key_id is None and self.ids:
            key_id = self.ids.pop(0)
        return super().generate(key_id)


def test_key_id_collisions_are_retried(store: MemoryStore, clock: FakeClock) -> None:
    first = make_manager(store, clock).create("first")
    fmt = CollidingFormat([first.key_id, first.key_id])
    second = make_manager(store, clock, key_format=fmt).create("second")
    assert second.key_id != first.key_id
    assert fmt.ids == []
    assert len(store.list().items) == 2
    fmt.ids = [first.key_id] * 5
    with pytest.raises(KeyExists):
        make_manager(store, clock, key_format=fmt).create("third")
    assert len(store.audit()) == 2


# -- lifetime policy -------------------------------------------------------------------------
def test_max_lifetime_bounds_creation_and_sets_a_default(
    store: MemoryStore, clock: FakeClock
) -> None:
    m = make_manager(store, clock, max_lifetime=90 * DAY)
    assert m.create("default").record.expires_at == T0 + 90 * DAY
    assert m.create("ok", expires_in=90 * DAY).record.expires_at == T0 + 90 * DAY
    with pytest.raises(ConfigurationError, match="maximum lifetime of 90d"):
        m.create("too long", expires_in=91 * DAY)


def test_default_lifetime(store: MemoryStore, clock: FakeClock) -> None:
    m = make_manager(store, clock, max_lifetime=90 * DAY, default_lifetime=30 * DAY)
    assert m.create("k").record.expires_at == T0 + 30 * DAY
    assert make_manager(store, clock).create("k").record.expires_at is None


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"max_lifetime": 0}, id="zero-max"),
        pytest.param({"max_lifetime": -1}, id="negative-max"),
        pytest.param({"max_lifetime": 10, "default_lifetime": 20}, id="default>max"),
        pytest.param({"expiring_soon": -1}, id="negative-soon"),
        pytest.param({"default_rate_limit": "nonsense"}, id="bad-default-limit"),
    ],
)
def test_bad_manager_settings(store: MemoryStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        KeyManager(store, **kwargs)


def test_extending_is_bounded_by_max_lifetime_from_the_last_rotation(
    store: MemoryStore, clock: FakeClock
) -> None:
    m = make_manager(store, clock, max_lifetime=30 * DAY)
    k = m.create("k", expires_in=30 * DAY)
    with pytest.raises(ConfigurationError, match="maximum lifetime"):
        m.update(k.key_id, expires_at=T0 + 31 * DAY)
    with pytest.raises(ConfigurationError, match="must expire"):
        m.update(k.key_id, expires_at=None)
    clock.advance(20 * DAY)
    m.rotate(k.key_id, grace=0)
    # A new secret may live another 30 days.
    rec = m.update(k.key_id, expires_at=clock.now + 30 * DAY)
    assert rec.expires_at == T0 + 50 * DAY


# -- read --------------------------------------------------------------------------------
def test_get_unknown_or_malformed_id(manager: KeyManager) -> None:
    with pytest.raises(KeyNotFound, match="AAAAAAAAAAAA"):
        manager.get("AAAAAAAAAAAA")
    with pytest.raises(KeyNotFound):
        manager.get("not an id")
    with pytest.raises(KeyNotFound) as info:
        manager.get("x" * 5000)
    assert len(str(info.value)) < 100


def test_list_filters_and_pages(manager: KeyManager, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append(manager.create(f"k{i}", owner="a" if i % 2 else "b").key_id)
    manager.revoke(ids[0], reason="test")
    page = manager.list(limit=2)
    assert [r.key_id for r in page.items] == ids[:2]
    page2 = manager.list(limit=2, cursor=page.next_cursor)
    assert [r.key_id for r in page2.items] == ids[2:4]
    assert [r.key_id for r in manager.iter_all(page_size=2)] == ids
    assert [r.key_id for r in manager.iter_all(owner="a")] == [ids[1], ids[3]]
    assert [r.key_id for r in manager.iter_all(status="revoked")] == [ids[0]]
    assert len(list(manager.iter_all(status=KeyStatus.ACTIVE))) == 4
    with pytest.raises(ConfigurationError, match="unknown status"):
        manager.list(status="sleeping")


def test_expiring_soon(manager: KeyManager, clock: FakeClock) -> None:
    soon = manager.create("soon", expires_in=2 * DAY)
    sooner = manager.create("sooner", expires_in=1 * DAY)
    manager.create("later", expires_in=30 * DAY)
    manager.create("never")
    gone = manager.create("revoked", expires_in=DAY)
    manager.revoke(gone.key_id, reason="x")
    assert [r.key_id for r in manager.expiring()] == [sooner.key_id, soon.key_id]
    assert [r.key_id for r in manager.expiring(within=timedelta(hours=25))] == [sooner.key_id]
    assert len(manager.expiring(within=31 * DAY)) == 3
    clock.advance(1.5 * DAY)  # "sooner" has expired: no longer "expiring"
    assert [r.key_id for r in manager.expiring()] == [soon.key_id]


# -- update --------------------------------------------------------------------------------
def test_update_fields(manager: KeyManager) -> None:
    k = manager.create("old", ["agents:read", "agents:write"], rate_limit="10/s")
    rec = manager.update(
        k.key_id,
        name="new",
        metadata={"a": 1},
        scopes=["agents:read"],
        rate_limit=None,
        expires_at=T0 + DAY,
        actor="ops",
    )
    assert (rec.name, dict(rec.metadata), rec.scopes) == (
        "new",
        {"a": 1},
        frozenset({"agents:read"}),
    )
    assert rec.rate_limit is None
    assert rec.expires_at == T0 + DAY
    assert rec.version == k.record.version + 1
    event = manager.audit(k.key_id, limit=1)[0]
    assert (event.action, event.actor) == ("update", "ops")
    assert event.details["scopes"] == ["agents:read"]
    # Unchanged values: no write, no audit event.
    assert manager.update(k.key_id, name="new", expires_at=UNSET) == rec
    assert len(manager.audit(k.key_id)) == 2


def test_update_rejects_bad_values_and_revoked_keys(manager: KeyManager) -> None:
    k = manager.create("k")
    with pytest.raises(ScopeError):
        manager.update(k.key_id, scopes=["bogus:scope"])
    with pytest.raises(ConfigurationError, match="future"):
        manager.update(k.key_id, expires_at=T0 - 1)
    manager.revoke(k.key_id, reason="done")
    with pytest.raises(InvalidOperation, match="revoked"):
        manager.update(k.key_id, name="zombie")
    with pytest.raises(KeyNotFound):
        manager.update("AAAAAAAAAAAA", name="x")


class RacingStore(MemoryStore):
    """Lets another writer change the record just before each of our first ``races`` writes."""

    def __init__(self, races: int) -> None:
        super().__init__()
        self.races = races

    def update(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        if self.races > 0:
            self.races -= 1
            current = self.get(record.key_id)
            assert current is not None
            super().update(current.evolve(metadata={"touched_by": "other writer"}))
        super().update(record, audit=audit)


def test_update_retries_on_conflict_and_keeps_the_other_writers_change(clock: FakeClock) -> None:
    with RacingStore(races=0) as store:
        m = make_manager(store, clock)
        k = m.create("k")
        store.races = 2
        rec = m.update(k.key_id, name="mine")
        assert rec.name == "mine"
        assert rec.metadata == {"touched_by": "other writer"}
        assert [e.action for e in m.audit(k.key_id)] == ["update", "create"]
        store.races = 100
        with pytest.raises(ConflictError, match="gave up"):
            m.update(k.key_id, name="never")


# -- revoke --------------------------------------------------------------------------------
def test_revoke_is_one_way_idempotent_and_audited(manager: KeyManager) -> None:
    k = manager.create("k", ["agents:read"])
    assert manager.revoke(k.key_id, reason="leaked in CI log", actor="alice") == [k.key_id]
    rec = manager.get(k.key_id)
    assert rec.revoked_at == T0
    assert rec.revoked_reason == "leaked in CI log"
    assert code(manager, k.plaintext) is ErrorCode.REVOKED_API_KEY
    assert manager.revoke(k.key_id, reason="again") == []
    assert manager.get(k.key_id).revoked_reason == "leaked in CI log"
    with pytest.raises(InvalidOperation):
        manager.rotate(k.key_id)
    events = manager.audit(k.key_id)
    assert [(e.action, e.actor) for e in events] == [("revoke", "alice"), ("create", "system")]
    assert events[0].details == {"reason": "leaked in CI log"}


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param("x" * 501, id="long"),
    ],
)
def test_revoke_needs_a_reason(manager: KeyManager, reason: str) -> None:
    k = manager.create("k")
    with pytest.raises(ConfigurationError, match="reason"):
        manager.revoke(k.key_id, reason=reason)
    assert manager.get(k.key_id).revoked_at is None


def test_revoke_cascades_transitively(manager: KeyManager) -> None:
    root = manager.create("root", ["admin"], owner="o")
    child = manager.create("child", ["keys:manage", "agents:read"], parent=root.record)
    grandchild = manager.create("grandchild", ["agents:read"], parent=child.record)
    sibling = manager.create("sibling", ["agents:read"], parent=root.record)
    unrelated = manager.create("unrelated", owner="o")
    revoked = manager.revoke(root.key_id, reason="compromised")
    assert revoked[0] == root.key_id
    assert set(revoked) == {root.key_id, child.key_id, grandchild.key_id, sibling.key_id}
    for k in (root, child, grandchild, sibling):
        assert code(manager, k.plaintext) is ErrorCode.REVOKED_API_KEY
    assert manager.verify(unrelated.plaintext).allowed
    cascade = [e for e in manager.audit() if e.details.get("cascade_from") == root.key_id]
    assert {e.key_id for e in cascade} == {child.key_id, grandchild.key_id, sibling.key_id}


def test_revoke_without_cascade_then_cascade_later(manager: KeyManager) -> None:
    root = manager.create("root", ["admin"])
    child = manager.create("child", ["agents:read"], parent=root.record)
    assert manager.revoke(root.key_id, reason="r", cascade=False) == [root.key_id]
    assert manager.verify(child.plaintext).allowed
    assert manager.revoke(root.key_id, reason="r") == [child.key_id]
    assert code(manager, child.plaintext) is ErrorCode.REVOKED_API_KEY


def test_revoked_key_cannot_act_as_parent(manager: KeyManager) -> None:
    root = manager.create("root", ["admin"])
    manager.revoke(root.key_id, reason="r")
    with pytest.raises(PermissionDenied, match="revoked"):
        manager.create("child", parent=root.record)


# -- rotate --------------------------------------------------------------------------------
def test_rotate_keeps_the_id_and_gives_the_old_secret_a_grace_period(
    manager: KeyManager, clock: FakeClock
) -> None:
    k = manager.create("k", ["agents:read"])
    new = manager.rotate(k.key_id, grace=timedelta(hours=1), actor="bob")
    assert new.key_id == k.key_id
    assert new.plaintext != k.plaintext
    assert new.record.rotated_at == T0
    assert new.record.previous_expires_at == T0 + 3600
    assert manager.verify(new.plaintext).allowed
    assert manager.verify(k.plaintext).allowed
    clock.advance(3599)
    assert manager.verify(k.plaintext).allowed
    clock.advance(1)
    assert code(manager, k.plaintext) is ErrorCode.INVALID_API_KEY
    assert manager.verify(new.plaintext).allowed
    event = manager.audit(k.key_id, limit=1)[0]
    assert (event.action, event.actor, event.details["grace_seconds"]) == ("rotate", "bob", 3600)


def test_rotate_with_zero_grace_stops_the_old_secret_at_once(manager: KeyManager) -> None:
    k = manager.create("k")
    new = manager.rotate(k.key_id, grace=0)
    assert new.record.previous_digest is None
    assert code(manager, k.plaintext) is ErrorCode.INVALID_API_KEY
    assert manager.verify(new.plaintext).allowed


def test_rotating_twice_keeps_only_the_latest_previous_secret(manager: KeyManager) -> None:
    first = manager.create("k")
    second = manager.rotate(first.key_id)
    third = manager.rotate(first.key_id)
    assert code(manager, first.plaintext) is ErrorCode.INVALID_API_KEY
    assert manager.verify(second.plaintext).allowed
    assert manager.verify(third.plaintext).allowed


@pytest.mark.parametrize(
    "grace", [pytest.param(-1, id="negative"), pytest.param(31 * DAY, id="31d")]
)
def test_rotate_grace_bounds(manager: KeyManager, grace: float) -> None:
    k = manager.create("k")
    with pytest.raises(ConfigurationError, match="grace"):
        manager.rotate(k.key_id, grace=grace)
    assert manager.get(k.key_id) == k.record


def test_rotate_refuses_expired_and_unknown_keys(manager: KeyManager, clock: FakeClock) -> None:
    k = manager.create("k", expires_in=10)
    clock.advance(10)
    with pytest.raises(InvalidOperation, match="expired"):
        manager.rotate(k.key_id)
    with pytest.raises(KeyNotFound):
        manager.rotate("AAAAAAAAAAAA")
    with pytest.raises(KeyNotFound):
        manager.rotate("bad")


def test_revoking_a_rotated_key_drops_the_grace_secret(manager: KeyManager) -> None:
    k = manager.create("k")
    new = manager.rotate(k.key_id)
    manager.revoke(k.key_id, reason="r")
    assert not manager.verify(k.plaintext).allowed
    assert code(manager, new.plaintext) is ErrorCode.REVOKED_API_KEY


# -- expire --------------------------------------------------------------------------------
def test_expire_now(manager: KeyManager, clock: FakeClock) -> None:
    k = manager.create("k", expires_in=DAY)
    rec = manager.expire(k.key_id, actor="ops")
    assert rec.expires_at == T0
    assert code(manager, k.plaintext) is ErrorCode.EXPIRED_API_KEY
    # Already expired: nothing to do, nothing audited.
    clock.advance(5)
    assert manager.expire(k.key_id) == rec
    assert [e.action for e in manager.audit(k.key_id)] == ["expire", "create"]


def test_expire_at(manager: KeyManager, clock: FakeClock) -> None:
    k = manager.create("k", expires_in=DAY)
    assert manager.expire(k.key_id, at=T0 + 60).expires_at == T0 + 60
    with pytest.raises(InvalidOperation, match="never postpones"):
        manager.expire(k.key_id, at=T0 + 120)
    forever = manager.create("forever")
    assert manager.expire(forever.key_id, at=T0 + 10).expires_at == T0 + 10
    gone = manager.create("gone")
    manager.revoke(gone.key_id, reason="r")
    with pytest.raises(InvalidOperation, match="revoked"):
        manager.expire(gone.key_id)


# -- no privilege escalation ---------------------------------------------------------------
@pytest.fixture
def parent(manager: KeyManager) -> CreatedKey:
    return manager.create(
        "parent",
        ["keys:manage", "agents:*", "tasks:read"],
        owner="acme",
        expires_in=30 * DAY,
        rate_limit="50/10s, 500/minute",
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"scopes": ["admin"]}, "admin", id="admin"),
        pytest.param({"scopes": ["tasks:execute"]}, "tasks:execute", id="other-scope"),
        pytest.param({"scopes": ["*:read"]}, r"\*:read", id="wider-wildcard"),
        pytest.param({"scopes": ["agents:read", "runners:manage"]}, "runners", id="one-extra"),
        pytest.param({"expires_in": 31 * DAY}, "expiry", id="later-expiry"),
        pytest.param({"owner": "someone-else"}, "owner", id="other-owner"),
        pytest.param({"rate_limit": "51/10s"}, "looser", id="looser-burst"),
        pytest.param({"rate_limit": "1000/hour"}, "looser", id="drops-short-windows"),
        pytest.param({"rate_limit": "10/second"}, "looser", id="short-window-too-loose"),
    ],
)
def test_child_may_not_exceed_parent(
    manager: KeyManager, parent: CreatedKey, kwargs: dict[str, Any], match: str
) -> None:
    kwargs.setdefault("scopes", ["agents:read"])
    scopes = kwargs.pop("scopes")
    with pytest.raises(PermissionDenied, match=match):
        manager.create("child", scopes, parent=parent.record, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"scopes": ["agents:read", "agents:write", "tasks:read"]}, id="subset"),
        pytest.param({"scopes": ["agents:*"]}, id="same-wildcard"),
        pytest.param({"scopes": ["keys:manage"]}, id="manage-is-held"),
        pytest.param({"scopes": []}, id="no-scopes"),
        pytest.param({"expires_in": 29 * DAY}, id="earlier-expiry"),
        pytest.param({"rate_limit": "5/second"}, id="5/s-fits-50/10s-and-500/min"),
        pytest.param({"rate_limit": "50/10s, 500/minute"}, id="same-limit"),
        pytest.param({"rate_limit": "40/10s,200/minute,1000/day"}, id="tighter-with-more"),
        pytest.param({"owner": "acme"}, id="same-owner"),
    ],
)
def test_child_within_parent_is_allowed(
    manager: KeyManager, parent: CreatedKey, kwargs: dict[str, Any]
) -> None:
    scopes = kwargs.pop("scopes", ["agents:read"])
    child = manager.create("child", scopes, parent=parent.record, **kwargs).record
    assert child.created_by == parent.key_id
    assert child.owner == "acme"
    assert child.expires_at is not None
    assert child.expires_at <= T0 + 30 * DAY
    event = manager.audit(child.key_id, limit=1)[0]
    assert event.actor == f"key:{parent.key_id}"
    assert event.details["created_by"] == parent.key_id


def test_child_inherits_parent_expiry_owner_and_limits(
    manager: KeyManager, parent: CreatedKey
) -> None:
    child = manager.create("child", ["agents:read"], parent=parent.record).record
    assert child.expires_at == parent.record.expires_at
    assert child.owner == "acme"
    assert child.rate_limit == parent.record.rate_limit


def test_child_of_unlimited_parent_is_held_to_the_default_policy(manager: KeyManager) -> None:
    p = manager.create("p", ["admin"])
    with pytest.raises(PermissionDenied, match="default"):
        manager.create("c", parent=p.record, rate_limit="1000/minute")
    ok = manager.create("c", parent=p.record, rate_limit="20/10s, 50/minute, 1000/day")
    assert ok.record.rate_limit == "20/10s, 50/minute, 1000/day"


@pytest.mark.parametrize(
    "scopes",
    [pytest.param(["agents:read"], id="no-manage"), pytest.param(["keys:*"], id="keys-wildcard")],
)
def test_parent_needs_admin_or_manage_scope(manager: KeyManager, scopes: list[str]) -> None:
    p = manager.create("p", scopes)
    # keys:manage is privileged: a wildcard that would match it is not enough.
    with pytest.raises(PermissionDenied, match="keys:manage"):
        manager.create("c", parent=p.record)


def test_expired_or_missing_parent_is_refused(manager: KeyManager, clock: FakeClock) -> None:
    p = manager.create("p", ["admin"], expires_in=10)
    clock.advance(10)
    with pytest.raises(PermissionDenied, match="expired"):
        manager.create("c", parent=p.record)
    ghost = KeyRecord(key_id="AAAAAAAAAAAA", name="ghost", digest="x", scopes=frozenset({"admin"}))
    with pytest.raises(PermissionDenied, match="does not exist"):
        manager.create("c", parent=ghost)


def test_parent_is_reread_so_a_stale_principal_cannot_escalate(manager: KeyManager) -> None:
    p = manager.create("p", ["admin"])
    principal = manager.verify(p.plaintext).principal
    assert principal is not None
    assert manager.create("c1", ["agents:read"], parent=principal).record.created_by == p.key_id
    manager.update(p.key_id, scopes=["keys:manage"])
    with pytest.raises(PermissionDenied, match="admin"):
        manager.create("c2", ["admin"], parent=principal)


def test_update_with_parent_may_narrow_but_not_widen(
    manager: KeyManager, parent: CreatedKey
) -> None:
    target = manager.create(
        "t", ["agents:read", "tasks:read"], expires_in=10 * DAY, parent=parent.record
    )
    rec = manager.update(target.key_id, scopes=["agents:read"], parent=parent.record)
    assert rec.scopes == {"agents:read"}
    with pytest.raises(PermissionDenied, match="tasks:execute"):
        manager.update(target.key_id, scopes=["agents:read", "tasks:execute"], parent=parent.record)
    # Adding a scope the parent holds is fine.
    rec = manager.update(target.key_id, scopes=["agents:write", "tasks:read"], parent=parent.record)
    assert rec.scopes == {"agents:write", "tasks:read"}
    manager.update(target.key_id, expires_at=T0 + 20 * DAY, parent=parent.record)
    with pytest.raises(PermissionDenied, match="expiry"):
        manager.update(target.key_id, expires_at=T0 + 40 * DAY, parent=parent.record)
    with pytest.raises(PermissionDenied, match="expiry"):
        manager.update(target.key_id, expires_at=None, parent=parent.record)
    with pytest.raises(PermissionDenied, match="looser"):
        manager.update(target.key_id, rate_limit="1000/second", parent=parent.record)
    manager.update(target.key_id, rate_limit="1/second", parent=parent.record)
    other = manager.create("o", owner="globex")
    with pytest.raises(PermissionDenied, match="owner"):
        manager.update(other.key_id, name="mine now", parent=parent.record)
    with pytest.raises(PermissionDenied, match="owner"):
        manager.revoke(other.key_id, reason="r", parent=parent.record)
    with pytest.raises(PermissionDenied, match="owner"):
        manager.rotate(other.key_id, parent=parent.record)


def test_a_key_widened_beyond_its_manager_is_out_of_the_managers_reach(
    manager: KeyManager, parent: CreatedKey
) -> None:
    """Narrowing is no loophole: once an admin gave a child more than its manager holds, the
    manager may not touch it at all (rotating it would hand out that power)."""
    child = manager.create("c", ["agents:read"], parent=parent.record)
    manager.update(child.key_id, scopes=["agents:read", "runners:manage"])  # by the system
    for attempt in (
        lambda: manager.update(child.key_id, scopes=["runners:manage"], parent=parent.record),
        lambda: manager.rotate(child.key_id, parent=parent.record),
        lambda: manager.expire(child.key_id, parent=parent.record),
        lambda: manager.revoke(child.key_id, reason="r", parent=parent.record),
    ):
        with pytest.raises(PermissionDenied, match="runners:manage"):
            attempt()
    assert manager.get(child.key_id).scopes == {"agents:read", "runners:manage"}
    assert manager.get(child.key_id).revoked_at is None


CATALOG = ScopeCatalog.platform()
GRANTABLE = sorted({*CATALOG, "agents:*", "*:read", "tasks:*", "*:manage"} - {"keys:manage"})


@settings(max_examples=150, deadline=None)
@given(
    parent_scopes=st.sets(st.sampled_from(GRANTABLE), max_size=5),
    child_scopes=st.sets(st.sampled_from(GRANTABLE), max_size=4),
)
def test_no_escalation_property(parent_scopes: set[str], child_scopes: set[str]) -> None:
    """A child key is created iff the parent covers it, and then satisfies nothing the
    parent does not."""
    with MemoryStore() as store:
        m = make_manager(store, FakeClock())
        p = m.create("p", [*parent_scopes, "keys:manage"]).record
        try:
            child = m.create("c", child_scopes, parent=p).record
        except PermissionDenied:
            assert not CATALOG.covers(p.scopes, child_scopes)
            return
        assert CATALOG.covers(p.scopes, child_scopes)
        parent_grants, child_grants = CATALOG.grants(p.scopes), CATALOG.grants(child.scopes)
        for scope in CATALOG:
            assert not child_grants.satisfies(scope) or parent_grants.satisfies(scope)


def _admitted(windows: tuple[Window, ...], times: list[int]) -> list[int]:
    """Greedy exact sliding-window admission: a request at t is admitted iff every window
    has fewer than ``limit`` admissions in (t - period, t]."""
    out: list[int] = []
    for t in times:
        if all(sum(1 for s in out if s > t - w.period) < w.limit for w in windows):
            out.append(t)
    return out


_window_spec = st.lists(
    st.tuples(st.integers(1, 8), st.sampled_from([1, 5, 10, 60, 300])),
    min_size=1,
    max_size=3,
    unique_by=lambda w: w[1],
).map(lambda ws: ", ".join(f"{n}/{p}s" for n, p in ws))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parent_spec=_window_spec,
    child_spec=_window_spec,
    times=st.lists(st.integers(0, 900), max_size=60).map(sorted),
)
def test_child_rate_limit_never_admits_more_than_parent(
    parent_spec: str, child_spec: str, times: list[int]
) -> None:
    """If a child's limit is accepted, any request trace the child admits is one the
    parent's windows would admit too."""
    with MemoryStore() as store:
        m = make_manager(store, FakeClock())
        p = m.create("p", ["admin"], rate_limit=parent_spec).record
        try:
            m.create("c", parent=p, rate_limit=child_spec)
        except PermissionDenied:
            return
        admitted = _admitted(parse_windows(child_spec), times)
        for w in parse_windows(parent_spec):
            for t in admitted:
                assert sum(1 for s in admitted if t - w.period < s <= t) <= w.limit


# -- audit and key hygiene ---------------------------------------------------------------
def test_no_key_material_in_audit_logs_or_reprs(
    store: MemoryStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    m = make_manager(store, clock)
    secrets: list[str] = []
    digests: list[str] = []
    root = m.create("root", ["admin"], metadata={"team": "x"})
    secrets.append(root.plaintext)
    child = m.create("child", ["agents:read"], parent=root.record)
    secrets.append(child.plaintext)
    rotated = m.rotate(root.key_id)
    secrets.append(rotated.plaintext)
    m.update(child.key_id, name="renamed", metadata={"a": 1})
    m.expire(child.key_id, at=T0 + 100)
    m.verify(rotated.plaintext)
    m.verify(rotated.plaintext[:-1] + "x")
    m.revoke(root.key_id, reason="done")
    digests += [r.digest for r in m.iter_all()]
    digests += [r.previous_digest for r in m.iter_all() if r.previous_digest]
    haystacks = [
        caplog.text,
        *(repr(e) for e in m.audit()),
        *(json.dumps(e.to_dict()) for e in m.audit()),
        *(repr(r) for r in m.iter_all()),
        *(json.dumps(r.public_dict(T0)) for r in m.iter_all()),
        repr(root),
        repr(m),
    ]
    for hay in haystacks:
        for secret in secrets:
            assert secret not in hay
            assert secret.split("_")[2][:-6] not in hay
        for digest in digests:
            assert digest.split("$")[1] not in hay
    assert "created" in caplog.text or "create" in caplog.text


def test_audit_counts_every_mutation(manager: KeyManager) -> None:
    k = manager.create("k")
    manager.update(k.key_id, name="n")
    manager.rotate(k.key_id)
    manager.expire(k.key_id, at=T0 + 50)
    manager.revoke(k.key_id, reason="r")
    manager.revoke(k.key_id, reason="r")  # no-op
    with pytest.raises(KeyguardError):
        manager.create("")  # refused: nothing audited
    assert [e.action for e in manager.audit()] == ["revoke", "expire", "rotate", "update", "create"]
    assert all(e.actor == "system" and e.at == T0 for e in manager.audit())
    assert len(manager.audit(limit=2)) == 2


def test_manager_from_url_owns_and_closes_its_store() -> None:
    with KeyManager("memory://") as m:
        created = m.create("k", ["agents:read"])
        assert m.verify(created.plaintext).allowed
        assert m.get(created.key_id).name == "k"


def test_verify_codes(manager: KeyManager) -> None:
    k = manager.create("k")
    i = len(k.plaintext) - 10
    typo = k.plaintext[:i] + BASE62[(BASE62.index(k.plaintext[i]) + 1) % 62] + k.plaintext[i + 1 :]
    assert code(manager, typo) is ErrorCode.INVALID_API_KEY_FORMAT
    assert code(manager, other_secret(k.plaintext)) is ErrorCode.INVALID_API_KEY
    assert code(manager, "") is ErrorCode.MISSING_API_KEY
    assert manager.verify(k.plaintext).principal is not None


# -- random lifecycles ---------------------------------------------------------------------
@dataclass
class KeyModel:
    key_id: str
    current: str
    expires_at: float | None
    previous: str | None = None
    previous_until: float | None = None
    older: list[str] = field(default_factory=list)
    revoked: bool = False


class Lifecycle(RuleBasedStateMachine):
    """Random create/rotate/revoke/expire/time sequences against a model of what must verify."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.manager = make_manager(self.store, self.clock)
        self.keys: list[KeyModel] = []
        self.mutations = 0

    def teardown(self) -> None:
        self.store.close()

    @rule(lifetime=st.one_of(st.none(), st.integers(1, 5000)))
    def create(self, lifetime: int | None) -> None:
        k = self.manager.create("k", ["agents:read"], expires_in=lifetime)
        rec = k.record
        self.keys.append(KeyModel(rec.key_id, k.plaintext, rec.expires_at))
        self.mutations += 1

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data(), grace=st.sampled_from([0, 1, 60, 3600]))
    def rotate(self, data: st.DataObject, grace: int) -> None:
        k: KeyModel = data.draw(st.sampled_from(self.keys))
        now = self.clock.now
        active = not k.revoked and (k.expires_at is None or now < k.expires_at)
        if not active:
            with pytest.raises(InvalidOperation):
                self.manager.rotate(k.key_id, grace=grace)
            return
        new = self.manager.rotate(k.key_id, grace=grace)
        if k.previous is not None:
            k.older.append(k.previous)
        k.previous, k.previous_until = (k.current, now + grace) if grace else (None, None)
        if grace == 0:
            k.older.append(k.current)
        k.current = new.plaintext
        self.mutations += 1

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        k: KeyModel = data.draw(st.sampled_from(self.keys))
        revoked = self.manager.revoke(k.key_id, reason="test")
        assert revoked == ([] if k.revoked else [k.key_id])
        self.mutations += len(revoked)
        k.revoked = True

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        k: KeyModel = data.draw(st.sampled_from(self.keys))
        now = self.clock.now
        if k.revoked:
            with pytest.raises(InvalidOperation):
                self.manager.expire(k.key_id)
            return
        self.manager.expire(k.key_id)
        if k.expires_at is None or k.expires_at > now:
            k.expires_at = now
            self.mutations += 1

    @rule(seconds=st.sampled_from([0.5, 1, 30, 59, 61, 600, 3600]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: bool(self._deadlines()))
    @rule(data=st.data(), offset=st.sampled_from([-0.5, 0.0]))
    def to_a_deadline(self, data: st.DataObject, offset: float) -> None:
        """Jump to just before, or exactly onto, a pending grace or expiry deadline."""
        deadline = data.draw(st.sampled_from(self._deadlines()))
        self.clock.now = max(self.clock.now, deadline + offset)

    def _deadlines(self) -> list[float]:
        now = self.clock.now
        times = [t for k in self.keys for t in (k.previous_until, k.expires_at) if t is not None]
        return sorted(t for t in times if t > now)

    @invariant()
    def secrets_verify_exactly_as_modelled(self) -> None:
        now = self.clock.now
        for k in self.keys:
            current = self.manager.verify(k.current)
            if k.revoked:
                assert current.code is ErrorCode.REVOKED_API_KEY
            elif k.expires_at is not None and now >= k.expires_at:
                assert current.code is ErrorCode.EXPIRED_API_KEY
            else:
                assert current.allowed
            if k.previous is not None:
                prev = self.manager.verify(k.previous)
                in_grace = k.previous_until is not None and now < k.previous_until
                if k.revoked or not in_grace:
                    assert not prev.allowed
                else:
                    assert prev.allowed == current.allowed
            for old in k.older:
                assert self.manager.verify(old).code is ErrorCode.INVALID_API_KEY

    @invariant()
    def one_audit_event_per_mutation(self) -> None:
        assert len(self.store.audit(limit=1000)) == self.mutations


Lifecycle.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
test_lifecycle = Lifecycle.TestCase


# -- the pepper check, read-only managers, public imports ------------------------------------------
class DownStore(MemoryStore):
    """A memory store that can be made unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def get_setting(self, name: str) -> str | None:
        if self.down:
            raise StoreUnavailable("the store is down")
        return super().get_setting(name)

    def get(self, key_id: str) -> KeyRecord | None:
        if self.down:
            raise StoreUnavailable("the store is down")
        return super().get(key_id)


PLAIN = Hasher(pepper_from_env=False)
PEPPERED = Hasher("p" * 32, pepper_from_env=False)


def test_a_manager_refuses_a_store_of_another_pepper(clock: FakeClock) -> None:
    store = MemoryStore()
    KeyManager(store, hasher=PEPPERED, clock=clock).create("k")
    assert store.get_setting(PEPPER_SETTING) == PEPPERED.fingerprint
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        KeyManager(store, hasher=PLAIN, clock=clock)
    KeyManager(store, hasher=PEPPERED, clock=clock)  # the right pepper is fine


def test_a_manager_opened_from_a_url_closes_its_store_on_a_pepper_mismatch(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with KeyManager(url, hasher=PEPPERED):
        pass
    opened: list[KeyStore] = []
    real = keyguard.management.reader.from_url

    def spy(u: str) -> KeyStore:
        opened.append(real(u))
        return opened[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keyguard.management.reader, "from_url", spy)
        with pytest.raises(ConfigurationError, match="pepper mismatch"):
            KeyManager(url, hasher=PLAIN)
    with pytest.raises(StoreUnavailable, match="closed"):
        opened[0].get("AAAAAAAAAAAA")


def test_an_unreachable_store_still_constructs_and_is_checked_on_first_use(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = DownStore()
    store.set_setting(PEPPER_SETTING, PEPPERED.fingerprint)
    store.down = True
    with caplog.at_level(logging.WARNING, logger="keyguard.management"):
        manager = KeyManager(store, hasher=PLAIN, clock=clock)
    assert "pepper check will run on first use" in caplog.text
    with pytest.raises(StoreUnavailable):
        manager.create("k")
    store.down = False
    # Back up, and the deferred check catches the mismatch before anything is written.
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        manager.create("k")
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        manager.list()
    assert store.list().items == ()
    assert store.audit() == []
    good = KeyManager(store, hasher=PEPPERED, clock=clock)
    assert good.create("k").record.name == "k"


def test_a_read_only_manager_never_writes(clock: FakeClock) -> None:
    source = MemoryStore()
    key = KeyManager(source, hasher=PLAIN, clock=clock).create("k", ["agents:read"])
    store = _Copy(source)  # the same keys and audit, but no pepper fingerprint yet
    reader = KeyManager(store, hasher=PLAIN, read_only=True, clock=clock)
    assert store.get_setting(PEPPER_SETTING) is None  # a read-only manager records nothing
    assert "read_only=True" in repr(reader)
    assert reader.verify(key.plaintext).allowed
    assert reader.get(key.key_id) == key.record  # verify did not touch last_used_at
    for attempt, action in (
        (lambda: reader.create("x"), "create"),
        (lambda: reader.update(key.key_id, name="x"), "update"),
        (lambda: reader.revoke(key.key_id, reason="x"), "revoke"),
        (lambda: reader.rotate(key.key_id), "rotate"),
        (lambda: reader.expire(key.key_id), "expire"),
    ):
        with pytest.raises(ConfigurationError, match=f"read-only: {action}"):
            attempt()
    assert reader.get(key.key_id) == key.record
    assert store.audit() == source.audit()
    assert [r.key_id for r in reader.list().items] == [key.key_id]
    # Read-only still refuses a store of another pepper.
    with pytest.raises(ConfigurationError, match="pepper mismatch"):
        KeyManager(source, hasher=PEPPERED, read_only=True, clock=clock)


class _Copy(MemoryStore):
    """A copy of another memory store's keys (so each test store starts without settings)."""

    def __init__(self, source: MemoryStore) -> None:
        super().__init__()
        for record in source.list(limit=1000).items:
            super().create(record)
        for event in reversed(source.audit(limit=1000)):
            super().add_audit(event)


def test_public_imports_survive_the_split() -> None:
    from keyguard.management import manager as module

    assert module.KeyManager is KeyManager
    assert module.CreatedKey is CreatedKey
    assert module.UNSET is UNSET
    assert module.DEFAULT_GRACE == 86400.0
    assert module.MAX_GRACE == 30 * 86400.0
    assert module.DEFAULT_EXPIRING_SOON == 7 * 86400.0
    assert repr(UNSET) == "UNSET"
