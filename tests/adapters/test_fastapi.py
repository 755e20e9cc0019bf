"""FastAPI: the shared case table with the middleware, with dependencies only, and with both;
HTTPException degradation; the OpenAPI security documentation; Swagger's Authorize flow."""

# No ``from __future__ import annotations`` here: FastAPI resolves string annotations against
# module globals, and these endpoints close over local dependencies in Annotated[...].
import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Security, WebSocket

from keyguard.adapters import fastapi as kg_fastapi
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.adapters.fastapi import (
    DEFAULT_SCHEME_DESCRIPTION,
    KeyGuard,
    KeyGuardHTTPException,
    RequireScopes,
    install_exception_handlers,
    install_openapi,
)
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.scopes import DENY, all_of, any_of
from keyguard.core.verifier import Verifier
from tests.adapters.asgi_driver import call
from tests.adapters.cases import CASES, Case, World, check, make_policy, make_world
from tests.adapters.test_starlette import DENIALS, FIXED_ID, httpx_send

ROUTES = [("GET", "/agents"), ("POST", "/agents"), ("GET", "/health"), ("GET", "/secret")]


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def plain_verifier(world: World) -> Verifier:
    return Verifier(world.store, hasher=Hasher(pepper_from_env=False))


def _endpoint(calls: list[Any], dependency: Any) -> Callable[..., Any]:
    if dependency is None:

        async def plain(request: Request) -> dict[str, Any]:
            calls.append(request.url.path)
            principal = request.scope.get("keyguard")
            return {"key_id": principal.key_id if principal else None}

        return plain

    async def guarded(principal: Annotated[Principal, Depends(dependency)]) -> dict[str, Any]:
        calls.append(principal)
        return {"key_id": principal.key_id}

    return guarded


def build(
    calls: list[Any],
    deps: Mapping[str, Any] | None = None,
    *,
    app_dependencies: list[Any] | None = None,
) -> FastAPI:
    app = FastAPI(dependencies=app_dependencies)
    for method, path in ROUTES:
        dependency = (deps or {}).get(f"{method} {path}")
        app.add_api_route(path, _endpoint(calls, dependency), methods=[method])
    return app


def route_dependencies(guard: KeyGuard) -> dict[str, Any]:
    """The case table's policy spelled as per-route dependencies (no policy object at all):
    /health has none, and /secret — the route the policy does not list — gets ``DENY``, which
    answers like deny-by-default: 401 without a key, 403 for every key (admin included)."""
    return {
        "GET /agents": guard.require("agents:read"),
        "POST /agents": guard.require("agents:write"),
        "GET /secret": guard.require(DENY),
    }


def middleware_only(world: World, calls: list[Any]) -> FastAPI:
    app = build(calls)
    app.add_middleware(KeyGuardMiddleware, verifier=world.verifier)
    return app


def middleware_and_dependencies(world: World, calls: list[Any]) -> FastAPI:
    guard = KeyGuard(verifier=world.verifier)
    app = build(calls, route_dependencies(guard))
    guard.install(app, middleware=True)
    return app


def dependencies_only(world: World, calls: list[Any]) -> FastAPI:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = build(calls, route_dependencies(guard))
    guard.install(app)
    return app


def policy_dependency(world: World, calls: list[Any]) -> FastAPI:
    # The route policy, enforced by one app-wide dependency instead of the middleware.
    guard = KeyGuard(verifier=world.verifier)
    app = build(calls, app_dependencies=[Depends(guard.enforce_policy())])
    guard.install(app)
    return app


VARIANTS = [
    pytest.param(middleware_only, id="middleware"),
    pytest.param(middleware_and_dependencies, id="middleware+dependencies"),
    pytest.param(dependencies_only, id="dependencies"),
    pytest.param(policy_dependency, id="policy-dependency"),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES)
def test_case_table(case: Case, variant: Any, world: World) -> None:
    calls: list[Any] = []
    check(case, world, httpx_send(variant(world, calls)), calls=calls)


@pytest.mark.parametrize("variant", [dependencies_only, policy_dependency])
@pytest.mark.parametrize("case", DENIALS)
def test_dependency_denials_are_byte_identical_to_the_middleware(
    case: Case, variant: Any, world: World
) -> None:
    headers = [*case.headers(world), ("X-Request-ID", FIXED_ID)]
    pure = asyncio.run(
        call(KeyGuardMiddleware(_never, verifier=world.verifier), case.method, case.path, headers)
    )
    reply = httpx_send(variant(world, []))(case.method, case.path, headers)
    assert (reply.status, reply.body) == (pure.status, pure.body)
    assert reply.headers == pure.headers


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the application must not run on a denial")


