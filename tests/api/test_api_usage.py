"""``GET /{key_id}/usage`` and ``GET /usage?owner=…``: the report's shape, the authority rule
(a key reads the usage of keys it may manage; per-owner usage is admin only), and errors —
against the KeyManager.usage/owner_usage contract (a stand-in here)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from keyguard.management import KeyManager
from keyguard.observability.model import UsageDay, UsageReport
from tests.api.support import World, make_world, mount_handler

TODAY = date(2027, 1, 15)


def fake_report(key_id: str | None = None, owner: str | None = None, days: int = 30) -> UsageReport:
    out = tuple(
        UsageDay(
            TODAY - timedelta(days=days - 1 - i),
            {"2xx": i, "3xx": 0, "4xx": 1, "429": 0, "5xx": 0},
            {"GET /agents": i + 1},
        )
        for i in range(days)
    )
    return UsageReport(
        out, key_id=key_id, owner=owner, last_used_at=1_800_000_000.0, last_client="10.1.2.3"
    )


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    asked: list[tuple[str, str, int]] = []

    def usage(self: KeyManager, key_id: str, *, days: int = 30) -> UsageReport:
        asked.append(("key", key_id, days))
        return fake_report(key_id=key_id, days=days)

    def owner_usage(self: KeyManager, owner: str, *, days: int = 30) -> UsageReport:
        asked.append(("owner", owner, days))
        return fake_report(owner=owner, days=days)

    monkeypatch.setattr(KeyManager, "usage", usage, raising=False)
    monkeypatch.setattr(KeyManager, "owner_usage", owner_usage, raising=False)
    w = make_world()
    w.asked = asked  # type: ignore[attr-defined]
    return w


def get(world: World, path: str, actor: str, **params: str) -> Any:
    with mount_handler(world.api) as client:
        return client.request("GET", path, key=world.key(actor), params=params)


def test_a_key_usage_report(world: World) -> None:
    r = get(world, f"/{world.id('child')}/usage", "mgr", days="3")
    assert r.status_code == 200, r.json()
    usage = r.json()["usage"]
    assert usage["key_id"] == world.id("child")
    assert usage["name"] == world.record("child").name
    assert [d["day"] for d in usage["days"]] == ["2027-01-13", "2027-01-14", "2027-01-15"]
    assert usage["days"][2] == {
        "day": "2027-01-15",
        "by_status": {"2xx": 2, "3xx": 0, "4xx": 1, "429": 0, "5xx": 0},
        "by_route": {"GET /agents": 3},
        "total": 3,
    }
    assert usage["total"] == 6
    assert usage["last_client"] == "10.1.2.3"
    assert world.asked == [("key", world.id("child"), 3)]  # type: ignore[attr-defined]
    assert get(world, f"/{world.id('mgr')}/usage", "mgr").json()["usage"]["days"].__len__() == 30


@pytest.mark.parametrize(
    ("actor", "target", "status", "code"),
    [
        pytest.param("admin", "stranger", 200, None, id="admin-reads-anything"),
        pytest.param("mgr", "mgr", 200, None, id="itself"),
        pytest.param("mgr", "grandchild", 200, None, id="descendant"),
        pytest.param("child", "mgr", 403, "permission_denied", id="ancestor"),
        pytest.param("mgr", "sibling", 403, "permission_denied", id="sibling"),
        pytest.param("stranger", "mgr", 403, "permission_denied", id="stranger"),
        pytest.param("reader", "reader", 403, "insufficient_scope", id="no-manage-scope"),
    ],
)
def test_authority(world: World, actor: str, target: str, status: int, code: str | None) -> None:
    r = get(world, f"/{world.id(target)}/usage", actor)
    assert r.status_code == status, r.json()
    if code is not None:
        assert r.json()["code"] == code
        assert world.asked == []  # type: ignore[attr-defined]  # nothing was read


def test_owner_usage_is_admin_only(world: World) -> None:
    r = get(world, "/usage", "admin", owner="acme", days="2")
    assert r.status_code == 200, r.json()
    assert r.json()["usage"]["owner"] == "acme"
    assert r.json()["usage"]["key_id"] is None
    refused = get(world, "/usage", "mgr", owner="acme")
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert world.asked == [("owner", "acme", 2)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        pytest.param("/{mgr}/usage", {"days": "0"}, 422, "days", id="zero-days"),
        pytest.param("/{mgr}/usage", {"days": "367"}, 422, "days", id="too-many-days"),
        pytest.param("/{mgr}/usage", {"days": "x"}, 422, "days", id="bad-days"),
        pytest.param("/{mgr}/usage", {"since": "1"}, 422, "since", id="unknown-param"),
        pytest.param("/usage", {}, 422, "owner", id="no-owner"),
        pytest.param("/nosuchkey123/usage", {}, 404, None, id="unknown-key"),
    ],
)
def test_errors(
    world: World, path: str, params: dict[str, str], status: int, field: str | None
) -> None:
    r = get(world, path.format(mgr=world.id("mgr")), "admin", **params)
    assert r.status_code == status, r.json()
    if field is not None:
        assert r.json()["field"] == field


def test_a_post_is_refused(world: World) -> None:
    with mount_handler(world.api) as client:
        r = client.request("POST", f"/{world.id('mgr')}/usage", key=world.key("admin"))
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
