"""Management authority: a key acts only on itself and on keys it created, within its own
powers; ``admin`` acts on anything; no owner is no tenant; a refusal changes nothing and is
audited. The table drives every mutating operation against every relationship."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from keyguard.core.errors import ErrorCode, PermissionDenied
from keyguard.core.hashing import Hasher
from keyguard.core.ratelimit import DEFAULT_WINDOWS
from keyguard.core.records import KeyRecord
from keyguard.core.scopes import ScopeCatalog
from keyguard.core.verifier import Verifier
from keyguard.management import CreatedKey, KeyManager
from keyguard.management.authority import MAX_CHAIN_DEPTH, authorize, may_manage
from keyguard.stores.memory import MemoryStore

T0 = 1_800_000_000.0
DAY = 86400.0
CATALOG = ScopeCatalog.platform()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Tree:
    """Keys of two owners and of none, in a known creation tree::

    admin (acme, admin) ── parent (acme, manager) ─┬─ mgr (acme, manager) ── child ── grandchild
                                                    └─ sibling
    other-owner (globex, manager)     ownerless     ownerless-mgr ── ownerless-child
    """

    manager: KeyManager
    store: MemoryStore
    keys: dict[str, CreatedKey]

    def record(self, name: str) -> KeyRecord:
        return self.manager.get(self.keys[name].key_id)

    def snapshot(self) -> tuple[list[KeyRecord], list[Any]]:
        return list(self.store.list(limit=1000).items), self.store.audit(limit=1000)


@pytest.fixture
def tree() -> Tree:
    store = MemoryStore()
    m = KeyManager(store, hasher=Hasher(pepper_from_env=False), clock=Clock())
    manage = ["keys:manage", "agents:read"]
    keys: dict[str, CreatedKey] = {}
    keys["admin"] = m.create("admin", ["admin"], owner="acme")
    keys["parent"] = m.create("parent", [*manage, "tasks:read"], parent=keys["admin"].record)
    keys["mgr"] = m.create("mgr", manage, parent=keys["parent"].record)
    keys["sibling"] = m.create("sibling", manage, parent=keys["parent"].record)
    keys["child"] = m.create("child", manage, parent=keys["mgr"].record)
    keys["grandchild"] = m.create("grandchild", ["agents:read"], parent=keys["child"].record)
    keys["other-owner"] = m.create("other-owner", manage, owner="globex")
    keys["ownerless"] = m.create("ownerless", ["agents:read"])
    keys["ownerless-mgr"] = m.create("ownerless-mgr", manage)
    keys["ownerless-child"] = m.create(
        "ownerless-child", ["agents:read"], parent=keys["ownerless-mgr"].record
    )
    assert keys["mgr"].record.owner == "acme"
    assert keys["ownerless-child"].record.owner is None
    return Tree(m, store, keys)


Operation = Callable[[KeyManager, str, KeyRecord], object]

OPERATIONS: dict[str, Operation] = {
    "rotate": lambda m, key_id, actor: m.rotate(key_id, grace=0, parent=actor),
    # Narrowing to nothing: "cannot narrow an admin key" is part of the rule.
    "update": lambda m, key_id, actor: m.update(key_id, name="taken over", scopes=[], parent=actor),
    "revoke": lambda m, key_id, actor: m.revoke(key_id, reason="takeover", parent=actor),
    "expire": lambda m, key_id, actor: m.expire(key_id, parent=actor),
}

ATTEMPTS = [
    # A manager key with an owner.
    pytest.param("mgr", "mgr", True, id="mgr-on-itself"),
    pytest.param("mgr", "child", True, id="mgr-on-its-child"),
    pytest.param("mgr", "grandchild", True, id="mgr-on-its-grandchild"),
    pytest.param("mgr", "parent", False, id="mgr-on-its-parent"),
    pytest.param("mgr", "sibling", False, id="mgr-on-its-sibling"),
    pytest.param("mgr", "admin", False, id="mgr-on-an-admin-key"),
    pytest.param("mgr", "other-owner", False, id="mgr-on-another-owners-key"),
    pytest.param("mgr", "ownerless", False, id="mgr-on-an-ownerless-key"),
    # A manager key without an owner: no owner is no tenant.
    pytest.param("ownerless-mgr", "ownerless-mgr", True, id="ownerless-mgr-on-itself"),
    pytest.param("ownerless-mgr", "ownerless-child", True, id="ownerless-mgr-on-its-child"),
    pytest.param("ownerless-mgr", "ownerless", False, id="ownerless-mgr-on-an-ownerless-key"),
    pytest.param("ownerless-mgr", "mgr", False, id="ownerless-mgr-on-an-owned-key"),
    pytest.param("ownerless-mgr", "admin", False, id="ownerless-mgr-on-an-admin-key"),
    # A child manager cannot reach up either.
    pytest.param("child", "mgr", False, id="child-on-its-parent"),
    pytest.param("child", "admin", False, id="child-on-the-root-admin"),
    # admin acts on anything.
    pytest.param("admin", "admin", True, id="admin-on-itself"),
    pytest.param("admin", "grandchild", True, id="admin-on-a-descendant"),
    pytest.param("admin", "other-owner", True, id="admin-on-another-owners-key"),
    pytest.param("admin", "ownerless", True, id="admin-on-an-ownerless-key"),
]


def _no_key_material(tree: Tree, text: str) -> None:
    for created in tree.keys.values():
        assert created.plaintext not in text
        assert created.plaintext.split("_")[2][:16] not in text
        assert created.record.digest.split("$")[-1] not in text


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize(("actor", "target", "allowed"), ATTEMPTS)
def test_management_attempts(
    tree: Tree, operation: str, actor: str, target: str, allowed: bool
) -> None:
    acting = tree.keys[actor].record
    target_id = tree.keys[target].key_id
    records_before, audit_before = tree.snapshot()
    run = OPERATIONS[operation]
    if allowed:
        result = run(tree.manager, target_id, acting)
        after = tree.record(target)
        assert after.version > tree.keys[target].record.version
        newest = tree.manager.audit(target_id, limit=1)[0]
        assert (newest.action, newest.actor) == (operation, f"key:{acting.key_id}")
        if operation == "rotate":
            assert isinstance(result, CreatedKey)
            assert tree.manager.verify(result.plaintext).allowed
        return
    with pytest.raises(PermissionDenied) as info:
        run(tree.manager, target_id, acting)
    records_after, audit_after = tree.snapshot()
    assert records_after == records_before, "a refused operation must change nothing"
    # Exactly one new audit event: the refusal, naming the actor and why.
    assert audit_after[1:] == audit_before
    refusal = audit_after[0]
    assert refusal.action == f"{operation}.refused"
    assert refusal.key_id == target_id
    assert refusal.actor == f"key:{acting.key_id}"
    assert refusal.details["acting_key"] == acting.key_id
    assert refusal.details["reason"] == str(info.value)
    assert acting.key_id in str(info.value)
    _no_key_material(tree, json.dumps(refusal.to_dict()) + str(info.value))
    # The target still works exactly as before.
    assert tree.manager.verify(tree.keys[target].plaintext).allowed


def test_a_manager_cannot_take_over_an_admin_key(tree: Tree) -> None:
    """The reported exploit: rotate(admin, parent=manager, grace=0) returned a working admin
    plaintext."""
    admin, mgr = tree.keys["admin"], tree.keys["mgr"]
    with pytest.raises(PermissionDenied, match="not created by the acting key"):
        tree.manager.rotate(admin.key_id, parent=mgr.record, grace=0)
    assert tree.record("admin") == admin.record
    assert tree.manager.verify(admin.plaintext).allowed


def test_a_stale_principal_of_a_revoked_manager_can_do_nothing(tree: Tree) -> None:
    mgr = tree.keys["mgr"]
    principal = tree.manager.verify(mgr.plaintext).principal
    assert principal is not None
    tree.manager.rotate(tree.keys["child"].key_id, parent=principal)
    tree.manager.revoke(mgr.key_id, reason="gone", cascade=False)
    with pytest.raises(PermissionDenied, match="revoked"):
        tree.manager.rotate(tree.keys["child"].key_id, parent=principal)
    refusal = tree.manager.audit(tree.keys["child"].key_id, limit=1)[0]
    assert refusal.action == "rotate.refused"


def test_cascade_from_a_manager_touches_only_its_own_subtree(tree: Tree) -> None:
    mgr = tree.keys["mgr"].record
    revoked = tree.manager.revoke(tree.keys["child"].key_id, reason="leak", parent=mgr)
    assert revoked == [tree.keys["child"].key_id, tree.keys["grandchild"].key_id]
    revoked = tree.manager.revoke(mgr.key_id, reason="retire", parent=mgr)
    assert revoked == [mgr.key_id]  # its descendants are revoked already
    for name in ("admin", "parent", "sibling", "other-owner", "ownerless", "ownerless-mgr"):
        assert tree.record(name).revoked_at is None, name


def test_a_cascade_reaching_a_key_beyond_the_manager_revokes_nothing(tree: Tree) -> None:
    """An admin gave the grandchild more than its manager holds: the manager's cascade is
    refused as a whole (nothing half-done), and cascade=False still revokes the child."""
    grandchild = tree.keys["grandchild"].key_id
    tree.manager.update(grandchild, scopes=["agents:read", "runners:manage"])
    mgr = tree.keys["mgr"].record
    records_before, audit_before = tree.snapshot()
    with pytest.raises(PermissionDenied, match=r"runners:manage.*nothing was revoked"):
        tree.manager.revoke(tree.keys["child"].key_id, reason="leak", parent=mgr)
    records_after, audit_after = tree.snapshot()
    assert records_after == records_before
    assert audit_after[1:] == audit_before
    assert audit_after[0].action == "revoke.refused"
    assert tree.manager.revoke(
        tree.keys["child"].key_id, reason="leak", cascade=False, parent=mgr
    ) == [tree.keys["child"].key_id]
    assert tree.record("grandchild").revoked_at is None


def test_refused_creations_are_audited_under_the_acting_key(tree: Tree) -> None:
    mgr = tree.keys["mgr"].record
    with pytest.raises(PermissionDenied, match="tasks:read"):
        tree.manager.create("wider", ["tasks:read"], parent=mgr)
    with pytest.raises(PermissionDenied, match="owner"):
        tree.manager.create("elsewhere", ["agents:read"], owner="globex", parent=mgr)
    events = tree.manager.audit(mgr.key_id, limit=2)
    assert [e.action for e in events] == ["create.refused", "create.refused"]
    assert all(e.actor == f"key:{mgr.key_id}" for e in events)
    no_scope = tree.manager.create("plain", ["agents:read"], owner="acme").record
    with pytest.raises(PermissionDenied, match="keys:manage"):
        tree.manager.rotate(tree.keys["child"].key_id, parent=no_scope)
    assert tree.manager.audit(tree.keys["child"].key_id, limit=1)[0].action == "rotate.refused"


def test_a_manager_cannot_widen_itself(tree: Tree) -> None:
    mgr = tree.keys["mgr"].record
    with pytest.raises(PermissionDenied, match="tasks:read"):
        tree.manager.update(mgr.key_id, scopes=["keys:manage", "tasks:read"], parent=mgr)
    with pytest.raises(PermissionDenied, match="looser"):
        tree.manager.update(mgr.key_id, rate_limit="1000/second", parent=mgr)
    tree.manager.update(mgr.key_id, expires_at=T0 + DAY, parent=mgr)
    with pytest.raises(PermissionDenied, match="expiry"):
        tree.manager.update(mgr.key_id, expires_at=T0 + 2 * DAY, parent=mgr)


def test_admin_may_act_on_anything_but_hand_out_no_more_than_it_holds() -> None:
    m = KeyManager(MemoryStore(), hasher=Hasher(pepper_from_env=False), clock=Clock())
    admin = m.create("admin", ["admin"], owner="acme", expires_in=DAY, rate_limit="10/minute")
    forever = m.create("forever", ["agents:read"], owner="globex")
    # Acting on a key with more than the admin key (no expiry, default limits) is fine...
    m.update(forever.key_id, scopes=[], parent=admin.record)
    m.rotate(forever.key_id, parent=admin.record)
    # ...narrowing fields is fine, widening one beyond the admin key's own is not.
    m.expire(forever.key_id, at=T0 + DAY / 2, parent=admin.record)
    with pytest.raises(PermissionDenied, match="expiry"):
        m.update(forever.key_id, expires_at=T0 + 2 * DAY, parent=admin.record)
    with pytest.raises(PermissionDenied, match="looser"):
        m.update(forever.key_id, rate_limit="1000/second", parent=admin.record)
    m.update(forever.key_id, rate_limit="5/minute", parent=admin.record)
    got = m.get(forever.key_id)
    assert (got.expires_at, got.rate_limit, got.owner) == (T0 + DAY / 2, "5/minute", "globex")
    with pytest.raises(PermissionDenied, match="owner"):
        m.create("elsewhere", owner="globex", parent=admin.record)


# -- the pure rule -------------------------------------------------------------------------------
def _rec(key_id: str, created_by: str | None = None, **fields: Any) -> KeyRecord:
    fields.setdefault("scopes", frozenset({"keys:manage", "agents:read"}))
    return KeyRecord(key_id=key_id, name=key_id, digest="x", created_by=created_by, **fields)


def _decide(actor: KeyRecord, target: KeyRecord, *records: KeyRecord, **kw: Any) -> Any:
    index = {r.key_id: r for r in (actor, target, *records)}
    return authorize(
        actor, target, target, index.get, catalog=CATALOG, default_windows=DEFAULT_WINDOWS, **kw
    )


def test_chains_with_cycles_gaps_or_excessive_depth_are_refused() -> None:
    actor = _rec("actor0000000")
    # a -> b -> a: a cycle that never reaches the actor.
    a, b = _rec("aaaaaaaaaaaa", "bbbbbbbbbbbb"), _rec("bbbbbbbbbbbb", "aaaaaaaaaaaa")
    verdict = _decide(actor, a, b)
    assert not verdict
    assert "cycle" in verdict.reason
    orphan = _rec("orphan000000", "missing00000")
    assert "broken" in _decide(actor, orphan).reason
    chain = [_rec(f"c{i:011d}", f"c{i + 1:011d}") for i in range(MAX_CHAIN_DEPTH)]
    chain.append(_rec(f"c{MAX_CHAIN_DEPTH:011d}", actor.key_id))
    assert "longer than" in _decide(actor, chain[0], *chain[1:]).reason
    assert _decide(actor, chain[0], *chain[1:], max_depth=MAX_CHAIN_DEPTH + 1)
    assert _decide(actor, chain[-1])


def test_the_rule_checks_scopes_expiry_and_limits_of_the_target() -> None:
    actor = _rec("actor0000000", expires_at=T0, rate_limit="10/minute")
    ok = _rec("child0000000", actor.key_id, expires_at=T0, rate_limit="5/minute")
    assert _decide(actor, ok).reason == "created by the acting key"
    assert _decide(actor, actor).reason == "itself"
    for bad, word in (
        (replace(ok, scopes=frozenset({"admin"})), "admin"),
        (replace(ok, expires_at=None), "expiry"),
        (replace(ok, expires_at=T0 + 1), "expiry"),
        (replace(ok, rate_limit=None), "looser"),
        (replace(ok, owner="acme"), "owner"),
    ):
        verdict = _decide(actor, bad)
        assert not verdict
        assert word in verdict.reason


def test_may_manage() -> None:
    kw: dict[str, Any] = {"catalog": CATALOG, "manage_scope": "keys:manage"}
    assert may_manage(_rec("a00000000000"), T0, **kw)
    assert not may_manage(_rec("a00000000000", scopes=frozenset({"keys:*"})), T0, **kw)
    assert "expired" in may_manage(_rec("a00000000000", expires_at=T0), T0, **kw).reason
    assert "revoked" in may_manage(_rec("a00000000000", revoked_at=1.0), T0, **kw).reason


# -- issue 8: a rotated-then-revoked key's old secret is recognised as revoked -----------------
def test_the_grace_secret_of_a_revoked_key_is_answered_revoked() -> None:
    store = MemoryStore()
    clock = Clock()
    hasher = Hasher(pepper_from_env=False)
    m = KeyManager(store, hasher=hasher, clock=clock)
    old = m.create("k", ["agents:read"])
    new = m.rotate(old.key_id, grace=DAY)
    verifier = Verifier(store, hasher=hasher, cache_ttl=0, negative_cache_ttl=0, clock=clock)
    assert verifier.authenticate(f"UserKey {old.plaintext}").allowed
    m.revoke(old.key_id, reason="leaked")
    for plaintext in (old.plaintext, new.plaintext):
        assert verifier.authenticate(f"UserKey {plaintext}").code is ErrorCode.REVOKED_API_KEY
    # After the grace period too: any secret that ever belonged to a revoked key says so.
    clock.now += DAY
    assert verifier.authenticate(f"UserKey {old.plaintext}").code is ErrorCode.REVOKED_API_KEY
    assert verifier.authenticate(f"UserKey {new.plaintext}").code is ErrorCode.REVOKED_API_KEY
