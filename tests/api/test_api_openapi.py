"""The management API's OpenAPI document: served, complete, and merged into FastAPI's own."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from keyguard.adapters.fastapi import KeyGuard, mount_management
from keyguard.core.decision import Principal
from keyguard.management.api import ManagementAPI, merge_openapi, openapi_document
from tests.api.support import asgi_client, make_world

ROUTES = {
    ("/api-keys", "get"),
    ("/api-keys", "post"),
    ("/api-keys/audit", "get"),
    ("/api-keys/self", "get"),
    ("/api-keys/{key_id}", "get"),
    ("/api-keys/{key_id}", "patch"),
    ("/api-keys/{key_id}", "delete"),
    ("/api-keys/{key_id}/rotate", "post"),
    ("/api-keys/{key_id}/expire", "post"),
    ("/api-keys/{key_id}/audit", "get"),
    ("/api-keys/{key_id}/usage", "get"),
    ("/api-keys/usage", "get"),
}


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete", "put")
    }


def refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if "$ref" in value else set()
        for v in value.values():
            found |= refs(v)
        return found
    if isinstance(value, list):
        return set().union(*(refs(v) for v in value)) if value else set()
    return set()


def test_document_covers_every_route_and_resolves() -> None:
    doc = openapi_document("/api-keys")
    assert doc["openapi"].startswith("3.1")
    assert operations(doc) == ROUTES
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    create = doc["paths"]["/api-keys"]["post"]
    assert "201" in create["responses"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert doc["components"]["securitySchemes"]["UserKey"]["name"] == "Authorization"
    assert set(schemas["KeyguardCreateKey"]["properties"]) == {
        "name",
        "description",
        "scopes",
        "expires_in",
        "expires_at",
        "owner",
        "rate_limit",
        "metadata",
        "allowed_networks",
    }


def test_document_follows_the_prefix() -> None:
    doc = openapi_document("/api/v1/auth/keys")
    assert "/api/v1/auth/keys/{key_id}/rotate" in doc["paths"]
    assert "/" in openapi_document("")["paths"]


def test_merge_keeps_what_the_application_defined() -> None:
    app_doc: dict[str, Any] = {
        "paths": {"/api-keys": {"get": {"summary": "mine"}}, "/agents": {}},
        "components": {"schemas": {"KeyguardKeyRecord": {"type": "string"}}},
    }
    merged = merge_openapi(app_doc, openapi_document("/api-keys"))
    assert merged["paths"]["/api-keys"] == {"get": {"summary": "mine"}}
    assert "/api-keys/{key_id}" in merged["paths"]
    assert "/agents" in merged["paths"]
    assert merged["components"]["schemas"]["KeyguardKeyRecord"] == {"type": "string"}
    assert "KeyguardCreatedKey" in merged["components"]["schemas"]


def test_fastapi_serves_one_merged_document() -> None:
    world = make_world()
    app = FastAPI()
    guard = KeyGuard(verifier=world.verifier)

    reader = Depends(guard.require("agents:read"))

    @app.get("/agents")
    def agents(principal: Principal = reader) -> dict[str, str]:
        return {"ok": principal.key_id}

    guard.install(app)
    mount_management(app, world.api)
    api2 = ManagementAPI(world.manager, verifier=world.verifier, prefix="/api/v1/auth/keys")
    mount_management(app, api2)
    with asgi_client(app, "") as client:
        doc = client.request("GET", "/openapi.json").json()
        served = client.request("GET", "/api-keys/openapi.json").json()
    assert operations(doc) >= ROUTES
    assert ("/api/v1/auth/keys/{key_id}/rotate", "post") in operations(doc)
    assert ("/agents", "get") in operations(doc)
    assert operations(served) == ROUTES
    assert doc["paths"]["/agents"]["get"]["x-required-scopes"] == ["agents:read"]