# -- with and without the middleware -------------------------------------------------------------
class CountingVerifier(Verifier):
    calls = 0

    async def averify(self, *args: Any, **kwargs: Any) -> Decision:
        type(self).calls += 1
        return await super().averify(*args, **kwargs)


def test_dependency_reuses_the_middleware_principal(world: World) -> None:
    verifier = CountingVerifier(
        world.store, policy=make_policy(), hasher=Hasher(pepper_from_env=False)
    )
    guard = KeyGuard(verifier=verifier)
    calls: list[Any] = []
    app = build(calls, route_dependencies(guard))
    guard.install(app, middleware=True)
    CountingVerifier.calls = 0
    reply = httpx_send(app)("GET", "/agents", [("Authorization", world.header("reader"))])
    assert reply.status == 200
    assert CountingVerifier.calls == 1  # the middleware's; the dependency only checked scopes


def test_one_dependency_returns_the_same_principal_with_and_without_middleware(
    world: World,
) -> None:
    dependency = RequireScopes("agents:read", verifier=world.verifier)
    seen: list[Principal] = []

    def make(with_middleware: bool) -> FastAPI:
        app = FastAPI()

        @app.get("/agents")
        async def agents(principal: Annotated[Principal, Depends(dependency)]) -> dict[str, str]:
            seen.append(principal)
            return {"key_id": principal.key_id}

        if with_middleware:
            app.add_middleware(KeyGuardMiddleware, verifier=world.verifier)
        install_exception_handlers(app)
        return app

    header = [("Authorization", world.header("writer"))]
    assert httpx_send(make(True))("GET", "/agents", header).status == 200
    assert httpx_send(make(False))("GET", "/agents", header).status == 200
    assert seen[0].key_id == seen[1].key_id == world.keys["writer"].key_id
    assert seen[0] is seen[1]  # the verifier's cached principal, whichever path found it


def _spent(reply: Any) -> int:
    """Units of the burst window a reply says are left (its RateLimit field's first r=)."""
    return int(reply.headers["ratelimit"].split(";r=")[1].split(";")[0])


