"""Every route of the management API through every way of serving it: the bare handler, the
ASGI and WSGI apps (alone and behind keyguard's middleware), Starlette, FastAPI, Flask and
Django mounts. Each mount must answer byte-for-byte the same statuses, codes and headers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.support import DAY, MOUNTS, T0, Client, World, make_world


@pytest.fixture(params=list(MOUNTS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[World, Client]]:
    world = make_world()
    with MOUNTS[request.param](world.api) as client:
        yield world, client


def test_every_route(served: tuple[World, Client]) -> None:
    world, client = served
    admin = world.key("admin")

    # POST / — create: the plaintext once, 201, Location, no-store.
    r = client.request(
        "POST",
        "/",
        key=admin,
        json={
            "name": "ci deploy",
            "description": "deploys from CI",
            "scopes": ["agents:read", "keys:manage"],
            "expires_in": "30d",
            "rate_limit": "10/10s, 50/minute, 1000/day",
            "metadata": {"team": "platform"},
            "allowed_networks": ["10.0.0.0/8"],
        },
    )
    assert r.status_code == 201, r.content
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    key_id = body["record"]["key_id"]
    assert r.headers["location"] == f"{client.prefix}/{key_id}"
    assert body["key"].startswith(f"kg_{key_id}_")
    record = body["record"]
    assert record["expires_at"] == "2027-02-14T08:00:00Z"  # T0 + 30 days
    assert record["created_by"] == world.id("admin")
    assert record["owner"] == "acme"
    assert record["allowed_networks"] == ["10.0.0.0/8"]
    assert record["description"] == "deploys from CI"
    assert "digest" not in record
    assert world.manager.verify(body["key"]).allowed

    # GET / — list (never secrets), GET /{id}, GET /self.
    r = client.request("GET", "/", key=admin, params={"limit": "100"})
    assert r.status_code == 200
    listed = r.json()
    assert key_id in [k["key_id"] for k in listed["keys"]]
    assert listed["next_cursor"] is None
    assert body["key"] not in r.text if hasattr(r, "text") else True
    assert "digest" not in r.content.decode()
    r = client.request("GET", f"/{key_id}", key=admin)
    assert r.status_code == 200
    assert r.json()["record"]["name"] == "ci deploy"
    r = client.request("GET", "/self", key=world.key("reader"))
    assert r.status_code == 200
    assert r.json()["record"]["key_id"] == world.id("reader")

    # PATCH /{id} — rename, narrow scopes, suspend, resume.
    r = client.request(
        "PATCH", f"/{key_id}", key=admin, json={"name": "ci", "scopes": ["agents:read"]}
    )
    assert r.status_code == 200, r.content
    assert r.json()["record"]["scopes"] == ["agents:read"]
    r = client.request(
        "PATCH", f"/{key_id}", key=admin, json={"enabled": False, "reason": "investigating"}
    )
    assert r.status_code == 200
    assert r.json()["record"]["status"] == "suspended"
    assert r.json()["record"]["suspended_reason"] == "investigating"
    r = client.request("PATCH", f"/{key_id}", key=admin, json={"enabled": True})
    assert r.json()["record"]["status"] == "active"

    # POST /{id}/rotate — a new plaintext once; the old one works through the grace period.
    r = client.request("POST", f"/{key_id}/rotate", key=admin, json={"grace_period": "1h"})
    assert r.status_code == 200, r.content
    assert r.headers["cache-control"] == "no-store"
    rotated = r.json()
    assert rotated["key"] != body["key"]
    assert rotated["old_secret_valid_until"] == "2027-01-15T09:00:00Z"  # T0 + 1 h
    assert world.manager.verify(body["key"]).allowed
    assert world.manager.verify(rotated["key"]).allowed

    # POST /{id}/expire, GET /{id}/audit, GET /audit.
    r = client.request("POST", f"/{key_id}/expire", key=admin, json={"at": "2027-01-31T00:00:00Z"})
    assert r.status_code == 200, r.content
    assert r.json()["record"]["expires_at"] == "2027-01-31T00:00:00Z"
    r = client.request("GET", f"/{key_id}/audit", key=admin, params={"limit": "10"})
    assert r.status_code == 200
    actions = [e["action"] for e in r.json()["events"]]
    assert actions == ["expire", "rotate", "resume", "suspend", "update", "create"]
    r = client.request("GET", "/audit", key=admin, params={"limit": "3"})
    assert [e["action"] for e in r.json()["events"]] == ["expire", "rotate", "resume"]

    # DELETE /{id} — revoke with a reason.
    r = client.request("DELETE", f"/{key_id}", key=admin, json={"reason": "rotated out"})
    assert r.status_code == 200, r.content
    assert r.json() == {"revoked": [key_id]}
    assert world.record("admin").status(T0).value == "active"
    assert world.manager.get(key_id).revoked_reason == "rotated out"
    assert world.manager.verify(rotated["key"]).code.value == "revoked_api_key"

    # GET /openapi.json is public.
    r = client.request("GET", "/openapi.json")
    assert r.status_code == 200
    assert f"{client.prefix}/{{key_id}}/rotate" in r.json()["paths"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        pytest.param("GET", "/", {}, 401, "missing_api_key", id="no-key"),
        pytest.param("GET", "/nope/extra/more", {}, 404, "not_found", id="unknown-route"),
        pytest.param("PUT", "/", {}, 405, "method_not_allowed", id="wrong-method"),
        pytest.param(
            "POST",
            "/",
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            "malformed_body",
            id="bad-json",
        ),
        pytest.param(
            "POST",
            "/",
            {"content": b"name=x", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
            id="not-json",
        ),
        pytest.param(
            "POST",
            "/",
            {"json": {"name": "x", "surprise": 1}},
            422,
            "invalid_field",
            id="unknown-field",
        ),
        pytest.param(
            "POST", "/", {"json": {"name": "x" * 70_000}}, 413, "body_too_large", id="too-large"
        ),
        pytest.param("GET", "/AAAAAAAAAAAA", {}, 404, "not_found", id="unknown-key"),
    ],
)
def test_refusals_are_problems_on_every_mount(
    served: tuple[World, Client],
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    code: str,
) -> None:
    world, client = served
    key = None if code in ("missing_api_key",) else world.key("admin")
    before = world.snapshot()
    r = client.request(method, path, key=key, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.content
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["code"] == code
    assert r.headers["x-request-id"] == r.json()["request_id"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith('UserKey realm="keyguard"')
    if status == 405:
        assert "GET" in r.headers["allow"]
    if code == "invalid_field":
        assert r.json()["field"] == "surprise"
    assert world.snapshot() == before


def test_exact_prefix_and_trailing_slash(served: tuple[World, Client]) -> None:
    """``POST /api-keys`` (the platform's spelling) and ``/api-keys/`` both reach the collection."""
    world, client = served
    r = client.request("POST", "/", key=world.key("admin"), json={"name": "exact prefix"})
    assert r.status_code == 201
    trailing = Client(client._send, client.prefix + "/")
    r = trailing.request("GET", "/", key=world.key("admin"))
    assert r.status_code == 200


def test_expiry_warning_header(served: tuple[World, Client]) -> None:
    world, client = served
    made = world.manager.create(
        "short",
        ["keys:manage", "agents:read"],
        expires_in=3 * DAY,
        parent=world.keys["admin"].record,
    )
    r = client.request("GET", "/self", key=made.plaintext)
    assert r.headers["api-key-expires"] == "2027-01-18T08:00:00Z"
    r = client.request("GET", "/self", key=world.key("admin"))
    assert "api-key-expires" not in r.headers
