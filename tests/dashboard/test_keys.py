"""The key pages: create (the plaintext shown once), list (search, filters, sorting, badges),
detail (scopes, limits, lineage, audit trail), and the changes (rotate, suspend, resume,
revoke) — all made through the management API's operations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from keyguard.core.records import KeyStatus
from tests.dashboard.support import PREFIX, Browser, World, browser, new_key_in


@pytest.fixture
def admin(world: World) -> Browser:
    with browser(world) as b:
        assert b.sign_in(world.key("admin")).status_code == 303
        yield b


def key_rows(page: str) -> list[str]:
    return re.findall(r'<tr data-key-id="([^"]+)"', page)


def test_create_shows_the_plaintext_once(world: World, admin: Browser) -> None:
    page, plaintext = admin.create(
        "ci deploy",
        ["agents:read", "tasks:execute"],
        description="the CI pipeline",
        expires_in="30d",
        rate_limit="10/10s, 50/minute, 1000/day",
        allowed_networks="10.0.0.0/8\n192.168.1.0/24",
        metadata="team=platform\nticket=OPS-1",
    )
    assert "This is the only time this key is shown" in page.text
    assert page.headers["cache-control"] == "no-store"
    key_id = plaintext.split("_")[1]
    record = world.manager.get(key_id)
    assert record.name == "ci deploy"
    assert record.description == "the CI pipeline"
    assert record.scopes == {"agents:read", "tasks:execute"}
    assert record.rate_limit == "10/10s, 50/minute, 1000/day"
    assert record.allowed_networks == ("10.0.0.0/8", "192.168.1.0/24")
    assert dict(record.metadata) == {"team": "platform", "ticket": "OPS-1"}
    assert record.owner == "acme"
    assert record.created_by == world.id("admin")
    assert record.expires_at == pytest.approx(world.clock.now + 30 * 86400)
    assert world.manager.verify(plaintext).allowed
    # Listed, and shown in detail, without its secret.
    secret = plaintext.split("_", 2)[2]
    for path in ("/keys", f"/keys/{key_id}", "/activity?show=all", "/usage"):
        shown = admin.get(path)
        assert shown.status_code == 200
        assert secret[:16] not in shown.text
        assert plaintext not in shown.text
    assert key_id in key_rows(admin.get("/keys").text)


def test_resubmitting_the_create_form_makes_no_second_key(world: World, admin: Browser) -> None:
    admin.get("/keys/new")
    data = {"name": "once", "scopes": ["agents:read"], "request_id": admin.request_id()}
    first = admin.post("/keys/new", data)
    assert new_key_in(first.text) is not None
    before = len(world.store.list(limit=1000).items)
    again = admin.post("/keys/new", data)
    assert again.status_code == 409
    assert "already submitted" in again.text
    assert new_key_in(again.text) is None
    assert len(world.store.list(limit=1000).items) == before


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        pytest.param({"name": ""}, "name", "name", id="no-name"),
        pytest.param({"scopes": ["nope:nope"]}, "scopes", "unknown scope", id="unknown-scope"),
        pytest.param({"expires_in": "120d"}, "expires_in", "90 days", id="beyond-policy"),
        pytest.param({"expires_at": "2001-01-01"}, "expires_at", "", id="past-date"),
        pytest.param({"rate_limit": "lots"}, "rate_limit", "rate", id="bad-rate-limit"),
        pytest.param({"allowed_networks": "nowhere"}, "allowed_networks", "", id="bad-network"),
        pytest.param({"metadata": "no equals sign"}, "metadata", "line 1", id="bad-metadata"),
        pytest.param({"metadata": "{not json"}, "metadata", "JSON", id="bad-json-metadata"),
    ],
)
def test_create_form_errors_name_the_field(
    world: World, admin: Browser, fields: dict[str, object], field: str, message: str
) -> None:
    admin.get("/keys/new")
    data = {"name": "x", "scopes": ["agents:read"], "request_id": admin.request_id(), **fields}
    before = len(world.store.list(limit=1000).items)
    response = admin.post("/keys/new", data)
    assert response.status_code in (400, 422), response.text
    assert 'role="alert"' in response.text
    assert message in response.text
    assert new_key_in(response.text) is None
    assert len(world.store.list(limit=1000).items) == before
    if field in ("name", "rate_limit", "allowed_networks", "metadata"):
        assert re.search(rf'id="{field}"[^>]*aria-invalid="true"', response.text), field


def test_the_create_form_offers_the_catalog_with_descriptions(admin: Browser) -> None:
    page = admin.get("/keys/new").text
    assert "Read agent configurations and status" in page
    assert "Create, list, rotate and revoke API keys" in page  # keys:manage
    assert "live at most 90 days" in page
    assert re.search(r'<option value="90d" selected>', page)


def test_a_manager_cannot_grant_beyond_its_own_scopes(world: World) -> None:
    with browser(world) as b:
        b.sign_in(world.key("mgr"))
        page = b.get("/keys/new").text
        assert re.search(r'value="agents:write"[^>]* disabled', page)
        assert not re.search(r'value="agents:read"[^>]* disabled', page)
        response = b.post(
            "/keys/new",
            {"name": "x", "scopes": ["agents:write"], "request_id": b.request_id()},
        )
        assert response.status_code == 403
        assert new_key_in(response.text) is None
    refusals = [e for e in world.store.audit(limit=100) if e.action == "create.refused"]
    assert refusals
    assert refusals[0].actor == f"key:{world.id('mgr')}"


def test_rotate_shows_the_new_secret_once_and_keeps_the_old_for_the_grace(
    world: World, admin: Browser
) -> None:
    _, plaintext = admin.create("svc", ["agents:read"])
    key_id = plaintext.split("_")[1]
    admin.get(f"/keys/{key_id}")
    response = admin.post(
        f"/keys/{key_id}/rotate", {"grace_period": "3600", "request_id": admin.request_id()}
    )
    assert response.status_code == 200
    rotated = new_key_in(response.text)
    assert rotated is not None
    assert rotated != plaintext
    assert rotated.split("_")[1] == key_id
    assert "The old secret keeps working until" in response.text
    assert world.manager.verify(plaintext).allowed
    assert world.manager.verify(rotated).allowed
    world.clock.advance(3601)
    assert not world.manager.verify(plaintext).allowed
    assert world.manager.verify(rotated).allowed


def test_suspend_resume_and_revoke(world: World, admin: Browser) -> None:
    _, plaintext = admin.create("svc", ["agents:read"])
    key_id = plaintext.split("_")[1]
    admin.get(f"/keys/{key_id}")
    done = admin.post(f"/keys/{key_id}/suspend", {"reason": "investigating"})
    assert done.headers["location"] == f"{PREFIX}/keys/{key_id}?done=suspended"
    assert world.manager.get(key_id).suspended_reason == "investigating"
    page = admin.get(f"/keys/{key_id}?done=suspended").text
    assert "The key is suspended" in page
    assert "investigating" in page
    admin.post(f"/keys/{key_id}/resume")
    assert world.manager.get(key_id).status(world.clock.now) is KeyStatus.ACTIVE
    admin.get(f"/keys/{key_id}")
    unconfirmed = admin.post(f"/keys/{key_id}/revoke", {"reason": "leaked"})
    assert unconfirmed.status_code == 422
    assert world.manager.get(key_id).revoked_at is None
    admin.post(f"/keys/{key_id}/revoke", {"reason": "leaked", "confirm": "yes"})
    record = world.manager.get(key_id)
    assert record.revoked_reason == "leaked"
    assert not world.manager.verify(plaintext).allowed
    page = admin.get(f"/keys/{key_id}").text
    assert "/rotate" not in page
    assert "/revoke" not in page
    actions = [e.action for e in world.store.audit(key_id=key_id)]
    assert actions == ["revoke", "resume", "suspend", "create"]


@pytest.mark.parametrize("cascade", [True, False])
def test_revoking_cascades_only_when_asked(world: World, admin: Browser, cascade: bool) -> None:
    page = admin.get(f"/keys/{world.id('mgr')}").text
    assert re.search(r'name="cascade" value="yes" checked', page)  # the default
    form = {"reason": "r", "confirm": "yes", **({"cascade": "yes"} if cascade else {})}
    admin.post(f"/keys/{world.id('mgr')}/revoke", form)
    assert world.manager.get(world.id("mgr")).revoked_at is not None
    assert (world.manager.get(world.id("child")).revoked_at is not None) is cascade


def test_the_listing_filters_sorts_and_badges(world: World, admin: Browser) -> None:
    m = world.manager
    soon = m.create(
        "soon", ["agents:read"], owner="acme", expires_at=world.clock.now + 3 * 86400
    ).key_id
    m.verify(world.key("reader"))  # used now
    world.clock.advance(10)
    m.verify(world.key("child"))  # used later
    all_ids = key_rows(admin.get("/keys").text)
    assert set(all_ids) == {k.key_id for k in world.keys.values()} | {soon}
    assert key_rows(admin.get("/keys?owner=globex").text) == [world.id("stranger")]
    assert key_rows(admin.get("/keys?q=READ").text) == [world.id("reader")]
    assert key_rows(admin.get(f"/keys?q={world.id('child')}").text) == [world.id("child")]
    with_tasks = set(key_rows(admin.get("/keys?scope=tasks:read").text))
    assert with_tasks == {world.id("admin"), world.id("mgr")}
    assert key_rows(admin.get("/keys?flag=expiring").text) == [soon]
    never = set(key_rows(admin.get("/keys?flag=never_used").text))
    assert world.id("reader") not in never
    assert soon in never
    by_use = key_rows(admin.get("/keys?sort=last_used").text)
    assert by_use[0] == world.id("child")
    assert by_use.index(world.id("reader")) < by_use.index(soon)  # never used: last
    by_expiry = key_rows(admin.get("/keys?sort=expires").text)
    assert by_expiry[0] == soon
    m.revoke(world.id("reader"), reason="r")
    assert key_rows(admin.get("/keys?status=revoked").text) == [world.id("reader")]
    page = admin.get("/keys?flag=expiring").text
    assert "expiring soon" in page
    assert "never used" in page
    bad = admin.get("/keys?status=bogus&scope=NOT%20A%20SCOPE")
    assert bad.status_code == 400
    assert "Unknown status" in bad.text
    assert "Unknown scope" in bad.text


def test_the_listing_pages(world: World, admin: Browser) -> None:
    for i in range(60):
        world.manager.create(f"bulk-{i:02d}", ["agents:read"], owner="acme")
    first = key_rows(admin.get("/keys?sort=name").text)
    second = key_rows(admin.get("/keys?sort=name&page=2").text)
    assert len(first) == 50
    assert len(second) == 15
    assert not set(first) & set(second)


def test_the_detail_page(world: World, admin: Browser) -> None:
    expires = datetime.now(UTC) + timedelta(days=20)
    world.manager.update(world.id("mgr"), rate_limit="50/minute", metadata={"team": "ops"})
    page = admin.get(f"/keys/{world.id('mgr')}").text
    assert "Read agent configurations and status" in page  # scopes with descriptions
    assert "50/minute" in page
    assert "team" in page
    assert "ops" in page
    assert f'href="{PREFIX}/keys/{world.id("admin")}"' in page  # parent
    assert f'href="{PREFIX}/keys/{world.id("child")}"' in page  # child
    assert "<code>create</code>" in page
    assert "<code>update</code>" in page
    assert expires.year >= 2000
    assert admin.get("/keys/AAAAAAAAAAAA").status_code == 404
    assert admin.get("/keys/not-an-id").status_code == 404
