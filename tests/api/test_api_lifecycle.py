"""Lifecycle policies over HTTP: cascade revocation over a three-level tree, rotation grace
with an injected clock, suspend/resume and network restrictions of the calling key, the
maximum lifetime of keys created over HTTP (refuse or clamp), idempotent create and rotate
under concurrent retries, and listing filters with cursor pagination."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keyguard.core.errors import ErrorCode
from keyguard.stores.sqlite import SQLiteStore
from tests.api.support import DAY, T0, Client, World, make_world, mount_handler, mount_wsgi


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def client(world: World) -> Iterator[Client]:
    with mount_handler(world.api) as c:
        yield c


# -- cascade ------------------------------------------------------------------------------------
def test_revoking_a_parent_revokes_three_levels(world: World, client: Client) -> None:
    r = client.request(
        "DELETE", f"/{world.id('mgr')}", key=world.key("admin"), json={"reason": "x"}
    )
    assert r.status_code == 200
    assert r.json()["revoked"] == [world.id("mgr"), world.id("child"), world.id("grandchild")]
    for name in ("mgr", "child", "grandchild"):
        assert world.manager.verify(world.key(name)).code is ErrorCode.REVOKED_API_KEY
        assert world.record(name).revoked_reason == "x"
    for name in ("admin", "sibling", "reader", "stranger"):
        assert world.manager.verify(world.key(name)).allowed
    events = world.manager.audit(world.id("grandchild"))
    assert events[0].details == {"reason": "x", "cascade_from": world.id("mgr")}


def test_cascade_can_be_turned_off_per_request_and_per_api(world: World, client: Client) -> None:
    r = client.request(
        "DELETE", f"/{world.id('mgr')}", key=world.key("admin"), params={"cascade": "false"}
    )
    assert r.json()["revoked"] == [world.id("mgr")]
    assert world.manager.verify(world.key("child")).allowed
    no_cascade = make_world(cascade=False)
    with mount_handler(no_cascade.api) as c:
        r = c.request("DELETE", f"/{no_cascade.id('mgr')}", key=no_cascade.key("admin"))
    assert r.json()["revoked"] == [no_cascade.id("mgr")]


def test_a_manager_cannot_revoke_a_subtree_holding_a_key_beyond_it(
    world: World, client: Client
) -> None:
    """All or nothing: one descendant outside the caller's authority refuses the whole cascade."""
    widened = world.manager.update(
        world.id("grandchild"),
        scopes=["agents:read", "agents:write"],
        parent=world.keys["admin"].record,
    )
    assert "agents:write" in widened.scopes
    before = world.snapshot()
    r = client.request("DELETE", f"/{world.id('child')}", key=world.key("mgr"))
    assert r.status_code == 403
    assert world.snapshot() == before


# -- rotation grace -------------------------------------------------------------------------------
def test_rotation_grace_with_an_injected_clock(world: World, client: Client) -> None:
    old = world.key("grandchild")
    r = client.request(
        "POST",
        f"/{world.id('grandchild')}/rotate",
        key=world.key("mgr"),
        json={"grace_period": "2h"},
    )
    assert r.status_code == 200
    new = r.json()["key"]
    assert r.json()["old_secret_valid_until"] == "2027-01-15T10:00:00Z"
    assert world.manager.verify(old).allowed
    assert world.manager.verify(new).allowed
    world.clock.advance(2 * 3600 - 1)
    assert world.manager.verify(old).allowed
    world.clock.advance(1)
    assert world.manager.verify(old).code is ErrorCode.INVALID_API_KEY
    assert world.manager.verify(new).allowed
    # grace_period 0 ends the old secret at once; more than 30 days is refused.
    r = client.request(
        "POST", f"/{world.id('grandchild')}/rotate", key=world.key("mgr"), json={"grace_period": 0}
    )
    assert world.manager.verify(new).code is ErrorCode.INVALID_API_KEY
    r = client.request(
        "POST",
        f"/{world.id('grandchild')}/rotate",
        key=world.key("mgr"),
        json={"grace_period": "31d"},
    )
    assert r.status_code == 422
    assert r.json()["field"] == "grace_period"


# -- the calling key's own state ------------------------------------------------------------------
def test_a_suspended_caller_is_refused_and_works_again_after_resume(
    world: World, client: Client
) -> None:
    r = client.request(
        "PATCH", f"/{world.id('child')}", key=world.key("mgr"), json={"enabled": False}
    )
    assert r.json()["record"]["status"] == "suspended"
    r = client.request("GET", "/self", key=world.key("child"))
    assert r.status_code == 401
    assert r.json()["code"] == "suspended_api_key"
    r = client.request(
        "PATCH", f"/{world.id('child')}", key=world.key("mgr"), json={"enabled": True}
    )
    assert client.request("GET", "/self", key=world.key("child")).status_code == 200
    actions = [e.action for e in world.manager.audit(world.id("child"))]
    assert actions[:2] == ["resume", "suspend"]


