"""The management API's OpenAPI 3.1 document, and merging it into an application's own.

:func:`openapi_document` describes every route under a prefix (served at
``<prefix>/openapi.json``); :func:`merge_openapi` adds those paths and components to another
document — FastAPI's, when the API is mounted there — without overwriting anything the
application defined (component names are prefixed ``Keyguard``; the ``UserKey`` security
scheme is the same one keyguard's FastAPI adapter declares).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["SCHEME_NAME", "merge_openapi", "openapi_document"]

SCHEME_NAME: Final = "UserKey"
_REF: Final = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


_DURATION: Final = {
    "oneOf": [
        {"type": "integer", "minimum": 0, "description": "seconds"},
        {"type": "string", "pattern": "^[0-9]{1,10}[smhdw]$", "examples": ["30d", "12h", "90m"]},
    ]
}
_TIME: Final = {"type": "string", "format": "date-time", "examples": ["2030-01-31T12:00:00Z"]}
_NULL_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_STRINGS: Final = {"type": "array", "items": {"type": "string"}}

SCHEMAS: Final[dict[str, Any]] = {
    "KeyguardKeyRecord": {
        "type": "object",
        "description": "A key as an operator may see it: never its secret or digest.",
        "properties": {
            "key_id": {"type": "string", "pattern": "^[0-9A-Za-z]{12}$"},
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "status": {"enum": ["active", "suspended", "expired", "revoked"]},
            "scopes": _STRINGS,
            "owner": {"type": ["string", "null"]},
            "created_at": _TIME,
            "expires_at": _NULL_TIME,
            "revoked_at": _NULL_TIME,
            "revoked_reason": {"type": ["string", "null"]},
            "created_by": {"type": ["string", "null"]},
            "rate_limit": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "last_used_at": _NULL_TIME,
            "rotated_at": _NULL_TIME,
            "rotation_grace_until": _NULL_TIME,
            "suspended_at": _NULL_TIME,
            "suspended_reason": {"type": ["string", "null"]},
            "allowed_networks": _STRINGS,
            "prefix": {"type": "string"},
        },
    },
    "KeyguardCreatedKey": {
        "type": "object",
        "description": "The plaintext key is in `key`, this once: store it now.",
        "properties": {
            "key": {"type": "string"},
            "record": _ref("KeyguardKeyRecord"),
            "old_secret_valid_until": _NULL_TIME,
            "warnings": _STRINGS,
        },
        "required": ["key", "record"],
    },
    "KeyguardKeyList": {
        "type": "object",
        "properties": {
            "keys": {"type": "array", "items": _ref("KeyguardKeyRecord")},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
    "KeyguardKey": {"type": "object", "properties": {"record": _ref("KeyguardKeyRecord")}},
    "KeyguardRevoked": {"type": "object", "properties": {"revoked": _STRINGS}},
    "KeyguardAuditEvent": {
        "type": "object",
        "properties": {
            "at": {"type": "number"},
            "time": _TIME,
            "action": {"type": "string"},
            "key_id": {"type": "string"},
            "actor": {"type": "string"},
            "details": {"type": "object"},
        },
    },
    "KeyguardAuditList": {
        "type": "object",
        "properties": {"events": {"type": "array", "items": _ref("KeyguardAuditEvent")}},
    },
    "KeyguardCreateKey": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "description": {"type": ["string", "null"], "maxLength": 1000},
            "scopes": _STRINGS,
            "expires_in": _DURATION,
            "expires_at": _TIME,
            "owner": {"type": ["string", "null"]},
            "rate_limit": {"type": ["string", "null"], "examples": ["1000/minute"]},
            "metadata": {"type": "object"},
            "allowed_networks": {**_STRINGS, "examples": [["10.0.0.0/8", "2001:db8::/32"]]},
        },
    },
    "KeyguardUpdateKey": {
        "type": "object",
        "additionalProperties": False,
        "description": "Scopes may only be narrowed; `enabled: false` suspends the key.",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "metadata": {"type": "object"},
            "scopes": _STRINGS,
            "enabled": {"type": "boolean"},
            "reason": {"type": "string", "description": "why it is suspended"},
        },
    },
    "KeyguardRevokeKey": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {"type": "string"}, "cascade": {"type": "boolean"}},
    },
    "KeyguardRotateKey": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"grace_period": _DURATION},
    },
    "KeyguardExpireKey": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"at": _TIME},
    },
    "KeyguardUsage": {
        "type": "object",
        "description": "Requests per UTC day (oldest first, every day of the window), by status "
        "class (disjoint: they add up to the day's total) and by route template.",
        "properties": {
            "usage": {
                "type": "object",
                "properties": {
                    "key_id": {"type": ["string", "null"]},
                    "name": {"type": "string"},
                    "owner": {"type": ["string", "null"]},
                    "total": {"type": "integer"},
                    "last_used_at": _NULL_TIME,
                    "last_client": {"type": ["string", "null"]},
                    "days": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "day": {"type": "string", "format": "date"},
                                "by_status": {
                                    "type": "object",
                                    "properties": {
                                        c: {"type": "integer"}
                                        for c in ("2xx", "3xx", "4xx", "429", "5xx")
                                    },
                                },
                                "by_route": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                                "total": {"type": "integer"},
                            },
                        },
                    },
                },
            }
        },
    },
    "KeyguardManagementProblem": {
        "type": "object",
        "description": "RFC 9457 problem details with keyguard's stable `code`.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "request_id": {"type": "string"},
            "field": {"type": "string", "description": "the offending field or parameter"},
            "key_id": {"type": "string"},
            "required_scopes": _STRINGS,
        },
        "required": ["type", "title", "status", "code"],
    },
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    names = {
        400: "malformed body",
        401: "missing, invalid, expired, revoked or suspended key",
        403: "not allowed: missing scope, outside the key's authority or network",
        404: "no such key",
        409: "the key's state forbids it, or the request was already processed",
        413: "body too large",
        415: "body is not JSON",
        422: "a field is invalid (named in `field`)",
        429: "rate limited",
        503: "the key store is unavailable",
    }
    content = {"application/problem+json": {"schema": _ref("KeyguardManagementProblem")}}
    return {str(s): {"description": names[s], "content": content} for s in statuses}


_AUTH = (401, 403, 429, 503)
_KEY_ID = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9A-Za-z]{12}$"},
}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying with the same value never repeats the change: a retry is "
    "answered 409 `already_processed` naming the key (the plaintext is never shown twice).",
    "schema": {"type": "string", "maxLength": 255},
}
_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
_DAYS = {
    "name": "days",
    "in": "query",
    "description": "how many UTC days, today included (default 30)",
    "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 30},
}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema)}}}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "tags": ["API keys"],
        "summary": summary,
        "security": [{SCHEME_NAME: []}],
        "x-required-scopes": ["keys:manage"],
        "responses": responses,
        **extra,
    }


def openapi_document(prefix: str, *, title: str = "keyguard key management") -> dict[str, Any]:
    """The OpenAPI document of a management API mounted at ``prefix``."""
    base = prefix or ""
    key = f"{base}/{{key_id}}"
    paths: dict[str, Any] = {
        base or "/": {
            "get": _op(
                "List keys within the caller's authority (never secrets)",
                {"200": _json("KeyguardKeyList", "one page"), **_problems(422, *_AUTH)},
                parameters=[
                    _LIMIT,
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    {"name": "owner", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"enum": ["active", "suspended", "expired", "revoked"]},
                    },
                    {"name": "scope", "in": "query", "schema": {"type": "string"}},
                    {"name": "expiring_within", "in": "query", "schema": _DURATION},
                ],
            ),
            "post": _op(
                "Create a key (its plaintext is returned once)",
                {
                    "201": _json("KeyguardCreatedKey", "created; `Location` names it"),
                    **_problems(400, 409, 413, 415, 422, *_AUTH),
                },
                requestBody=_body("KeyguardCreateKey"),
                parameters=[_IDEMPOTENCY],
            ),
        },
        f"{base}/audit": {
            "get": _op(
                "Audit events of the keys within the caller's authority",
                {"200": _json("KeyguardAuditList", "newest first"), **_problems(422, *_AUTH)},
                parameters=[_LIMIT],
            )
        },
        f"{base}/self": {
            "get": {
                **_op(
                    "The calling key's own record (any valid key)",
                    {"200": _json("KeyguardKey", "the record"), **_problems(*_AUTH)},
                ),
                "x-required-scopes": [],
            }
        },
        key: {
            "parameters": [_KEY_ID],
            "get": _op(
                "Show a key", {"200": _json("KeyguardKey", "the record"), **_problems(404, *_AUTH)}
            ),
            "patch": _op(
                "Rename, describe, narrow scopes, suspend (`enabled: false`) or resume",
                {
                    "200": _json("KeyguardKey", "the changed record"),
                    **_problems(400, 404, 409, 413, 415, 422, *_AUTH),
                },
                requestBody=_body("KeyguardUpdateKey"),
            ),
            "delete": _op(
                "Revoke a key (and, by default, every key it created)",
                {
                    "200": _json("KeyguardRevoked", "the ids revoked"),
                    **_problems(400, 404, 409, 415, 422, *_AUTH),
                },
                requestBody=_body("KeyguardRevokeKey", required=False),
                parameters=[
                    {"name": "reason", "in": "query", "schema": {"type": "string"}},
                    {"name": "cascade", "in": "query", "schema": {"type": "boolean"}},
                ],
            ),
        },
        f"{key}/rotate": {
            "parameters": [_KEY_ID],
            "post": _op(
                "Issue a new secret (returned once); the old one works for `grace_period`",
                {
                    "200": _json("KeyguardCreatedKey", "rotated"),
                    **_problems(400, 404, 409, 415, 422, *_AUTH),
                },
                requestBody=_body("KeyguardRotateKey", required=False),
                parameters=[_IDEMPOTENCY],
            ),
        },
        f"{key}/expire": {
            "parameters": [_KEY_ID],
            "post": _op(
                "Make a key expire now (or at `at`, never later than it would)",
                {
                    "200": _json("KeyguardKey", "the changed record"),
                    **_problems(400, 404, 409, 415, 422, *_AUTH),
                },
                requestBody=_body("KeyguardExpireKey", required=False),
            ),
        },
        f"{base}/usage": {
            "get": _op(
                "Requests per day summed over one owner's keys (admin keys only)",
                {"200": _json("KeyguardUsage", "the owner's usage"), **_problems(422, *_AUTH)},
                parameters=[
                    {
                        "name": "owner",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _DAYS,
                ],
            )
        },
        f"{key}/usage": {
            "parameters": [_KEY_ID],
            "get": _op(
                "Requests per day of one key: by status class and route, last use and client",
                {"200": _json("KeyguardUsage", "the key's usage"), **_problems(404, 422, *_AUTH)},
                parameters=[_DAYS],
            ),
        },
        f"{key}/audit": {
            "parameters": [_KEY_ID],
            "get": _op(
                "Audit events of one key",
                {"200": _json("KeyguardAuditList", "newest first"), **_problems(404, *_AUTH)},
                parameters=[_LIMIT],
            ),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {
                SCHEME_NAME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Send `Authorization: UserKey <key>`; the key needs "
                    "`keys:manage` or `admin`.",
                }
            },
        },
    }


def merge_openapi(target: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``extra``'s paths, schemas and security schemes to ``target`` (in place, and
    returned); what ``target`` already defines is kept."""
    paths = target.setdefault("paths", {})
    for path, item in extra.get("paths", {}).items():
        paths.setdefault(path, copy.deepcopy(item))
    components = target.setdefault("components", {})
    for section in ("schemas", "securitySchemes"):
        mine = components.setdefault(section, {})
        for name, value in extra.get("components", {}).get(section, {}).items():
            mine.setdefault(name, copy.deepcopy(value))
    return target
