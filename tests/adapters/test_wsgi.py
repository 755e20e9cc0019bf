"""The WSGI middleware: the shared case table through a bare WSGI app."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keyguard.adapters.wsgi import PRINCIPAL_KEY, KeyGuardWSGIMiddleware, path_from_environ
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import MemoryRateLimiter
from keyguard.core.verifier import Verifier
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


def _unicode_verifier(world: Any) -> Verifier:
    policy = RoutePolicy({"GET /agénts": "agents:read"}, public=["/café"])
    return Verifier(world.store, policy=policy, hasher=Hasher(pepper_from_env=False))


def test_utf8_path_info_is_decoded_before_matching(world: Any) -> None:
    """WSGI carries the path's UTF-8 bytes as latin-1 text: a rule for /agénts must match
    the request for /agénts, and nothing else."""
    calls: list[Any] = []
    send = sender(KeyGuardWSGIMiddleware(make_app(calls), verifier=_unicode_verifier(world)))
    reply = send("GET", "/agénts", [("Authorization", world.header("reader"))])
    assert (reply.status, json.loads(reply.body)) == (200, {"key_id": world.keys["reader"].key_id})
    assert calls[-1]["PATH_INFO"] == "/agénts".encode().decode("latin-1")  # left as it came
    reply = send("GET", "/café", [])
    assert (reply.status, json.loads(reply.body)) == (200, {"key_id": None})
    assert len(calls) == 2
    reply = send("GET", "/agénts", [("Authorization", world.header("admin"))])
    assert reply.status == 200
    reply = send("GET", "/agénts", [])
    assert json.loads(reply.body)["code"] == "missing_api_key"
    assert len(calls) == 3


def _environ(path: str, **headers: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "REMOTE_ADDR": "127.0.0.1", **headers}


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    started: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc=None: started.append(status)))
    return started[0], json.loads(body)


@pytest.mark.parametrize("path", ["/\xff", "/ag\xe9nts", "/caf\xc3", "/caf\xe9"])
def test_path_info_that_is_not_utf8_is_matched_as_werkzeug_routes_it(world: Any, path: str) -> None:
    """A path whose bytes are not UTF-8 is never an error (no traceback, no 500), and never
    taken for a different path: the bytes that are not UTF-8 become U+FFFD, as Werkzeug
    decodes them, so the latin-1 spelling of /agénts or /café matches neither of them."""
    calls: list[Any] = []
    app = KeyGuardWSGIMiddleware(make_app(calls), verifier=_unicode_verifier(world))
    status, body = _call(app, _environ(path, HTTP_AUTHORIZATION=world.header("admin")))
    assert (status, body["code"]) == ("403 Forbidden", "insufficient_scope")
    assert calls == []


def test_a_path_that_is_not_utf8_cannot_borrow_a_public_path() -> None:
    """The bytes /caf\\xe9 are routed by Werkzeug (Flask) as /caf\\ufffd, to the guarded
    /{name}: the middleware must guard it as that, not let it in as the public /café."""
    world = make_world()
    policy = RoutePolicy({"GET /{name}": "admin"}, public=["/café"])
    verifier = Verifier(world.store, policy=policy, hasher=Hasher(pepper_from_env=False))
    calls: list[Any] = []
    app = KeyGuardWSGIMiddleware(make_app(calls), verifier=verifier)
    status, body = _call(app, _environ("/caf\xe9"))
    assert (status, body["code"]) == ("401 Unauthorized", "missing_api_key")
    assert calls == []
    status, body = _call(app, _environ("/café".encode().decode("latin-1")))
    assert (status, body) == ("200 OK", {"key_id": None})
    status, body = _call(app, _environ("/caf\xe9", HTTP_AUTHORIZATION=world.header("admin")))
    assert (status, body) == ("200 OK", {"key_id": world.keys["admin"].key_id})


def test_path_info_already_decoded_by_the_server_is_kept() -> None:
    """A server that puts real text (beyond latin-1) in PATH_INFO is taken at its word."""
    assert path_from_environ({"PATH_INFO": "/агенты"}) == "/агенты"
    assert path_from_environ({"PATH_INFO": ""}) == "/"
    assert path_from_environ({}) == "/"


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