@pytest.mark.parametrize(
    "before", ["middleware, not Starlette-compatible", "Starlette backend", "a user layer"]
)
def test_dependency_after_another_keyguard_layer_takes_no_second_unit(
    world: World, before: str
) -> None:
    """A layer in front already verified the key and charged the request to its limits; the
    dependency, on every request (the first and those a verified key makes), only checks its
    own scope against that principal: one unit per request, not two."""
    from starlette.middleware.authentication import AuthenticationMiddleware

    from keyguard.adapters.starlette import KeyGuardBackend

    verifier = Verifier(world.store, hasher=Hasher(pepper_from_env=False))
    guard = KeyGuard(verifier=verifier)
    app = FastAPI()

    @app.get("/agents")
    async def agents(principal: Annotated[Principal, Depends(guard.require("agents:read"))]) -> str:
        return principal.key_id

    if before.startswith("middleware"):
        app.add_middleware(KeyGuardMiddleware, verifier=verifier, starlette_compat=False)
    elif before == "Starlette backend":
        app.add_middleware(AuthenticationMiddleware, backend=KeyGuardBackend(verifier=verifier))
    else:
        # An application's own layer that verifies with keyguard and sets only scope["user"].
        inner = app.build_middleware_stack

        def build() -> Any:
            stack = inner()

            async def user_layer(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    headers = dict(scope["headers"])
                    decision = verifier.verify(headers.get(b"authorization"), "GET", "/agents")
                    assert decision.allowed
                    scope["user"] = decision.principal
                await stack(scope, receive, send)

            return user_layer

        app.build_middleware_stack = build  # type: ignore[method-assign]
    guard.install(app)
    send = httpx_send(app)
    header = [("Authorization", world.header("reader"))]
    left = []
    for _ in range(3):
        reply = send("GET", "/agents", header)
        assert reply.status == 200
        left.append(_spent(reply) if "ratelimit" in reply.headers else None)
    if before.startswith("middleware"):
        assert left[0] is not None
        assert left == [left[0], left[0] - 1, left[0] - 2]
    else:
        # No rate-limit headers from that layer; the limiter's count says how many units went.
        assert verifier.limiter is not None
        peek = verifier.limiter.peek(world.keys["reader"].key_id, verifier.rate_limits)
        assert peek.windows[0].remaining == peek.windows[0].limit - 3


class HeaderVerifier(Verifier):
    """Stands in for a rate-limited verifier: allowed decisions carry response headers."""

    async def averify(self, *args: Any, **kwargs: Any) -> Decision:
        decision = await super().averify(*args, **kwargs)
        if not decision.allowed:
            return decision
        return Decision(
            True, decision.principal, extra_headers=(("RateLimit", "limit=100, remaining=99"),)
        )


def test_allowed_decision_headers_reach_the_response(world: World) -> None:
    verifier = HeaderVerifier(world.store, hasher=Hasher(pepper_from_env=False))
    guard = KeyGuard(verifier=verifier)
    app = build([], route_dependencies(guard))
    guard.install(app)
    reply = httpx_send(app)("GET", "/agents", [("Authorization", world.header("reader"))])
    assert reply.status == 200
    assert reply.headers["ratelimit"] == "limit=100, remaining=99"


def test_request_user_is_set_by_a_dependency(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = FastAPI()

    @app.get("/me", dependencies=[Depends(guard.authenticated)])
    async def me(request: Request) -> dict[str, Any]:
        return {
            "display_name": request.user.display_name,
            "identity": request.user.identity,
            "can_read": "agents:read" in request.auth.scopes,
        }

    guard.install(app)
    reply = httpx_send(app)("GET", "/me", [("Authorization", world.header("wildcard"))])
    assert reply.status == 200
    assert json.loads(reply.body) == {
        "display_name": "test key",
        "identity": world.keys["wildcard"].key_id,
        "can_read": True,
    }


@pytest.mark.parametrize("dependency", ["require", "authenticated"])
def test_a_dependency_hands_each_key_one_read_only_credentials(
    dependency: str, world: World
) -> None:
    """``request.auth`` is made once per cached principal, on the dependencies' fast path as
    on their full one (the first request of a key), so later requests share it."""
    guard = KeyGuard(verifier=plain_verifier(world))
    app = FastAPI()
    seen: list[Any] = []
    depends = guard.require("agents:read") if dependency == "require" else guard.authenticated

    @app.get("/me", dependencies=[Depends(depends)])
    async def me(request: Request) -> dict[str, Any]:
        seen.append((request.auth, request.user))
        return {}

    guard.install(app)
    send = httpx_send(app)
    for name in ("reader", "reader", "reader"):
        assert send("GET", "/me", [("Authorization", world.header(name))]).status == 200
    (first, user), (second, _), (third, _) = seen
    assert first is second is third
    assert first.principal is user
    assert "agents:read" in first.scopes
    with pytest.raises(AttributeError, match="read-only"):
        first.principal = None


def test_standalone_dependency_uses_the_installed_guard(world: World) -> None:
    app = FastAPI()

    @app.get("/agents")
    async def agents(principal: Annotated[Principal, Depends(RequireScopes("agents:read"))]) -> str:
        return principal.key_id

    KeyGuard(verifier=plain_verifier(world)).install(app)
    send = httpx_send(app)
    assert send("GET", "/agents", [("Authorization", world.header("reader"))]).status == 200
    assert send("GET", "/agents", []).status == 401


def test_standalone_dependency_on_a_public_route_uses_the_middleware_verifier(
    world: World,
) -> None:
    # /health is public in the middleware's policy, so the middleware never looked at the key;
    # the dependency verifies it with the middleware's own verifier.
    app = FastAPI()

    @app.get("/health")
    async def health(principal: Annotated[Principal, Depends(RequireScopes("agents:read"))]) -> str:
        return principal.key_id

    app.add_middleware(KeyGuardMiddleware, verifier=world.verifier)
    install_exception_handlers(app)
    send = httpx_send(app)
    ok = send("GET", "/health", [("Authorization", world.header("reader"))])
    assert ok.status == 200
    assert json.loads(ok.body) == world.keys["reader"].key_id
    refused = send("GET", "/health", [])
    assert refused.status == 401
    assert json.loads(refused.body)["code"] == "missing_api_key"


def test_standalone_dependency_without_any_verifier_fails_closed() -> None:
    app = FastAPI()

    @app.get("/agents")
    async def agents(principal: Annotated[Principal, Depends(RequireScopes("agents:read"))]) -> str:
        raise AssertionError("unreachable")

    with pytest.raises(ConfigurationError, match="no keyguard verifier"):
        httpx_send(app)("GET", "/agents", [("Authorization", "UserKey kg_x")])


def test_security_scopes_are_required_too(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = FastAPI()

    @app.post("/agents")
    async def create(
        principal: Annotated[Principal, Security(guard.authenticated, scopes=["agents:write"])],
    ) -> str:
        return principal.key_id

    guard.install(app)
    send = httpx_send(app)
    refused = send("POST", "/agents", [("Authorization", world.header("reader"))])
    assert refused.status == 403
    # Again, now that the key is known (the verifier's fast path): still the scopes Security
    # adds, not only the dependency's own.
    again = send("POST", "/agents", [("Authorization", world.header("reader"))])
    assert again.status == 403
    assert json.loads(again.body)["required_scopes"] == ["agents:write"]
    assert json.loads(refused.body)["required_scopes"] == ["agents:write"]
    assert "authenticated" not in json.loads(refused.body)["detail"]
    assert send("POST", "/agents", [("Authorization", world.header("writer"))]).status == 200
    operation = app.openapi()["paths"]["/agents"]["post"]
    assert operation["security"] == [{"UserKey": ["agents:write"]}]
    assert operation["x-required-scopes"] == ["agents:write"]


def test_any_of_dependency(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = FastAPI()

    @app.get("/board")
    async def board(
        principal: Annotated[
            Principal, Depends(guard.require(any_of("tasks:read", "agents:read")))
        ],
    ) -> str:
        return principal.key_id

    guard.install(app)
    send = httpx_send(app)
    assert send("GET", "/board", [("Authorization", world.header("reader"))]).status == 200
    operation = app.openapi()["paths"]["/board"]["get"]
    # OpenAPI: entries of ``security`` are alternatives, scopes within one entry are all needed.
    assert operation["security"] == [{"UserKey": ["tasks:read"]}, {"UserKey": ["agents:read"]}]
    assert operation["x-scope-requirement"] == "any_of(tasks:read, agents:read)"


def test_websocket_dependency_denial_closes_with_policy_violation(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket, principal: Annotated[Principal, Depends(guard.require("agents:read"))]
    ) -> None:
        await websocket.accept()
        await websocket.send_text(principal.key_id)
        await websocket.close()

    denied = asyncio.run(_websocket(app, []))
    assert denied == [{"type": "websocket.close", "code": 1008, "reason": "missing_api_key"}]
    accepted = asyncio.run(_websocket(app, [(b"authorization", world.header("reader").encode())]))
    assert [m["type"] for m in accepted] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert accepted[1]["text"] == world.keys["reader"].key_id


async def _websocket(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    # A raw ASGI WebSocket session (Starlette's TestClient now warns when used with httpx).
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
    }
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


# -- graceful degradation without keyguard's exception handler -----------------------------------
def test_http_exception_carries_status_and_headers_without_the_handler(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = build([], route_dependencies(guard))  # note: guard.install(app) is NOT called
    send = httpx_send(app)

    missing = send("GET", "/agents", [("X-Request-ID", "abc-1")])
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'UserKey realm="keyguard"'
    assert missing.headers["cache-control"] == "no-store"
    assert missing.headers["x-request-id"] == "abc-1"
    assert missing.headers["content-type"] == "application/json"  # FastAPI's own body
    assert "requires an API key" in json.loads(missing.body)["detail"]

    scope = send("POST", "/agents", [("Authorization", world.header("reader"))])
    assert scope.status == 403
    assert 'scope="agents:write"' in scope.headers["www-authenticate"]


def test_http_exception_exposes_the_decision(world: World) -> None:
    caught: list[KeyGuardHTTPException] = []
    guard = KeyGuard(verifier=plain_verifier(world))
    app = build([], route_dependencies(guard))

    @app.exception_handler(KeyGuardHTTPException)
    async def handler(request: Request, exc: KeyGuardHTTPException) -> Any:
        caught.append(exc)
        return await kg_fastapi.keyguard_exception_handler(request, exc)

    reply = httpx_send(app)("GET", "/agents", [("Authorization", world.header("expired"))])
    assert reply.status == 401
    assert caught[0].decision.code == "expired_api_key"
    assert caught[0].status_code == 401
    assert world.plaintexts["expired"] not in repr(caught[0].detail)


# -- configuration errors ------------------------------------------------------------------------
def test_misuse_is_refused(world: World) -> None:
    with pytest.raises(ConfigurationError):
        RequireScopes()
    with pytest.raises(ConfigurationError):
        RequireScopes(
            "agents:read", guard=KeyGuard(verifier=world.verifier), verifier=world.verifier
        )
    with pytest.raises(ConfigurationError):
        KeyGuard(verifier=plain_verifier(world)).enforce_policy()
    with pytest.raises(ValueError, match="wildcard"):
        RequireScopes("agents:*")


# -- OpenAPI -------------------------------------------------------------------------------------
def dependency_app(world: World) -> FastAPI:
    guard = KeyGuard(verifier=plain_verifier(world))
    app = build([], route_dependencies(guard))
    guard.install(app)
    return app


def test_openapi_declares_the_userkey_scheme(world: World) -> None:
    schema = dependency_app(world).openapi()
    assert schema["components"]["securitySchemes"]["UserKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": DEFAULT_SCHEME_DESCRIPTION,
    }
    assert DEFAULT_SCHEME_DESCRIPTION.startswith("Send `Authorization: UserKey <key>`")


def test_openapi_lists_each_operations_scopes(world: World) -> None:
    paths = dependency_app(world).openapi()["paths"]
    get, post = paths["/agents"]["get"], paths["/agents"]["post"]
    assert get["security"] == [{"UserKey": ["agents:read"]}]
    assert get["x-required-scopes"] == ["agents:read"]
    assert "`agents:read`" in get["description"]
    assert post["security"] == [{"UserKey": ["agents:write"]}]
    assert post["x-required-scopes"] == ["agents:write"]
    assert "security" not in paths["/health"]["get"]
    assert "x-required-scopes" not in paths["/health"]["get"]
    assert paths["/secret"]["get"]["x-scope-requirement"] == "deny"
    problem = get["responses"]["401"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/KeyguardProblem"}


def test_openapi_scheme_is_native_even_without_install(world: World) -> None:
    # The dependency is itself the UserKey security scheme: FastAPI documents the scheme (and
    # the scopes given to Security()) on its own; install() adds each requirement's scopes,
    # the extensions, any_of alternatives and policy-derived entries. (The dependency takes no
    # nested Security() parameter: that would be a second dependency to solve per request.)
    guard = KeyGuard(verifier=plain_verifier(world))
    app = build([], route_dependencies(guard))

    @app.post("/tasks")
    async def create(
        principal: Annotated[Principal, Security(guard.authenticated, scopes=["tasks:write"])],
    ) -> str:
        return principal.key_id

    schema = app.openapi()
    paths = schema["paths"]
    assert paths["/agents"]["get"]["security"] == [{"UserKey": []}]
    assert paths["/tasks"]["post"]["security"] == [{"UserKey": ["tasks:write"]}]
    assert "security" not in paths["/health"]["get"]
    assert schema["components"]["securitySchemes"]["UserKey"]["name"] == "Authorization"
    guard.install(app)
    app.openapi_schema = None
    assert app.openapi()["paths"]["/agents"]["get"]["security"] == [{"UserKey": ["agents:read"]}]


def test_dependencies_solve_no_nested_dependency(world: World) -> None:
    # What FastAPI solves per request for a keyguard dependency: the dependency alone (its
    # parameters are the request, the security scopes and the sub-response).
    guard = KeyGuard(verifier=plain_verifier(world))
    deps = route_dependencies(guard)
    app = build([], deps)
    route = next(r for r in app.routes if getattr(r, "path", None) == "/agents")
    (sub,) = route.dependant.dependencies
    assert sub.call is deps["GET /agents"]
    assert sub.dependencies == []
    assert sub.http_connection_param_name == "request"
    assert sub.response_param_name == "response"


def test_openapi_from_the_middleware_policy(world: World) -> None:
    app = FastAPI()
    for method, path in [*ROUTES, ("POST", "/tasks/{task_id}/execute")]:
        app.add_api_route(path, _endpoint([], None), methods=[method])
    policy = RoutePolicy(
        {
            "GET /agents": "agents:read",
            "POST /agents": all_of("agents:read", "agents:write"),
            "POST /tasks/{task_id}/execute": "tasks:execute",
        },
        public=["/health"],
    )
    app.add_middleware(KeyGuardMiddleware, verifier=Verifier(world.store, policy=policy))
    install_openapi(app)  # the policy is read from the middleware
    paths = app.openapi()["paths"]
    assert paths["/agents"]["get"]["security"] == [{"UserKey": ["agents:read"]}]
    assert paths["/agents"]["post"]["security"] == [{"UserKey": ["agents:read", "agents:write"]}]
    assert paths["/tasks/{task_id}/execute"]["post"]["x-required-scopes"] == ["tasks:execute"]
    assert paths["/health"]["get"]["security"] == []  # public: explicitly no security
    assert paths["/secret"]["get"]["x-scope-requirement"] == "deny"  # unlisted: denied
    served = httpx_send(app)("GET", "/openapi.json", [])
    assert served.status == 401  # the docs are behind the policy too (deny by default)


def test_openapi_explicit_policy_and_served_document(world: World) -> None:
    app = FastAPI()
    app.add_api_route("/agents", _endpoint([], None), methods=["GET"])
    policy = RoutePolicy(
        {"GET /agents": "agents:read"}, public=["/openapi.json", "/docs", "/health"]
    )
    app.add_middleware(KeyGuardMiddleware, verifier=Verifier(world.store, policy=policy))
    install_openapi(app, policy=policy)
    served = httpx_send(app)("GET", "/openapi.json", [])
    assert served.status == 200
    document = json.loads(served.body)
    assert document["paths"]["/agents"]["get"]["security"] == [{"UserKey": ["agents:read"]}]
    assert "UserKey" in document["components"]["securitySchemes"]


@pytest.mark.parametrize(
    "variant", [middleware_only, dependencies_only, middleware_and_dependencies]
)
def test_swagger_authorize_flow_is_accepted(variant: Any, world: World) -> None:
    """Swagger UI sends an apiKey-in-header value verbatim under the scheme's header name, so
    a user who pastes ``UserKey kg_…`` into *Authorize* produces exactly this request."""
    app = variant(world, [])
    install_openapi(app, policy=make_policy())
    scheme = app.openapi()["components"]["securitySchemes"]["UserKey"]
    assert (scheme["type"], scheme["in"]) == ("apiKey", "header")
    pasted = "UserKey " + world.plaintexts["reader"]
    reply = httpx_send(app)("GET", "/agents", [(scheme["name"], pasted)])
    assert reply.status == 200
    assert json.loads(reply.body)["key_id"] == world.keys["reader"].key_id


def test_openapi_follows_included_routers_and_late_routes(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    router = APIRouter(dependencies=[Depends(guard.require("tasks:read"))])

    @router.post("/tasks/{task_id}/execute")
    async def execute(
        task_id: str, principal: Annotated[Principal, Depends(guard.require("tasks:execute"))]
    ) -> str:
        return principal.key_id

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    guard.install(app)
    operation = app.openapi()["paths"]["/v1/tasks/{task_id}/execute"]["post"]
    assert operation["security"] == [{"UserKey": ["tasks:read", "tasks:execute"]}]
    assert operation["x-scope-requirement"] == "all_of(tasks:read, tasks:execute)"

    @app.get("/late")
    async def late(principal: Annotated[Principal, Depends(guard.require("agents:read"))]) -> str:
        return principal.key_id

    schema = app.openapi()  # FastAPI regenerates after a route change; annotated again
    assert schema["paths"]["/late"]["get"]["x-required-scopes"] == ["agents:read"]


def test_openapi_hook_is_replaced_not_stacked(world: World) -> None:
    app = dependency_app(world)
    install_openapi(app)
    install_openapi(app)
    description = app.openapi()["paths"]["/agents"]["get"]["description"]
    assert description.count("Requires an API key") == 1


def test_openapi_security_without_guard_lists_nothing_for_unguarded_apps() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, str]:
        return {}

    install_openapi(app)
    schema = app.openapi()
    assert "security" not in schema["paths"]["/x"]["get"]
    assert "securitySchemes" not in schema.get("components", {})


def test_guard_repr_has_no_secrets(world: World) -> None:
    guard = KeyGuard(verifier=plain_verifier(world))
    assert "KeyGuard(" in repr(guard)
    assert repr(guard.require("agents:read")) == "RequireScopes(agents:read)"
