"""The demo serves key management at the platform's path, and the issue's walkthrough holds:
in process (ASGI) and, marked slow, over real HTTP against ``uvicorn keyguard.demo:create_app``.

The walkthrough: the admin key creates an ``agents:read`` child with
``POST /api/v1/auth/keys``; that child cannot create an ``agents:write`` key (403, nothing
stored); a management key creates a narrower child but cannot rotate or revoke the admin key;
revoking a parent revokes its descendants; rotation returns a new key while the old one works
until the grace deadline; a suspended key is refused and works again after resume; a key
restricted to 10.0.0.0/8 is refused from 127.0.0.1. (Suspension and networks are checked
here on the management API, which applies them itself; on the demo's other routes they need
the verifier to call :func:`keyguard.core.restrictions.record_denial` — see
``tests/adapters/test_restrictions_adapters.py``.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyguard.demo import MANAGEMENT_PREFIXES, bootstrap, create_app
from keyguard.stores.memory import MemoryStore
from keyguard.stores.sqlite import SQLiteStore
from tests.api.support import SyncASGITransport

BASE = "/api/v1/auth/keys"


def walkthrough(client: httpx.Client, admin: str, count: Any) -> None:
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"UserKey {key}"}

    # The admin key creates an agents:read child at the platform's path.
    r = client.post(BASE, headers=auth(admin), json={"name": "reader", "scopes": ["agents:read"]})
    assert r.status_code == 201, r.text
    reader = r.json()["key"]
    assert client.get("/agents", headers=auth(reader)).status_code == 200
    # That child cannot create an agents:write key: 403, nothing stored.
    before = count()
    r = client.post(BASE, headers=auth(reader), json={"name": "w", "scopes": ["agents:write"]})
    assert r.status_code == 403
    assert count() == before
    # A management key creates a narrower child, but cannot rotate or revoke the admin key.
    r = client.post(
        BASE,
        headers=auth(admin),
        json={"name": "mgr", "scopes": ["keys:manage", "agents:read", "tasks:read"]},
    )
    mgr, mgr_id = r.json()["key"], r.json()["record"]["key_id"]
    r = client.post(BASE, headers=auth(mgr), json={"name": "narrow", "scopes": ["tasks:read"]})
    assert r.status_code == 201
    narrow = r.json()["key"]
    r = client.post(
        BASE, headers=auth(narrow), json={"name": "too wide", "scopes": ["agents:write"]}
    )
    assert r.status_code == 403
    admin_id = client.get(f"{BASE}/self", headers=auth(admin)).json()["record"]["key_id"]
    assert client.post(f"{BASE}/{admin_id}/rotate", headers=auth(mgr)).status_code == 403
    assert client.request("DELETE", f"{BASE}/{admin_id}", headers=auth(mgr)).status_code == 403
    assert client.get("/agents", headers=auth(admin)).status_code == 200
    # Rotation: a new key; the old one works until the grace deadline.
    r = client.post(f"{BASE}/{mgr_id}/rotate", headers=auth(admin), json={"grace_period": 2})
    assert r.status_code == 200
    new_mgr = r.json()["key"]
    assert client.get("/tasks", headers=auth(mgr)).status_code == 200
    assert client.get("/tasks", headers=auth(new_mgr)).status_code == 200
    deadline = time.monotonic() + 30
    while client.get("/tasks", headers=auth(mgr)).status_code == 200:
        assert time.monotonic() < deadline, "the old secret outlived its grace period"
        time.sleep(0.5)
    assert client.get("/tasks", headers=auth(mgr)).json()["code"] == "invalid_api_key"
    # Suspend and resume.
    r = client.patch(f"{BASE}/{mgr_id}", headers=auth(admin), json={"enabled": False})
    assert r.json()["record"]["status"] == "suspended"
    r = client.get(f"{BASE}/self", headers=auth(new_mgr))
    assert r.status_code == 401
    assert r.json()["code"] == "suspended_api_key"
    client.patch(f"{BASE}/{mgr_id}", headers=auth(admin), json={"enabled": True})
    assert client.get(f"{BASE}/self", headers=auth(new_mgr)).status_code == 200
    # A key restricted to 10.0.0.0/8 is refused from 127.0.0.1.
    r = client.post(
        BASE,
        headers=auth(admin),
        json={"name": "office", "scopes": ["agents:read"], "allowed_networks": ["10.0.0.0/8"]},
    )
    office = r.json()["key"]
    r = client.get(f"{BASE}/self", headers=auth(office))
    assert r.status_code == 403
    assert r.json()["code"] == "network_not_allowed"
    # Revoking a parent revokes its descendants.
    r = client.request("DELETE", f"{BASE}/{mgr_id}", headers=auth(admin))
    assert r.status_code == 200
    assert len(r.json()["revoked"]) == 2
    for key in (new_mgr, narrow):
        r = client.get("/tasks", headers=auth(key))
        assert r.json()["code"] == "revoked_api_key"


def test_walkthrough_in_process() -> None:
    store = MemoryStore()
    keys = bootstrap(store).created
    app = create_app(store=store)
    with httpx.Client(transport=SyncASGITransport(app), base_url="http://demo") as client:
        walkthrough(client, keys["admin"], lambda: len(store.list(limit=1000).items))
        # Both prefixes serve the same API.
        for prefix in MANAGEMENT_PREFIXES:
            r = client.get(prefix, headers={"Authorization": f"UserKey {keys['admin']}"})
            assert r.status_code == 200
            assert client.get(f"{prefix}/openapi.json").status_code == 200


@pytest.mark.slow
def test_walkthrough_over_real_http(tmp_path: Path) -> None:
    from tests.test_demo import DemoServer

    db = tmp_path / "demo.db"
    with SQLiteStore(db) as store:
        admin = bootstrap(store).created["admin"]

    def count() -> int:
        with SQLiteStore(db) as store:
            return len(store.list(limit=1000).items)

    with DemoServer({"KEYGUARD_STORE_URL": f"sqlite:///{db}"}) as client:
        walkthrough(client, admin, count)
