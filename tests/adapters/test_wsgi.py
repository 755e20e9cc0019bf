"""The WSGI middleware: the shared case table through a bare WSGI app."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyguard.adapters.wsgi import PRINCIPAL_KEY, KeyGuardWSGIMiddleware
from tests.adapters.cases import CASES, Case, check, make_world
from tests.adapters.wsgi_driver import sender


def make_app(calls: list[Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ)
        principal = environ.get(PRINCIPAL_KEY)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"key_id": principal.key_id if principal else None}).encode()]

    return app


@pytest.fixture(scope="module")
def world() -> Any:
    return make_world()


@pytest.mark.parametrize("case", CASES)
def test_case_table(case: Case, world: Any) -> None:
    calls: list[Any] = []
    check(
        case,
        world,
        sender(KeyGuardWSGIMiddleware(make_app(calls), verifier=world.verifier)),
        calls=calls,
    )


def test_comma_joined_header_is_two_headers(world: Any) -> None:
    calls: list[Any] = []
    app = KeyGuardWSGIMiddleware(make_app(calls), verifier=world.verifier)
    joined = world.header("reader") + ", " + world.header("admin")
    reply = sender(app)("GET", "/agents", [("Authorization", joined)])
    assert reply.status == 400
    assert json.loads(reply.body)["code"] == "invalid_request"
    assert calls == []


def test_unicode_path_is_matched_as_text(world: Any) -> None:
    calls: list[Any] = []
    app = KeyGuardWSGIMiddleware(make_app(calls), verifier=world.verifier)
    reply = sender(app)("GET", "/agénts", [("Authorization", world.header("admin"))])
    assert reply.status == 403  # not /agents: unmatched, denied by default
