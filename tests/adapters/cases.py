"""The one table of request cases every adapter must answer identically.

Each adapter's test module builds its framework's app with routes ``GET /agents``,
``POST /agents``, ``GET /health``, ``GET /secret`` (the last one exists in the app but not in
the policy), all answering ``{"key_id": <principal key id or null>}``, wires keyguard with
:data:`POLICY` and a world's verifier, then calls :func:`check` for every case with a
``send(method, path, headers) -> Reply`` function for its transport.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from keyguard.core.hashing import Hasher
from keyguard.core.keys import KeyFormat
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import DEFAULT_RENDERER
from keyguard.core.verifier import Verifier
from keyguard.stores.memory import MemoryStore
from tests.keyfactory import IssuedKey, KeyFactory

POLICY_RULES = {
    "GET /agents": "agents:read",
    "POST /agents": "agents:write",
}
PUBLIC = ("/health",)


def make_policy() -> RoutePolicy:
    return RoutePolicy(POLICY_RULES, public=PUBLIC)


@dataclass
class World:
    """A store full of keys in every state, and the verifier adapters should use."""

    store: MemoryStore
    keys: dict[str, IssuedKey]
    plaintexts: dict[str, str]
    verifier: Verifier

    def header(self, name: str) -> str:
        return "UserKey " + self.plaintexts[name]


def make_world(**verifier_options: Any) -> World:
    store = MemoryStore()
    factory = KeyFactory(store)
    now = time.time()
    keys = {
        "reader": factory.issue("agents:read"),
        "writer": factory.issue("agents:read", "agents:write"),
        "admin": factory.issue("admin"),
        "wildcard": factory.issue("agents:*"),
        "expired": factory.issue("agents:read", expires_at=now - 10),
        "revoked": factory.issue("agents:read", revoked_at=now - 10, revoked_reason="leaked"),
        "rotated": factory.issue("agents:read"),
    }
    plaintexts = {name: k.plaintext for name, k in keys.items()}
    old = keys["rotated"].plaintext
    keys["rotated_new"] = factory.rotate(keys["rotated"], grace_until=now - 1)
    plaintexts["rotated_new"] = keys["rotated_new"].plaintext
    plaintexts["rotated_old"] = old
    fmt = KeyFormat()
    reader = plaintexts["reader"]
    plaintexts["wrong_secret"] = fmt.generate(keys["reader"].key_id).plaintext
    plaintexts["unknown"] = fmt.generate().plaintext
    plaintexts["bad_checksum"] = reader[:-1] + ("A" if reader[-1] != "A" else "B")
    plaintexts["truncated"] = reader[:-3]
    verifier = Verifier(
        store, policy=make_policy(), hasher=Hasher(pepper_from_env=False), **verifier_options
    )
    return World(store, keys, plaintexts, verifier)


HeaderSpec = Callable[[World], list[tuple[str, str]]]


def auth(name: str) -> HeaderSpec:
    return lambda w: [("Authorization", w.header(name))]


def raw(value: str) -> HeaderSpec:
    return lambda w: [("Authorization", value)]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    headers: HeaderSpec
    status: int
    code: str | None = None
    principal: str | None = None  # world key name whose id the app must see
    required: tuple[str, ...] = field(default=())


CASES = [
    pytest.param(Case("GET", "/agents", lambda w: [], 401, "missing_api_key"), id="no-header"),
    pytest.param(
        Case("GET", "/agents", raw("Bearer abc.def"), 401, "missing_api_key"), id="bearer"
    ),
    pytest.param(
        Case("GET", "/agents", raw("Basic dXNlcjpwYXNz"), 401, "missing_api_key"), id="basic"
    ),
    pytest.param(
        Case(
            "GET",
            "/agents",
            lambda w: [("Authorization", "userkey " + w.plaintexts["reader"])],
            200,
            principal="reader",
        ),
        id="lowercase-scheme",
    ),
    pytest.param(Case("GET", "/agents", raw("UserKey"), 401, "missing_api_key"), id="empty-key"),
    pytest.param(
        Case("GET", "/agents", raw("UserKey " + "A" * 2000), 400, "invalid_request"),
        id="over-long",
    ),
    pytest.param(
        Case(
            "GET",
            "/agents",
            lambda w: [("Authorization", "UserKey " + w.plaintexts["reader"][:10] + "\x7f")],
            400,
            "invalid_request",
        ),
        id="control-character",
    ),
    pytest.param(
        Case("GET", "/agents", auth("bad_checksum"), 401, "invalid_api_key_format"),
        id="bad-checksum",
    ),
    pytest.param(
        Case("GET", "/agents", auth("truncated"), 401, "invalid_api_key_format"), id="truncated"
    ),
    pytest.param(Case("GET", "/agents", auth("unknown"), 401, "invalid_api_key"), id="unknown-id"),
    pytest.param(
        Case("GET", "/agents", auth("wrong_secret"), 401, "invalid_api_key"), id="wrong-secret"
    ),
    pytest.param(Case("GET", "/agents", auth("expired"), 401, "expired_api_key"), id="expired"),
    pytest.param(Case("GET", "/agents", auth("revoked"), 401, "revoked_api_key"), id="revoked"),
    pytest.param(
        Case("GET", "/agents", auth("rotated_old"), 401, "invalid_api_key"),
        id="rotated-out-after-grace",
    ),
    pytest.param(
        Case("GET", "/agents", auth("rotated_new"), 200, principal="rotated_new"),
        id="rotated-new-secret",
    ),
    pytest.param(
        Case("GET", "/agents", auth("reader"), 200, principal="reader"), id="reader-reads"
    ),
    pytest.param(
        Case(
            "POST",
            "/agents",
            auth("reader"),
            403,
            "insufficient_scope",
            required=("agents:write",),
        ),
        id="missing-scope",
    ),
    pytest.param(
        Case("POST", "/agents", auth("writer"), 200, principal="writer"), id="writer-writes"
    ),
    pytest.param(Case("POST", "/agents", auth("admin"), 200, principal="admin"), id="admin"),
    pytest.param(
        Case("POST", "/agents", auth("wildcard"), 200, principal="wildcard"), id="wildcard-grant"
    ),
    pytest.param(Case("GET", "/health", lambda w: [], 200), id="public-path"),
    pytest.param(
        Case("GET", "/secret", auth("admin"), 403, "insufficient_scope"),
        id="unmatched-route-denied-by-default",
    ),
    pytest.param(
        Case("GET", "/secret", lambda w: [], 401, "missing_api_key"),
        id="unmatched-route-without-key",
    ),
    pytest.param(
        Case(
            "GET",
            "/agents",
            lambda w: [("Authorization", w.header("reader")), ("Authorization", w.header("admin"))],
            400,
            "invalid_request",
        ),
        id="two-authorization-headers",
    ),
    pytest.param(
        Case(
            "GET",
            "/agents",
            lambda w: [("Authorization", "Bearer x"), ("Authorization", w.header("reader"))],
            400,
            "invalid_request",
        ),
        id="two-headers-other-order",
    ),
]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; duplicates joined with ", "
    body: bytes


Send = Callable[[str, str, list[tuple[str, str]]], Reply]


def check(case: Case, world: World, send: Send, *, calls: list[Any] | None = None) -> None:
    """Send one case and assert the contract. ``calls`` (if given) is the list the app appends
    to when it runs, to prove nothing reached it on a denial."""
    headers = case.headers(world)
    before = len(calls) if calls is not None else 0
    reply = send(case.method, case.path, headers)
    secrets = list(world.plaintexts.values())
    text = reply.body.decode("utf-8", "replace") + json.dumps(reply.headers)
    for s in secrets:
        assert s not in text, "key material echoed in the response"
        assert s.split("_")[-1][:20] not in text, "secret fragment echoed in the response"
    assert reply.status == case.status, (reply.status, reply.body[:300])
    if case.code is None:
        body = json.loads(reply.body)
        expected = world.keys[case.principal].key_id if case.principal else None
        assert body["key_id"] == expected
        if calls is not None:
            assert len(calls) == before + 1
        return
    if calls is not None:
        assert len(calls) == before, "the application ran on a denial"
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers.get("x-request-id")
    problem = json.loads(reply.body)
    assert problem["code"] == case.code
    assert problem["status"] == case.status
    assert problem["request_id"] == reply.headers["x-request-id"]
    if case.status == 401:
        assert reply.headers["www-authenticate"].startswith('UserKey realm="keyguard"')
    if case.required:
        assert problem["required_scopes"] == list(case.required)
        # Never the key's own other scopes.
        assert "agents:read" not in json.dumps(problem.get("required_scopes"))
    if DEFAULT_RENDERER.compat == "platform":  # tests/adapters/conftest.py: error_format
        assert problem["error"] == PLATFORM_ERRORS[case.status]
        assert problem["message"] == PLATFORM_MESSAGES[case.code]
    else:
        assert "error" not in problem
        assert "message" not in problem


#: The platform-compatible preset's fields, as the platform documents them.
PLATFORM_ERRORS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
PLATFORM_MESSAGES = {
    "missing_api_key": "Missing API key",
    "invalid_request": "Invalid request",
    "invalid_api_key_format": "Invalid API key format",
    "invalid_api_key": "Invalid API key",
    "expired_api_key": "API key has expired",
    "revoked_api_key": "API key has been revoked",
    "insufficient_scope": "Insufficient permissions",
}
