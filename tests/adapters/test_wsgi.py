"""The WSGI middleware: the shared case table through a bare WSGI app."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyguard.adapters.wsgi import PRINCIPAL_KEY, KeyGuardWSGIMiddleware
from keyguard.core.ratelimit import MemoryRateLimiter
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
    assert json.loads(reply.body)["code"] == "insufficient_scope"
    assert calls == []


RATE_LIMIT_HEADERS = ("ratelimit", "ratelimit-policy", "retry-after", "x-ratelimit-limit")


def test_public_path_sends_no_rate_limit_headers_and_charges_nothing() -> None:
    now = [1_800_000_000.0]
    world = make_world(
        limiter=MemoryRateLimiter(clock=lambda: now[0]),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    calls: list[Any] = []
    send = sender(KeyGuardWSGIMiddleware(make_app(calls), verifier=world.verifier))
    auth = [("Authorization", world.header("reader"))]
    first = send("GET", "/agents", auth)
    assert first.headers["x-ratelimit-remaining"] == "19"  # the headers exist on this stack
    for headers in ([], auth):
        for _ in range(25):  # more than the burst: a public path is never refused
            reply = send("GET", "/health", headers)
            assert reply.status == 200
            assert json.loads(reply.body) == {"key_id": None}
            assert not any(h in reply.headers for h in RATE_LIMIT_HEADERS), reply.headers
    assert len(calls) == 51
    # Nothing was charged to the key for those requests.
    assert send("GET", "/agents", auth).headers["x-ratelimit-remaining"] == "18"