def test_a_network_restricted_caller(world: World, client: Client) -> None:
    made = client.request(
        "POST",
        "/",
        key=world.key("admin"),
        json={
            "name": "office",
            "scopes": ["keys:manage", "agents:read"],
            "allowed_networks": ["10.0.0.0/8"],
        },
    ).json()
    r = client.request("GET", "/self", key=made["key"], peer="127.0.0.1")
    assert r.status_code == 403
    assert r.json()["code"] == "network_not_allowed"
    assert client.request("GET", "/self", key=made["key"], peer="10.20.30.40").status_code == 200


def test_network_restriction_uses_trusted_proxies() -> None:
    from keyguard.core.verifier import Verifier

    world = make_world()
    world.api.verifier = Verifier(
        world.store, hasher=world.manager.hasher, rate_limits=None, trusted_proxies=1
    )
    office = world.manager.create("office", ["agents:read"], allowed_networks=["10.0.0.0/8"])
    with mount_handler(world.api) as client:
        inside = client.request(
            "GET",
            "/self",
            key=office.plaintext,
            headers={"X-Forwarded-For": "10.1.1.1"},
            peer="192.0.2.9",
        )
        spoofed = client.request(
            "GET",
            "/self",
            key=office.plaintext,
            headers={"X-Forwarded-For": "10.1.1.1, 127.0.0.1"},
            peer="192.0.2.9",
        )
    assert inside.status_code == 200
    assert spoofed.status_code == 403


# -- maximum lifetime ----------------------------------------------------------------------------
def test_keys_created_over_http_expire_within_90_days(world: World, client: Client) -> None:
    r = client.request("POST", "/", key=world.key("admin"), json={"name": "no expiry asked"})
    assert r.json()["record"]["expires_at"] == "2027-04-15T08:00:00Z"  # T0 + 90 days
    r = client.request("POST", "/", key=world.key("admin"), json={"name": "x", "expires_in": "91d"})
    assert r.status_code == 422
    assert r.json()["field"] == "expires_in"
    assert "maximum lifetime of 90d" in r.json()["detail"]
    r = client.request(
        "POST",
        "/",
        key=world.key("admin"),
        json={"name": "x", "expires_at": "2030-01-01T00:00:00Z"},
    )
    assert r.status_code == 422
    assert r.json()["field"] == "expires_at"


def test_a_child_defaults_to_its_parents_earlier_expiry(world: World, client: Client) -> None:
    short = world.manager.create("short", ["keys:manage", "agents:read"], expires_in=5 * DAY)
    r = client.request("POST", "/", key=short.plaintext, json={"name": "child of short"})
    assert r.status_code == 201
    assert r.json()["record"]["expires_at"] == "2027-01-20T08:00:00Z"


def test_clamp_policy() -> None:
    world = make_world(on_excess="clamp", max_lifetime=10 * DAY)
    with mount_handler(world.api) as client:
        r = client.request(
            "POST", "/", key=world.key("admin"), json={"name": "x", "expires_in": "30d"}
        )
    assert r.status_code == 201
    assert r.json()["record"]["expires_at"] == "2027-01-25T08:00:00Z"
    assert "maximum lifetime of 10d" in r.json()["warnings"][0]


def test_no_lifetime_policy() -> None:
    world = make_world(max_lifetime=None)
    with mount_handler(world.api) as client:
        r = client.request("POST", "/", key=world.key("admin"), json={"name": "x"})
    assert r.json()["record"]["expires_at"] is None


# -- idempotency -----------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    store = SQLiteStore(tmp_path / "keys.db") if request.param == "sqlite" else None
    return make_world(store)


