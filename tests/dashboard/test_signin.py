"""Signing in and out, and every way a session ends: the key revoked, suspended, expired or
rotated elsewhere, signed out in another worker, the session's own lifetime and idle time."""

from __future__ import annotations

import re

import pytest

from keyguard.core.bruteforce import BruteForceGuard
from keyguard.core.records import AuditEvent
from tests.dashboard.support import PREFIX, Browser, World, browser, make_world


def signed_in(b: Browser, key: str) -> None:
    response = b.sign_in(key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{PREFIX}/keys"


def test_admin_signs_in_and_out(world: World) -> None:
    with browser(world) as b:
        assert b.get("/keys").headers["location"] == f"{PREFIX}/sign-in"
        signed_in(b, world.key("admin"))
        page = b.get("/keys")
        assert page.status_code == 200
        assert world.id("admin") in page.text
        assert "Sign out" in page.text
        out = b.post("/sign-out")
        assert out.status_code == 303
        assert out.headers["location"] == f"{PREFIX}/sign-in?m=signed-out"
        assert b.get("/keys").headers["location"] == f"{PREFIX}/sign-in"
        assert "You are signed out." in b.get("/sign-in?m=signed-out").text
    actions = [e.action for e in world.store.audit(key_id=world.id("admin"))]
    assert actions[:2] == ["dashboard.sign_out", "dashboard.sign_in"]


def test_a_management_key_that_is_not_admin_signs_in(world: World) -> None:
    with browser(world) as b:
        signed_in(b, world.key("mgr"))
        assert b.get("/keys").status_code == 200


@pytest.mark.parametrize(
    ("which", "status", "message"),
    [
        pytest.param("reader", 403, "This key cannot manage keys", id="read-only"),
        pytest.param("typo", 401, "That is not a valid key.", id="invalid"),
        pytest.param("garbage", 401, "That is not a valid key.", id="malformed"),
        pytest.param("revoked", 401, "This key cannot sign in (revoked_api_key)", id="revoked"),
        pytest.param(
            "suspended", 401, "This key cannot sign in (suspended_api_key)", id="suspended"
        ),
    ],
)
def test_keys_that_cannot_sign_in(world: World, which: str, status: int, message: str) -> None:
    key = {"reader": world.key("reader"), "garbage": "not a key"}.get(which, world.key("child"))
    if which == "typo":
        key = key[:-3] + ("aaa" if not key.endswith("aaa") else "bbb")
    elif which == "revoked":
        world.manager.revoke(world.id("child"), reason="test")
    elif which == "suspended":
        world.manager.suspend(world.id("child"), reason="test")
    with browser(world) as b:
        response = b.sign_in(key)
        assert response.status_code == status
        assert message in response.text
        assert not [c for c in b.cookie_headers() if c.startswith("kg_dashboard=")]
        assert b.get("/keys").headers["location"] == f"{PREFIX}/sign-in"


def test_failed_sign_ins_count_for_the_brute_force_guard() -> None:
    """The pasted key is checked like a management API request: wrong guesses from one
    address end in 429 (the right key too, while the address is blocked), and the dashboard
    says so without saying more."""
    world = make_world(verifier_options={"brute_force": BruteForceGuard(threshold=3)})
    bad = world.key("admin")[:-3] + ("zzz" if not world.key("admin").endswith("zzz") else "yyy")
    with browser(world) as b:
        statuses = [b.sign_in(bad).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        assert b.last is not None
        assert "Too many attempts" in b.last.text


def test_sign_in_needs_its_form_token(world: World) -> None:
    with browser(world) as b:
        b.get("/sign-in")
        for token in (None, "forged"):
            response = b.post("/sign-in", {"key": world.key("admin")}, csrf=token)
            assert response.status_code == 403
            assert "did not come from this dashboard" in response.text
    # Nor is a token good without the nonce cookie it belongs to (another browser's form).
    with browser(world) as first, browser(world) as second:
        first.get("/sign-in")
        token = first.csrf()
        second.get("/sign-in")
        assert second.post("/sign-in", {"key": world.key("admin")}, csrf=token).status_code == 403


def test_a_key_revoked_elsewhere_ends_its_session_at_the_next_request(world: World) -> None:
    with browser(world) as b:
        signed_in(b, world.key("mgr"))
        assert b.get("/keys").status_code == 200
        world.manager.revoke(world.id("mgr"), reason="revoked from the CLI")
        ended = b.get("/keys")
        assert ended.status_code == 303
        assert ended.headers["location"] == f"{PREFIX}/sign-in?m=ended"
        assert any("kg_dashboard=;" in c and "Max-Age=0" in c for c in b.cookie_headers())
        assert "Your session ended" in b.get("/sign-in?m=ended").text


@pytest.mark.parametrize("change", ["suspend", "expire", "narrow-scopes"])
def test_a_key_changed_elsewhere_ends_its_session(world: World, change: str) -> None:
    with browser(world) as b:
        signed_in(b, world.key("mgr"))
        key_id = world.id("mgr")
        if change == "suspend":
            world.manager.suspend(key_id, reason="test")
        elif change == "expire":
            world.manager.expire(key_id)
            world.clock.advance(1)
        else:
            world.manager.update(key_id, scopes=["agents:read"])
        assert b.get("/keys").headers["location"] == f"{PREFIX}/sign-in?m=ended"


def test_rotation_ends_the_session_when_the_old_secret_stops_working(world: World) -> None:
    with browser(world) as b:
        signed_in(b, world.key("mgr"))
        world.manager.rotate(world.id("mgr"), grace=600)
        assert b.get("/keys").status_code == 200  # the old secret still works
        world.clock.advance(601)
        assert b.get("/keys").headers["location"] == f"{PREFIX}/sign-in?m=ended"


def test_sign_out_ends_the_session_in_every_worker(world: World) -> None:
    """Two dashboards on one store and secret stand for two worker processes: a session
    made in one is accepted by the other, and signing out in one ends it in both."""
    other = world.another_dashboard()
    with browser(world) as one, browser(world, other) as two:
        signed_in(one, world.key("admin"))
        two.client.cookies = one.client.cookies
        assert two.get("/keys").status_code == 200
        world.clock.advance(1)
        one.post("/sign-out")
        assert two.get("/keys").headers["location"] == f"{PREFIX}/sign-in?m=signed-out"
        # Signing in again right away works (the new session is issued after the sign-out).
        signed_in(one, world.key("admin"))
        assert one.get("/keys").status_code == 200


def test_a_session_signed_with_another_secret_is_refused(world: World) -> None:
    stranger = world.another_dashboard()
    stranger.signer = type(stranger.signer)(b"x" * 40)
    with browser(world, stranger) as forged, browser(world) as b:
        signed_in(forged, world.key("admin"))
        b.client.cookies = forged.client.cookies
        assert b.get("/keys").headers["location"] == f"{PREFIX}/sign-in?m=ended"


def test_sessions_expire_and_idle_out() -> None:
    world = make_world(session_ttl=3600, idle_timeout=600)
    with browser(world) as b:
        signed_in(b, world.key("admin"))
        for _ in range(11):  # active use keeps it alive until its lifetime ends
            world.clock.advance(300)
            assert b.get("/keys").status_code == 200
        world.clock.advance(300)
        assert b.get("/keys").headers["location"].endswith("?m=expired")
    world.clock.advance(1)
    with browser(world) as b:
        signed_in(b, world.key("admin"))
        world.clock.advance(601)
        assert b.get("/keys").headers["location"].endswith("?m=expired")


def test_the_cookie_names_the_key_and_holds_nothing_secret(world: World) -> None:
    with browser(world) as b:
        signed_in(b, world.key("admin"))
        cookies = b.cookie_headers()
    session = next(c for c in cookies if c.startswith("kg_dashboard="))
    assert "HttpOnly" in session
    assert "SameSite=Strict" in session
    assert "Secure" not in session  # plain HTTP (a test server)
    assert f"Path={PREFIX}" in session
    plaintext = world.key("admin")
    digest = world.manager.get(world.id("admin")).digest
    for c in cookies:
        assert plaintext not in c
        assert plaintext.split("_", 2)[2][:16] not in c
        assert digest.split("$")[-1][:16] not in c


def test_signing_in_is_audited_without_key_material(world: World) -> None:
    with browser(world) as b:
        signed_in(b, world.key("admin"))
    (event,) = [
        e for e in world.store.audit(key_id=world.id("admin")) if e.action.startswith("dash")
    ]
    assert isinstance(event, AuditEvent)
    assert event.details == {"client": "127.0.0.1"}
    assert event.actor == f"key:{world.id('admin')}"
    assert not re.search(world.key("admin").split("_", 2)[2][:12], repr(event.to_dict()))
