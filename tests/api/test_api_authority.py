"""Who may do what over HTTP: the escalation table (every attempt refused 403 with nothing
stored, the refusal audited), management-scope checks, the acting key re-read from the store
rather than the verifier's cache, and what a non-admin key may see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.support import DAY, Client, World, make_world, mount_handler
from tests.elsewhere import elsewhere


@pytest.fixture
def world() -> World:
    # A verifier that caches records for a minute: the API must not trust that cache.
    w = make_world(cache_ttl=60)
    admin = w.keys["admin"].record
    m = w.manager
    w.keys["short"] = m.create(
        "short-lived mgr", ["keys:manage", "agents:read"], expires_in=10 * DAY, parent=admin
    )
    w.keys["limited"] = m.create(
        "limited mgr",
        ["keys:manage", "agents:read"],
        rate_limit="10/minute, 1000/day",
        parent=admin,
    )
    w.keys["office"] = m.create(
        "office mgr",
        ["keys:manage", "agents:read"],
        allowed_networks=["10.0.0.0/8"],
        parent=admin,
    )
    return w


@dataclass(frozen=True)
class Attempt:
    actor: str
    method: str
    path: Callable[[World], str]
    body: dict[str, Any] | None = None
    peer: str | None = None
    before: Callable[[World, Client], None] | None = None
    status: int = 403
    code: str = "permission_denied"


def root(w: World) -> str:
    return "/"


def on(name: str, suffix: str = "") -> Callable[[World], str]:
    return lambda w: f"/{w.id(name)}{suffix}"


def warm_then(change: str) -> Callable[[World, Client], None]:
    """Let the verifier cache the acting key ``child`` as active, then change it in the store."""

    def prepare(w: World, client: Client) -> None:
        assert client.request("GET", "/self", key=w.key("child")).status_code == 200
        with elsewhere(w.store):  # another process: this one's verifier still trusts its cache
            if change == "revoke":
                w.manager.revoke(w.id("child"), reason="compromised")
            else:
                w.manager.suspend(w.id("child"), reason="investigating")

    return prepare


ESCALATIONS = [
    pytest.param(
        Attempt("mgr", "POST", root, {"name": "x", "scopes": ["agents:write"]}), id="wider-scope"
    ),
    pytest.param(
        Attempt("mgr", "POST", root, {"name": "x", "scopes": ["agents:*"]}),
        id="wildcard-widening",
    ),
    pytest.param(
        Attempt("mgr", "POST", root, {"name": "x", "scopes": ["*:read"]}),
        id="wildcard-across-resources",
    ),
    pytest.param(
        Attempt("mgr", "POST", root, {"name": "x", "scopes": ["admin"]}), id="admin-from-non-admin"
    ),
    pytest.param(
        Attempt(
            "short", "POST", root, {"name": "x", "scopes": ["agents:read"], "expires_in": "20d"}
        ),
        id="later-expiry",
    ),
    pytest.param(
        Attempt(
            "limited",
            "POST",
            root,
            {"name": "x", "scopes": ["agents:read"], "rate_limit": "100/minute"},
        ),
        id="looser-limits",
    ),
    pytest.param(
        Attempt(
            "office",
            "POST",
            root,
            {"name": "x", "scopes": ["agents:read"], "allowed_networks": ["0.0.0.0/0"]},
            peer="10.1.2.3",
        ),
        id="wider-networks",
    ),
    pytest.param(
        Attempt(
            "office",
            "POST",
            root,
            {"name": "x", "scopes": ["agents:read"], "allowed_networks": []},
            peer="10.1.2.3",
        ),
        id="no-networks-from-a-restricted-key",
    ),
    pytest.param(
        Attempt("mgr", "POST", root, {"name": "x", "scopes": ["agents:read"], "owner": "globex"}),
        id="another-owner",
    ),
    pytest.param(
        Attempt(
            "child",
            "POST",
            root,
            {"name": "x", "scopes": ["agents:read"]},
            before=warm_then("revoke"),
        ),
        id="revoked-creator",
    ),
    pytest.param(
        Attempt(
            "child",
            "POST",
            root,
            {"name": "x", "scopes": ["agents:read"]},
            before=warm_then("suspend"),
        ),
        id="suspended-creator",
    ),
    pytest.param(Attempt("mgr", "POST", on("admin", "/rotate")), id="rotate-ancestor"),
    pytest.param(
        Attempt("mgr", "DELETE", on("admin"), {"reason": "takeover"}), id="revoke-ancestor"
    ),
    pytest.param(Attempt("mgr", "PATCH", on("admin"), {"enabled": False}), id="suspend-ancestor"),
    pytest.param(Attempt("child", "POST", on("mgr", "/rotate")), id="rotate-parent"),
    pytest.param(Attempt("mgr", "POST", on("sibling", "/rotate")), id="rotate-sibling"),
    pytest.param(Attempt("mgr", "PATCH", on("sibling"), {"name": "mine now"}), id="rename-sibling"),
    pytest.param(Attempt("mgr", "POST", on("sibling", "/expire")), id="expire-sibling"),
    pytest.param(Attempt("mgr", "GET", on("sibling")), id="show-sibling"),
    pytest.param(Attempt("mgr", "GET", on("sibling", "/audit")), id="audit-sibling"),
    pytest.param(Attempt("mgr", "POST", on("stranger", "/rotate")), id="rotate-stranger"),
    pytest.param(
        Attempt("mgr", "PATCH", on("child"), {"scopes": ["agents:read", "agents:write"]}),
        id="widen-a-descendant",
    ),
    pytest.param(
        Attempt("admin", "PATCH", on("reader"), {"scopes": ["agents:read", "agents:write"]}),
        id="patch-never-widens-scopes",
    ),
    pytest.param(
        Attempt(
            "reader",
            "POST",
            root,
            {"name": "x", "scopes": ["agents:read"]},
            code="insufficient_scope",
        ),
        id="no-management-scope",
    ),
    pytest.param(
        Attempt(
            "office", "POST", root, {"name": "x"}, peer="192.0.2.1", code="network_not_allowed"
        ),
        id="restricted-key-from-outside",
    ),
]


@pytest.mark.parametrize("attempt", ESCALATIONS)
def test_escalations_are_refused_and_change_nothing(world: World, attempt: Attempt) -> None:
    with mount_handler(world.api) as client:
        if attempt.before is not None:
            attempt.before(world, client)
        records, changes = world.snapshot(), world.changes()
        r = client.request(
            attempt.method,
            attempt.path(world),
            key=world.key(attempt.actor),
            json=attempt.body,
            peer=attempt.peer,
        )
    assert r.status_code == attempt.status, r.content
    problem = r.json()
    assert problem["code"] == attempt.code
    assert r.headers["content-type"] == "application/problem+json"
    assert world.snapshot() == records
    assert world.changes() == changes
    assert world.key(attempt.actor) not in r.content.decode()
    if attempt.code == "permission_denied" and attempt.method != "GET":
        refusals = [e for e in world.store.audit(limit=1000) if e.action.endswith(".refused")]
        assert refusals, "a refused change is audited"


def test_the_same_requests_succeed_when_within_authority(world: World) -> None:
    """The table's refusals are not blanket ones: the narrower request passes."""
    with mount_handler(world.api) as client:
        ok = [
            ("mgr", "POST", "/", {"name": "x", "scopes": ["agents:read", "tasks:read"]}, None),
            (
                "short",
                "POST",
                "/",
                {"name": "x", "scopes": ["agents:read"], "expires_in": "5d"},
                None,
            ),
            (
                "limited",
                "POST",
                "/",
                {"name": "x", "scopes": ["agents:read"], "rate_limit": "5/minute, 500/day"},
                None,
            ),
            ("office", "POST", "/", {"name": "x", "allowed_networks": ["10.9.0.0/16"]}, "10.1.2.3"),
            ("mgr", "POST", f"/{world.id('grandchild')}/rotate", None, None),
            ("mgr", "PATCH", f"/{world.id('child')}", {"scopes": ["keys:manage"]}, None),
            ("child", "PATCH", f"/{world.id('child')}", {"name": "me"}, None),
        ]
        for actor, method, path, body, peer in ok:
            r = client.request(method, path, key=world.key(actor), json=body, peer=peer)
            assert r.status_code in (200, 201), (actor, method, path, r.content)


def test_a_non_admin_key_sees_only_its_authority(world: World) -> None:
    with mount_handler(world.api) as client:
        r = client.request("GET", "/", key=world.key("mgr"))
        seen = {k["key_id"] for k in r.json()["keys"]}
        assert seen == {world.id("mgr"), world.id("child"), world.id("grandchild")}
        r = client.request("GET", "/", key=world.key("admin"), params={"owner": "acme"})
        assert world.id("sibling") in {k["key_id"] for k in r.json()["keys"]}
        events = client.request("GET", "/audit", key=world.key("mgr")).json()["events"]
        assert {e["key_id"] for e in events} <= seen
        assert {e["key_id"] for e in events} >= {world.id("child"), world.id("grandchild")}
        # The stranger (another owner) sees only itself.
        r = client.request("GET", "/", key=world.key("stranger"))
        assert [k["key_id"] for k in r.json()["keys"]] == [world.id("stranger")]


def test_insufficient_scope_names_the_management_scope(world: World) -> None:
    with mount_handler(world.api) as client:
        r = client.request("GET", "/", key=world.key("reader"))
    assert r.status_code == 403
    assert r.json()["required_scopes"] == ["keys:manage"]
    assert 'scope="keys:manage"' in r.headers["www-authenticate"]
