"""KeyManager additions for the HTTP API: suspend/resume, network restrictions, descriptions,
and idempotent create/rotate (memory, SQLite and Redis stores; concurrent retries)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keyguard.core.errors import (
    AlreadyProcessed,
    ConfigurationError,
    ErrorCode,
    InvalidOperation,
    PermissionDenied,
)
from keyguard.core.hashing import Hasher
from keyguard.core.records import KeyStatus
from keyguard.core.store import KeyStore
from keyguard.management import KeyManager
from keyguard.management.idempotency import Idempotency, derived_key_id, fingerprint
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import SQLiteStore
from tests.conftest import REDIS_URL, _redis_or_skip

T0 = 1_800_000_000.0
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(clock: Clock) -> KeyManager:
    return KeyManager(MemoryStore(), hasher=Hasher(pepper_from_env=False), clock=clock)


# -- suspend and resume ---------------------------------------------------------------------
def test_suspend_refuses_the_key_and_resume_restores_it(manager: KeyManager, clock: Clock) -> None:
    k = manager.create("svc", ["agents:read"])
    rec = manager.suspend(k.key_id, reason="abuse: scraping")
    assert rec.status(clock.now) is KeyStatus.SUSPENDED
    assert rec.suspended_at == T0
    assert rec.suspended_reason == "abuse: scraping"
    # Suspending again changes nothing (the first reason stays, no second audit event).
    clock.now += 10
    assert manager.suspend(k.key_id, reason="again") == rec
    assert manager.verify(k.plaintext).code is ErrorCode.SUSPENDED_API_KEY
    clock.now += 10
    resumed = manager.resume(k.key_id)
    assert resumed.status(clock.now) is KeyStatus.ACTIVE
    assert resumed.suspended_at is None
    assert resumed.suspended_reason is None
    assert manager.resume(k.key_id) == resumed  # a no-op now
    events = manager.audit(k.key_id)
    assert [e.action for e in events] == ["resume", "suspend", "create"]
    assert events[1].details == {"reason": "abuse: scraping"}
    assert events[0].details["suspended_reason"] == "abuse: scraping"
    assert manager.verify(k.plaintext).allowed


def test_revoked_keys_cannot_be_suspended_or_resumed(manager: KeyManager) -> None:
    k = manager.create("svc", ["agents:read"])
    manager.suspend(k.key_id, reason="pause")
    manager.revoke(k.key_id, reason="done")
    with pytest.raises(InvalidOperation, match="revoked"):
        manager.resume(k.key_id)
    with pytest.raises(InvalidOperation, match="revoked"):
        manager.suspend(k.key_id, reason="x")
    assert manager.get(k.key_id).status(T0) is KeyStatus.REVOKED


def test_a_suspended_key_can_be_rotated_and_stays_suspended(manager: KeyManager) -> None:
    k = manager.create("svc", ["agents:read"])
    manager.suspend(k.key_id, reason="leaked")
    rotated = manager.rotate(k.key_id, grace=0)
    assert rotated.record.suspended_at == T0
    assert manager.resume(k.key_id).digest == rotated.record.digest


def test_a_suspended_key_cannot_manage_keys(manager: KeyManager) -> None:
    admin = manager.create("admin", ["admin"])
    mgr = manager.create("mgr", ["keys:manage", "agents:read"], parent=admin.record)
    child = manager.create("child", ["agents:read"], parent=mgr.record)
    manager.suspend(mgr.key_id, reason="investigating", parent=admin.record)
    before = manager.list(limit=100).items
    with pytest.raises(PermissionDenied, match="suspended"):
        manager.create("x", ["agents:read"], parent=mgr.record)
    with pytest.raises(PermissionDenied, match="suspended"):
        manager.rotate(child.key_id, parent=mgr.record)
    with pytest.raises(PermissionDenied, match="suspended"):
        manager.resume(mgr.key_id, parent=mgr.record)  # not even itself
    assert manager.list(limit=100).items == before
    assert manager.audit(mgr.key_id)[0].action == "resume.refused"


def test_suspend_follows_the_authority_rule(manager: KeyManager) -> None:
    admin = manager.create("admin", ["admin"])
    mgr = manager.create("mgr", ["keys:manage", "agents:read"], parent=admin.record)
    sibling = manager.create("sibling", ["agents:read"], parent=admin.record)
    child = manager.create("child", ["agents:read"], parent=mgr.record)
    with pytest.raises(PermissionDenied, match="not created by"):
        manager.suspend(sibling.key_id, reason="x", parent=mgr.record)
    with pytest.raises(PermissionDenied):
        manager.suspend(admin.key_id, reason="x", parent=mgr.record)
    assert manager.get(admin.key_id).suspended_at is None
    assert manager.get(sibling.key_id).suspended_at is None
    manager.suspend(child.key_id, reason="x", parent=mgr.record)
    manager.resume(child.key_id, parent=mgr.record)
    assert manager.suspend(mgr.key_id, reason="self", parent=mgr.record).suspended_at == T0


# -- networks and descriptions --------------------------------------------------------------
def test_networks_are_normalised_inherited_and_bounded(manager: KeyManager) -> None:
    admin = manager.create("admin", ["admin"])
    office = manager.create(
        "office",
        ["keys:manage", "agents:read"],
        allowed_networks=["10.0.0.0/8", "2001:DB8::/32"],
        parent=admin.record,
    )
    assert office.record.allowed_networks == ("10.0.0.0/8", "2001:db8::/32")
    inherited = manager.create("inherits", ["agents:read"], parent=office.record)
    assert inherited.record.allowed_networks == ("10.0.0.0/8", "2001:db8::/32")
    narrower = manager.create(
        "lab", ["agents:read"], allowed_networks=["10.1.0.0/16"], parent=office.record
    )
    assert narrower.record.allowed_networks == ("10.1.0.0/16",)
    n = len(manager.list(limit=100).items)
    for wider in (["0.0.0.0/0"], ["10.0.0.0/7"], ["192.168.0.0/16"], []):
        with pytest.raises(PermissionDenied, match="networks"):
            manager.create("wide", ["agents:read"], allowed_networks=wider, parent=office.record)
    with pytest.raises(PermissionDenied, match="networks"):
        manager.update(narrower.key_id, allowed_networks=["10.0.0.0/7"], parent=office.record)
    assert len(manager.list(limit=100).items) == n
    assert manager.get(narrower.key_id).allowed_networks == ("10.1.0.0/16",)
    with pytest.raises(ConfigurationError, match="host bits"):
        manager.create("typo", ["agents:read"], allowed_networks=["10.0.0.1/8"])


def test_descriptions(manager: KeyManager) -> None:
    k = manager.create("svc", ["agents:read"], description="Deploys from CI")
    assert k.record.description == "Deploys from CI"
    assert manager.update(k.key_id, description="  ").description is None
    assert manager.update(k.key_id, description="again").description == "again"
    with pytest.raises(ConfigurationError, match="description"):
        manager.update(k.key_id, description="x\x00")
    with pytest.raises(ConfigurationError, match="description is longer"):
        manager.create("svc", description="x" * 1001)


# -- idempotency ----------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "memory":
        store: KeyStore = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "keys.db")
    else:
        _redis_or_skip()
        from keyguard.stores.redis_store import RedisStore

        store = RedisStore(REDIS_URL, prefix="kgtest" + uuid.uuid4().hex[:10])
    yield store
    store.close()


def idem(key: str = "3f1c9e0e-retry", **body: Any) -> Idempotency:
    return Idempotency(key, fingerprint("create", body))


def test_idempotent_create_replays_without_the_plaintext(manager: KeyManager) -> None:
    admin = manager.create("admin", ["admin"])
    first = manager.create("ci", ["agents:read"], parent=admin.record, idempotency=idem(n=1))
    with pytest.raises(AlreadyProcessed) as info:
        manager.create("ci", ["agents:read"], parent=admin.record, idempotency=idem(n=1))
    assert info.value.key_id == first.key_id
    assert not info.value.reused
    assert first.plaintext not in str(info.value)
    assert "rotate" in str(info.value)
    # Another body with the same idempotency key is a client error, not a replay.
    with pytest.raises(AlreadyProcessed) as info:
        manager.create("other", ["agents:read"], parent=admin.record, idempotency=idem(n=2))
    assert info.value.reused
    # Scoped by the acting key: another key may use the same value.
    other = manager.create("other admin", ["admin"])
    second = manager.create("ci", ["agents:read"], parent=other.record, idempotency=idem(n=1))
    assert second.key_id != first.key_id
    assert first.key_id == derived_key_id(idem().token(f"key:{admin.key_id}", "create"))
    assert [e.action for e in manager.audit(first.key_id)] == ["create"]


def test_idempotency_survives_expiry_of_the_entry_for_create(
    manager: KeyManager, clock: Clock
) -> None:
    first = manager.create("ci", idempotency=Idempotency("k1", "fp", ttl=60))
    clock.now += 3600
    with pytest.raises(AlreadyProcessed) as info:
        manager.create("ci", idempotency=Idempotency("k1", "fp", ttl=60))
    assert info.value.key_id == first.key_id


def test_idempotent_rotate_rotates_once(manager: KeyManager, clock: Clock) -> None:
    k = manager.create("svc", ["agents:read"])
    request = Idempotency("rotate-1", fingerprint("rotate", k.key_id, 3600))
    rotated = manager.rotate(k.key_id, grace=3600, idempotency=request)
    clock.now += 5
    with pytest.raises(AlreadyProcessed) as info:
        manager.rotate(k.key_id, grace=3600, idempotency=request)
    assert info.value.key_id == k.key_id
    assert manager.get(k.key_id).digest == rotated.record.digest
    assert manager.verify(rotated.plaintext).allowed
    assert manager.verify(k.plaintext).allowed  # still in its grace: not rotated away twice
    # After the entry expires, the same value is a new request.
    clock.now += 2 * DAY
    again = manager.rotate(k.key_id, grace=0, idempotency=request)
    assert again.record.digest != rotated.record.digest


def test_bad_idempotency_values() -> None:
    for bad in ("", "has space", "x" * 256, "é"):
        with pytest.raises(ConfigurationError, match="idempotency key"):
            Idempotency(bad, "fp")
    with pytest.raises(ConfigurationError, match="ttl"):
        Idempotency("k", "fp", ttl=0)
    assert "secret-ish" not in repr(Idempotency("secret-ish", "fp"))


@pytest.mark.parametrize("operation", ["create", "rotate"])
def test_concurrent_retries_apply_once(any_store: KeyStore, operation: str) -> None:
    """Eight threads send the same request at once: one key (or one rotation), and every
    other attempt is told the request was processed."""
    manager = KeyManager(any_store, hasher=Hasher(pepper_from_env=False))
    admin = manager.create("admin", ["admin"])
    target = manager.create("target", ["agents:read"], parent=admin.record)
    request = Idempotency("same-request", fingerprint(operation, "body"))
    barrier = threading.Barrier(8)

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            if operation == "create":
                made = manager.create(
                    "made once", ["agents:read"], parent=admin.record, idempotency=request
                )
            else:
                made = manager.rotate(target.key_id, parent=admin.record, idempotency=request)
        except AlreadyProcessed as exc:
            return ("reused:" if exc.reused else "replayed:") + exc.key_id
        return "made:" + made.key_id

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    made = [o for o in outcomes if o.startswith("made:")]
    assert len(made) == 1, outcomes
    assert not [o for o in outcomes if o.startswith("reused:")]
    key_id = made[0].split(":")[1]
    assert all(o.split(":")[1] == key_id for o in outcomes)
    actions = [e.action for e in manager.audit(key_id)]
    if operation == "create":
        assert len(manager.list(limit=100).items) == 3
        assert actions == ["create"]
    else:
        assert actions == ["rotate", "create"]
        assert manager.get(key_id).version == 2


def test_a_refused_idempotent_create_stores_nothing(manager: KeyManager) -> None:
    admin = manager.create("admin", ["agents:read", "keys:manage"])
    with pytest.raises(PermissionDenied):
        manager.create("x", ["agents:write"], parent=admin.record, idempotency=idem())
    token = idem().token(f"key:{admin.key_id}", "create")
    assert manager.store.get_idempotency(derived_key_id(token), token, now=T0) is None
    # ...so the same idempotency key works once the request is fixed.
    made = manager.create("x", ["agents:read"], parent=admin.record, idempotency=idem())
    assert made.record.scopes == {"agents:read"}
    assert manager.verify(made.plaintext).code is None