@pytest.mark.parametrize("operation", ["create", "rotate"])
def test_concurrent_retries_over_http_apply_once(shared: World, operation: str) -> None:
    """Eight clients retry one request at once through the WSGI app: one key is created (or
    one rotation happens); the others get 409 already_processed naming it, never a plaintext."""
    world = shared
    path = "/" if operation == "create" else f"/{world.id('grandchild')}/rotate"
    body = {"name": "deploy bot", "scopes": ["agents:read"]} if operation == "create" else {}
    barrier = threading.Barrier(8)
    with mount_wsgi(world.api) as client:

        def attempt(_: int) -> tuple[int, dict[str, object]]:
            barrier.wait()
            r = client.request(
                "POST", path, key=world.key("mgr"), json=body, headers={"Idempotency-Key": "req-42"}
            )
            return r.status_code, r.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(attempt, range(8)))
        statuses = sorted(status for status, _ in results)
        expected = 201 if operation == "create" else 200
        assert statuses == [expected] + [409] * 7, results
        made = next(b for s, b in results if s == expected)
        key_id = made["record"]["key_id"]  # type: ignore[index]
        for status, payload in results:
            if status == 409:
                assert payload["code"] == "already_processed"
                assert payload["key_id"] == key_id
                assert "key" not in payload
        # A later retry still replays; the same key with another body is a client error.
        again = client.request(
            "POST", path, key=world.key("mgr"), json=body, headers={"Idempotency-Key": "req-42"}
        )
        assert again.status_code == 409
        other = client.request(
            "POST",
            path,
            key=world.key("mgr"),
            json={"grace_period": 5} if operation == "rotate" else {"name": "other"},
            headers={"Idempotency-Key": "req-42"},
        )
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
    if operation == "create":
        assert [r.name for r in world.manager.iter_all()].count("deploy bot") == 1
    else:
        assert [e.action for e in world.manager.audit(key_id)].count("rotate") == 1


def test_bad_idempotency_keys(world: World, client: Client) -> None:
    for value in ("", "x" * 256, "has space"):
        r = client.request(
            "POST",
            "/",
            key=world.key("admin"),
            json={"name": "x"},
            headers={"Idempotency-Key": value},
        )
        assert r.status_code == 422, value
        assert r.json()["field"] == "Idempotency-Key"
    r = client.request(
        "POST",
        "/",
        key=world.key("admin"),
        json={"name": "x"},
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert r.status_code == 422


# -- listing --------------------------------------------------------------------------------------
def test_listing_filters_and_pages(world: World, client: Client) -> None:
    admin = world.key("admin")
    world.manager.suspend(world.id("reader"), reason="x")
    world.manager.create("soon", ["agents:read"], expires_in=2 * DAY, owner="acme")
    world.clock.advance(1)

    def ids(**params: str) -> list[str]:
        r = client.request("GET", "/", key=admin, params=params)
        assert r.status_code == 200, r.content
        return [k["name"] for k in r.json()["keys"]]

    assert ids(status="suspended") == ["reader"]
    assert "reader" not in ids(status="active")
    assert ids(owner="globex") == ["stranger"]
    assert sorted(ids(scope="tasks:read")) == ["admin", "mgr"]  # admin holds everything
    assert ids(expiring_within="3d") == ["soon"]
    assert ids(expiring_within="1d") == []
    # Cursor pagination walks every key once, in creation order.
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        params = {"limit": "3"} if cursor is None else {"limit": "3", "cursor": cursor}
        page = client.request("GET", "/", key=admin, params=params).json()
        seen += [k["name"] for k in page["keys"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [r.name for r in world.manager.iter_all()]
    for bad in (
        {"status": "sleepy"},
        {"limit": "0"},
        {"limit": "x"},
        {"cursor": "%%%"},
        {"surprise": "1"},
    ):
        r = client.request("GET", "/", key=admin, params=bad)
        assert r.status_code == 422, bad
        assert r.json()["field"] == next(iter(bad))


def test_idempotent_requests_answer_t0_outcome(world: World, client: Client) -> None:
    """A replay names the key and says why, never repeats the plaintext."""
    first = client.request(
        "POST", "/", key=world.key("admin"), json={"name": "x"}, headers={"Idempotency-Key": "k1"}
    )
    replay = client.request(
        "POST", "/", key=world.key("admin"), json={"name": "x"}, headers={"Idempotency-Key": "k1"}
    )
    assert first.status_code == 201
    assert replay.status_code == 409
    assert first.json()["key"] not in replay.content.decode()
    assert "rotate" in replay.json()["detail"]
    assert world.manager.clock() == T0


def test_changes_reach_the_shared_verifier_at_once() -> None:
    """The API tells the verifier it authenticates with to forget what it changed: a revoked
    key is refused, a rotated key's new secret accepted, on the very next request."""
    world = make_world(cache_ttl=60)
    with mount_handler(world.api) as client:
        for name in ("child", "grandchild"):
            assert client.request("GET", "/self", key=world.key(name)).status_code == 200
        r = client.request("POST", f"/{world.id('grandchild')}/rotate", key=world.key("mgr"))
        new = r.json()["key"]
        assert client.request("GET", "/self", key=new).status_code == 200
        client.request(
            "PATCH", f"/{world.id('child')}", key=world.key("mgr"), json={"enabled": False}
        )
        assert (
            client.request("GET", "/self", key=world.key("child")).json()["code"]
            == "suspended_api_key"
        )
        client.request("DELETE", f"/{world.id('child')}", key=world.key("mgr"))
        for key in (world.key("child"), new):
            assert client.request("GET", "/self", key=key).json()["code"] == "revoked_api_key"
