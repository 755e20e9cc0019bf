"""Starlette: the shared case table through KeyGuardMiddleware and through Starlette's own
AuthenticationMiddleware + KeyGuardBackend; ``requires`` interop; the ``requires_scopes``
decorator."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError, requires
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyguard.adapters import asgi
from keyguard.adapters.starlette import (
    KeyGuardAuthCredentials,
    KeyGuardAuthenticationError,
    KeyGuardBackend,
    KeyGuardMiddleware,
    keyguard_on_error,
    problem_http_exception,
    requires_scopes,
)
from keyguard.core.decision import Principal
from keyguard.core.hashing import Hasher
from keyguard.core.scopes import any_of
from keyguard.core.verifier import Verifier
from tests.adapters.asgi_driver import call
from tests.adapters.cases import CASES, Case, Reply, Send, World, check, make_world

FIXED_ID = "req-fixed-1"


def httpx_send(app: Any) -> Send:
    """A case-table transport over httpx's ASGITransport.

    It hands header bytes to the app as given: duplicate ``Authorization`` fields and a DEL
    character arrive untouched (the table's ``two-authorization-headers`` and
    ``control-character`` cases prove it), so no case needs the raw ``asgi_driver`` fallback.
    """

    def send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
        async def go() -> Reply:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                r = await c.request(method, path, headers=headers)
            return Reply(r.status_code, dict(r.headers.items()), r.content)

        return asyncio.run(go())

    return send


def make_app(calls: list[Any], middleware: list[Middleware]) -> Starlette:
    async def endpoint(request: Request) -> Response:
        calls.append(request.url.path)
        user = request.user  # Principal for a key, Starlette's anonymous user otherwise
        return JSONResponse({"key_id": user.key_id if isinstance(user, Principal) else None})

    routes = [
        Route("/agents", endpoint, methods=["GET", "POST"]),
        Route("/health", endpoint),
        Route("/secret", endpoint),
    ]
    return Starlette(routes=routes, middleware=middleware)


def with_middleware(world: World, calls: list[Any]) -> Starlette:
    return make_app(calls, [Middleware(KeyGuardMiddleware, verifier=world.verifier)])


def with_backend(world: World, calls: list[Any]) -> Starlette:
    backend = KeyGuardBackend(verifier=world.verifier)
    mw = Middleware(AuthenticationMiddleware, backend=backend, on_error=keyguard_on_error)
    return make_app(calls, [mw])


VARIANTS = [
    pytest.param(with_middleware, id="middleware"),
    pytest.param(with_backend, id="auth-backend"),
]


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.mark.parametrize("build", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_case_table(case: Case, build: Any, world: World) -> None:
    calls: list[Any] = []
    check(case, world, httpx_send(build(world, calls)), calls=calls)


#: The case-table rows that are denials (pytest.param keeps each row's id).
DENIALS = [c for c in CASES if c.values[0].code is not None]


@pytest.mark.parametrize("case", DENIALS)
def test_backend_denials_are_byte_identical_to_the_middleware(case: Case, world: World) -> None:
    headers = [*case.headers(world), ("X-Request-ID", FIXED_ID)]
    pure = asyncio.run(
        call(
            asgi.KeyGuardMiddleware(_never, verifier=world.verifier),
            case.method,
            case.path,
            headers,
        )
    )
    via_backend = httpx_send(with_backend(world, []))(case.method, case.path, headers)
    assert via_backend.status == pure.status
    assert via_backend.body == pure.body
    assert via_backend.headers == pure.headers


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the application must not run on a denial")


def test_middleware_is_reexported() -> None:
    assert KeyGuardMiddleware is asgi.KeyGuardMiddleware


# -- starlette.authentication.requires interop ---------------------------------------------------
def requires_app(middleware: list[Middleware]) -> Starlette:
    @requires("agents:read")
    async def agents(request: Request) -> Response:
        user = request.user
        return JSONResponse(
            {
                "key_id": user.key_id,
                "display_name": user.display_name,
                "is_authenticated": user.is_authenticated,
                "scopes": list(request.auth.scopes),
            }
        )

    @requires(["tasks:read"])
    async def tasks(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/agents", agents), Route("/tasks", tasks)], middleware=middleware
    )


def auth_only_middleware(world: World) -> list[Middleware]:
    # No policy: every request needs a valid key; scopes are the views' business.
    verifier = Verifier(world.store, hasher=Hasher(pepper_from_env=False))
    return [Middleware(KeyGuardMiddleware, verifier=verifier)]


def auth_only_backend(world: World) -> list[Middleware]:
    verifier = Verifier(world.store, hasher=Hasher(pepper_from_env=False))
    backend = KeyGuardBackend(verifier=verifier)
    return [Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)]


FRONTS = [
    pytest.param(auth_only_middleware, id="middleware"),
    pytest.param(auth_only_backend, id="auth-backend"),
]


@pytest.mark.parametrize("front", FRONTS)
def test_starlette_requires_honours_wildcard_grants(front: Any, world: World) -> None:
    send = httpx_send(requires_app(front(world)))
    reply = send("GET", "/agents", [("Authorization", world.header("wildcard"))])
    assert reply.status == 200
    body = json.loads(reply.body)
    assert body["key_id"] == world.keys["wildcard"].key_id
    assert body["display_name"] == "test key"  # request.user.display_name is the key's name
    assert body["is_authenticated"] is True
    assert body["scopes"] == ["agents:*"]
    # agents:* does not reach tasks:read; Starlette's own 403.
    assert send("GET", "/tasks", [("Authorization", world.header("wildcard"))]).status == 403
    # admin satisfies everything.
    assert send("GET", "/tasks", [("Authorization", world.header("admin"))]).status == 200


def test_backend_credentials_are_authcredentials(world: World) -> None:
    seen: list[Any] = []

    async def view(request: Request) -> Response:
        seen.append((request.auth, request.user, request.scope.get("keyguard")))
        return JSONResponse({})

    app = Starlette(routes=[Route("/x", view)], middleware=auth_only_backend(world))
    assert httpx_send(app)("GET", "/x", [("Authorization", world.header("writer"))]).status == 200
    creds, user, principal = seen[0]
    assert isinstance(creds, KeyGuardAuthCredentials)
    assert user is principal
    assert creds.principal is principal
    assert "agents:write" in creds.scopes
    assert "tasks:read" not in creds.scopes


def test_middleware_credentials_are_one_read_only_object_per_key(world: World) -> None:
    """``scope["auth"]`` is made once per cached principal, not per request (the first
    request takes the verifier's full path, the later ones its fast path: both hand over the
    same object), so it must be read-only: a view that changed it would change every later
    request of the key."""
    seen: list[Any] = []

    async def view(request: Request) -> Response:
        seen.append((request.auth, request.user))
        return JSONResponse({})

    app = Starlette(routes=[Route("/x", view)], middleware=auth_only_middleware(world))
    send = httpx_send(app)
    for name in ("writer", "writer", "writer", "wildcard"):
        assert send("GET", "/x", [("Authorization", world.header(name))]).status == 200
    (first, user), (second, _), (third, _), (other, other_user) = seen
    assert first is second is third
    assert first.principal is user
    assert other is not first
    assert other.principal is other_user
    assert "agents:write" in first.scopes
    assert "tasks:read" not in first.scopes
    assert "agents:read" in other.scopes  # agents:*
    with pytest.raises(AttributeError, match="read-only"):
        first.principal = other_user
    with pytest.raises(AttributeError, match="read-only"):
        del first.principal
    assert first.principal is user


@pytest.mark.parametrize(
    "duplicate",
    [
        pytest.param(copy.copy, id="copy"),
        pytest.param(copy.deepcopy, id="deepcopy"),
        pytest.param(lambda x: pickle.loads(pickle.dumps(x)), id="pickle"),  # noqa: S301
    ],
)
def test_a_principal_and_its_kept_credentials_copy_and_pickle(duplicate: Any, world: World) -> None:
    """Keeping the credentials on the principal must not cost what worked before: a copy or
    a pickle of ``request.user`` (a cache, a task queue) carries the principal's value and no
    view of the original; ``request.auth`` copies and pickles as well."""
    seen: list[Any] = []

    async def view(request: Request) -> Response:
        seen.append((request.auth, request.user))
        return JSONResponse({})

    app = Starlette(routes=[Route("/x", view)], middleware=auth_only_middleware(world))
    assert httpx_send(app)("GET", "/x", [("Authorization", world.header("writer"))]).status == 200
    auth, user = seen[0]
    assert user._view is auth
    twin = duplicate(user)
    assert (twin.key_id, twin.name, twin.owner) == (user.key_id, user.name, user.owner)
    assert twin.record == user.record
    assert twin.scopes == user.scopes
    assert twin._view is None  # made afresh for the copy, if an adapter ever asks
    assert asgi.credentials(twin).principal is twin
    again = duplicate(auth)
    assert type(again) is type(auth)
    assert again.principal.key_id == user.key_id
    assert "agents:write" in again.scopes


def test_backend_without_policy_lets_keyless_requests_through_as_anonymous(world: World) -> None:
    seen: list[Any] = []

    async def view(request: Request) -> Response:
        seen.append(request.user)
        return JSONResponse({})

    app = Starlette(routes=[Route("/x", view)], middleware=auth_only_backend(world))
    send = httpx_send(app)
    assert send("GET", "/x", []).status == 200
    assert send("GET", "/x", [("Authorization", "Bearer abc")]).status == 200
    assert [u.is_authenticated for u in seen] == [False, False]
    # A UserKey credential that is present but bad is always refused.
    reply = send("GET", "/x", [("Authorization", world.header("revoked"))])
    assert reply.status == 401
    assert json.loads(reply.body)["code"] == "revoked_api_key"
    assert len(seen) == 2


def test_on_error_for_a_foreign_authentication_error_does_not_echo_it(world: World) -> None:
    conn = HTTPConnection({"type": "http", "headers": [(b"x-request-id", b"abc")], "path": "/"})
    response = keyguard_on_error(conn, AuthenticationError("bad key kg_secret_stuff"))
    assert response.status_code == 401
    assert b"kg_secret_stuff" not in response.body
    assert json.loads(response.body)["code"] == "invalid_api_key"
    assert response.headers["x-request-id"] == "abc"
    assert response.headers["www-authenticate"].startswith('UserKey realm="keyguard"')


def test_authentication_error_carries_the_decision(world: World) -> None:
    backend = KeyGuardBackend(verifier=world.verifier)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/agents",
        "headers": [(b"authorization", world.header("reader").encode())],
    }
    with pytest.raises(KeyGuardAuthenticationError) as info:
        asyncio.run(backend.authenticate(HTTPConnection(scope)))
    assert info.value.decision.required == ("agents:write",)
    assert info.value.status_code == 403
    assert world.plaintexts["reader"] not in str(info.value)


# -- requires_scopes -----------------------------------------------------------------------------
def decorated_app(world: World) -> Starlette:
    @requires_scopes(any_of("tasks:read", "agents:read"))
    async def either(request: Request) -> Response:
        return JSONResponse({"key_id": request.user.key_id})

    @requires_scopes("agents:write")
    def write(request: Request) -> Response:  # a sync endpoint
        return JSONResponse({"key_id": request.user.key_id})

    return Starlette(
        routes=[Route("/either", either), Route("/write", write, methods=["POST"])],
        middleware=auth_only_backend(world),
    )


def test_requires_scopes_allows_and_refuses_with_problem_json(world: World) -> None:
    send = httpx_send(decorated_app(world))
    ok = send("GET", "/either", [("Authorization", world.header("reader"))])
    assert ok.status == 200
    assert json.loads(ok.body)["key_id"] == world.keys["reader"].key_id
    assert send("POST", "/write", [("Authorization", world.header("writer"))]).status == 200

    refused = send(
        "POST", "/write", [("Authorization", world.header("reader")), ("X-Request-ID", "r1")]
    )
    assert refused.status == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["x-request-id"] == "r1"
    problem = json.loads(refused.body)
    assert problem["code"] == "insufficient_scope"
    assert problem["required_scopes"] == ["agents:write"]

    # Anonymous (the backend has no policy): 401 with the UserKey challenge.
    anonymous = send("GET", "/either", [])
    assert anonymous.status == 401
    assert json.loads(anonymous.body)["code"] == "missing_api_key"
    assert anonymous.headers["www-authenticate"] == 'UserKey realm="keyguard"'


def test_requires_scopes_needs_a_request_argument() -> None:
    @requires_scopes("agents:read")
    async def not_a_view(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="Request or WebSocket"):
        asyncio.run(not_a_view(1))


@pytest.mark.parametrize("front", FRONTS)
def test_starlette_requires_answers_problem_json_with_the_handler(front: Any, world: World) -> None:
    """Starlette's ``requires`` raises a bare HTTPException(403): with keyguard's handler it
    follows the error contract; without it, it is Starlette's plain text."""
    plain = httpx_send(requires_app(front(world)))
    reply = plain("GET", "/tasks", [("Authorization", world.header("wildcard"))])
    assert (reply.status, reply.headers.get("content-type")) == (403, "text/plain; charset=utf-8")

    app = requires_app(front(world))
    app.add_exception_handler(HTTPException, problem_http_exception)
    send = httpx_send(app)
    reply = send(
        "GET", "/tasks", [("Authorization", world.header("wildcard")), ("X-Request-ID", "r-1")]
    )
    assert reply.status == 403
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-request-id"] == "r-1"
    body = json.loads(reply.body)
    assert body["code"] == "insufficient_scope"
    assert "agents:*" not in reply.body.decode()  # never the key's own scopes
    assert send("GET", "/tasks", [("Authorization", world.header("admin"))]).status == 200
