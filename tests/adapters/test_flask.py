"""The Flask extension: the shared case table with a policy and with decorators only, parity
with the WSGI middleware, principal reuse, rate-limit headers, configuration, the example."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from examples import flask_app
from keyguard.adapters.flask import KeyGuard, current_principal, require_scopes
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.decision import Decision, deny
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.scopes import DENY, any_of
from keyguard.core.verifier import Verifier
from tests.adapters.cases import CASES, Case, Reply, World, check, make_policy, make_world
from tests.adapters.wsgi_driver import sender as wsgi_sender

RATE_HEADERS = (("RateLimit-Policy", '"burst";q=20;w=10'), ("RateLimit", '"burst";r=19;t=10'))


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def plain_verifier(world: World, **options: Any) -> Verifier:
    """The world's keys, no route policy: decorator mode."""
    return Verifier(world.store, hasher=Hasher(pepper_from_env=False), **options)


def make_app(verifier: Verifier, calls: list[Any], *, decorated: bool = False) -> Flask:
    """The table's routes. ``decorated``: scopes come from @require_scopes, and /secret gets
    ``require_scopes(DENY)`` — the decorator spelling of "unlisted routes are denied"."""
    app = Flask(__name__)
    KeyGuard(app, verifier=verifier)

    def answer() -> dict[str, Any]:
        principal = current_principal()
        calls.append(principal)
        return {"key_id": principal.key_id if principal else None}

    def guard(*scopes: Any) -> Any:
        return require_scopes(*scopes) if decorated else (lambda view: view)

    @app.get("/agents")
    @guard("agents:read")
    def read_agents() -> dict[str, Any]:
        return answer()

    @app.post("/agents")
    @guard("agents:write")
    def write_agents() -> dict[str, Any]:
        return answer()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return answer()

    @app.get("/secret")
    @guard(DENY)
    def secret() -> dict[str, Any]:
        return answer()

    return app


def client_sender(app: Flask) -> Any:
    client = app.test_client()

    def send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
        # Werkzeug's test client joins repeated headers into one comma-separated
        # HTTP_AUTHORIZATION, as WSGI servers do (test_test_client_joins_repeated_headers).
        response = client.open(path, method=method, headers=headers)
        names = [k.lower() for k, _ in response.headers]
        assert len(names) == len(set(names)), f"duplicate header fields: {names}"
        return Reply(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.get_data(),
        )

    return send


@pytest.mark.parametrize("case", CASES)
def test_case_table_with_policy(case: Case, world: World) -> None:
    calls: list[Any] = []
    check(case, world, client_sender(make_app(world.verifier, calls)), calls=calls)


@pytest.mark.parametrize("case", CASES)
def test_case_table_with_decorators_only(case: Case, world: World) -> None:
    calls: list[Any] = []
    app = make_app(plain_verifier(world), calls, decorated=True)
    check(case, world, client_sender(app), calls=calls)


@pytest.mark.parametrize("case", CASES)
def test_case_table_through_raw_wsgi(case: Case, world: World) -> None:
    # The same app called as a WSGI server would (tests.adapters.wsgi_driver).
    calls: list[Any] = []
    check(case, world, wsgi_sender(make_app(world.verifier, calls)), calls=calls)


def test_test_client_joins_repeated_headers() -> None:
    environ = EnvironBuilder(
        headers=[("Authorization", "UserKey a"), ("Authorization", "UserKey b")]
    ).get_environ()
    assert environ["HTTP_AUTHORIZATION"] == "UserKey a, UserKey b"


DENIALS = [p for p in CASES if p.values[0].code is not None]  # type: ignore[union-attr]


@pytest.mark.parametrize("case", DENIALS)
def test_denials_identical_to_wsgi_middleware(case: Case, world: World) -> None:
    headers = [*case.headers(world), ("X-Request-ID", "req-123")]
    flask_reply = client_sender(make_app(world.verifier, []))(case.method, case.path, headers)
    wsgi = KeyGuardWSGIMiddleware(lambda environ, start: [], verifier=world.verifier)
    wsgi_reply = wsgi_sender(wsgi)(case.method, case.path, headers)
    assert flask_reply == wsgi_reply


class StubVerifier(Verifier):
    """Adds rate-limit headers to allowed decisions, or answers every request with ``denial``."""

    denial: Decision | None = None

    def verify(self, *args: Any, **kwargs: Any) -> Decision:
        if self.denial is not None:
            return self.denial
        decision = super().verify(*args, **kwargs)
        if decision.allowed and decision.principal is not None:
            return decision._replace(extra_headers=RATE_HEADERS, rate=None)
        return decision

    async def averify(self, *args: Any, **kwargs: Any) -> Decision:
        return self.verify(*args, **kwargs)


def stub_verifier(world: World, policy: RoutePolicy | None = None) -> StubVerifier:
    return StubVerifier(world.store, policy=policy, hasher=Hasher(pepper_from_env=False))


def test_rate_limit_headers_on_success(world: World) -> None:
    app = make_app(stub_verifier(world, world.verifier.policy), [])
    response = app.test_client().get("/agents", headers={"Authorization": world.header("reader")})
    assert response.status_code == 200
    assert response.headers["RateLimit"] == '"burst";r=19;t=10'
    assert response.headers["RateLimit-Policy"] == '"burst";q=20;w=10'


@pytest.mark.parametrize("decorated", [False, True], ids=["policy", "decorator"])
def test_rate_limit_headers_replace_the_views_own_and_appear_once(
    world: World, decorated: bool
) -> None:
    """The headers are added where the response starts (app.wsgi_app): a field of the same
    name the view or an after_request hook set is replaced, case aside; others are kept; a
    second KeyGuard on another app wraps that app alone."""
    policy = world.verifier.policy if not decorated else None
    app = make_app(stub_verifier(world, policy), [], decorated=decorated)

    @app.after_request
    def own(response: Any) -> Any:
        response.headers["ratelimit"] = "the view's own"
        response.headers["X-Other"] = "kept"
        return response

    response = app.test_client().get("/agents", headers={"Authorization": world.header("reader")})
    assert response.status_code == 200
    assert response.headers.getlist("RateLimit") == ['"burst";r=19;t=10']
    assert response.headers.getlist("RateLimit-Policy") == ['"burst";q=20;w=10']
    assert response.headers["X-Other"] == "kept"
    other = make_app(stub_verifier(world, policy), [], decorated=decorated)
    assert type(app.wsgi_app).__name__ == type(other.wsgi_app).__name__ == "_ResponseHeaders"
    assert app.wsgi_app is not other.wsgi_app
    assert app.wsgi_app.app.__self__ is app  # type: ignore[attr-defined]


def test_rate_limited_denial_matches_wsgi(world: World) -> None:
    verifier = stub_verifier(world, world.verifier.policy)
    verifier.denial = deny(
        ErrorCode.RATE_LIMITED, "Too many requests.", retry_after=7, headers=RATE_HEADERS
    )
    calls: list[Any] = []
    headers = [("Authorization", world.header("reader")), ("X-Request-ID", "r-1")]
    reply = client_sender(make_app(verifier, calls))("GET", "/agents", headers)
    assert reply.status == 429
    assert reply.headers["retry-after"] == "7"
    assert reply.headers["ratelimit"] == '"burst";r=19;t=10'
    assert json.loads(reply.body)["code"] == "rate_limited"
    assert calls == []
    wsgi = KeyGuardWSGIMiddleware(lambda environ, start: [], verifier=verifier)
    assert reply == wsgi_sender(wsgi)("GET", "/agents", headers)


class CountingVerifier(Verifier):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verified = 0

    def verify(self, *args: Any, **kwargs: Any) -> Decision:
        self.verified += 1
        return super().verify(*args, **kwargs)


def test_decorator_reuses_the_policy_principal(world: World) -> None:
    verifier = CountingVerifier(
        world.store, policy=world.verifier.policy, hasher=Hasher(pepper_from_env=False)
    )
    app = Flask(__name__)
    KeyGuard(app, verifier=verifier)
    calls: list[Any] = []

    @app.get("/agents")
    @require_scopes("agents:read")
    @require_scopes(any_of("agents:write", "admin"))
    def agents() -> dict[str, Any]:
        calls.append(current_principal())
        return {}

    client = app.test_client()
    assert (
        client.get("/agents", headers={"Authorization": world.header("writer")}).status_code == 200
    )
    assert verifier.verified == 1  # the policy hook; the decorators checked its principal
    reply = client.get("/agents", headers={"Authorization": world.header("reader")})
    assert reply.status_code == 403
    assert reply.json is not None
    assert reply.json["required_scopes"] == ["agents:write", "admin"]
    assert len(calls) == 1


def test_decorator_on_a_public_route_verifies_the_key(world: World) -> None:
    app = Flask(__name__)
    KeyGuard(app, verifier=world.verifier)  # /health is public in the policy

    @app.get("/health")
    @require_scopes("agents:read")
    def health() -> dict[str, Any]:
        principal = current_principal()
        return {"key_id": principal.key_id if principal else None}

    client = app.test_client()
    assert client.get("/health").status_code == 401
    reply = client.get("/health", headers={"Authorization": world.header("reader")})
    assert reply.json == {"key_id": world.keys["reader"].key_id}


def test_async_view_with_decorator(world: World) -> None:
    app = Flask(__name__)
    KeyGuard(app, verifier=plain_verifier(world))

    @app.get("/agents")
    @require_scopes("agents:read")
    async def agents() -> dict[str, Any]:
        principal = current_principal()
        return {"key_id": principal.key_id if principal else None}

    client = app.test_client()
    assert client.get("/agents").status_code == 401
    reply = client.get("/agents", headers={"Authorization": world.header("reader")})
    assert reply.json == {"key_id": world.keys["reader"].key_id}


def test_app_hooks_do_not_run_on_denial(world: World) -> None:
    app = Flask(__name__)
    hooks: list[str] = []
    app.before_request(lambda: hooks.append("app hook"))  # registered before keyguard
    KeyGuard(app, verifier=world.verifier)
    app.add_url_rule("/agents", view_func=dict)
    assert app.test_client().get("/agents").status_code == 401
    assert hooks == []


def test_unknown_route_is_denied_before_routing(world: World) -> None:
    app = make_app(world.verifier, [])
    reply = app.test_client().get("/nope", headers={"Authorization": world.header("admin")})
    assert reply.status_code == 403  # not 404: no route enumeration


# -- configuration ---------------------------------------------------------------------------
def test_config_from_app_config() -> None:
    app = Flask(__name__)
    app.config.update(
        KEYGUARD_STORE_URL="memory://",
        KEYGUARD_POLICY={"GET /agents": "agents:read"},
        KEYGUARD_PUBLIC=["/health"],
        KEYGUARD_CACHE_TTL=0.5,
    )
    guard = KeyGuard(app)
    assert guard.verifier.cache_ttl == 0.5
    assert guard.verifier.policy is not None
    assert guard.verifier.policy.public_paths == ("/health",)
    with app.app_context():
        assert guard.verifier is app.extensions["keyguard"].verifier


def test_init_app_later_and_two_apps(world: World) -> None:
    guard = KeyGuard(verifier=world.verifier)
    first, second = Flask("first"), Flask("second")
    guard.init_app(first)
    guard.init_app(second)
    for app in (first, second):
        app.add_url_rule("/agents", view_func=lambda: {"ok": True})
        assert app.test_client().get("/agents").status_code == 401


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"KEYGUARD_STORE_URL": "nosuch://x"}, "unknown store scheme", id="bad-store"),
        pytest.param({"KEYGUARD_STORE_URL": "not a url"}, "not a URL", id="not-a-url"),
        pytest.param({"KEYGUARD_POLCY": {}}, "KEYGUARD_POLCY", id="typo"),
        pytest.param(
            {"KEYGUARD_STORE_URL": "memory://", "KEYGUARD_POLICY": {"GET agents": "x"}},
            "must be a string starting with '/'",
            id="bad-policy",
        ),
        pytest.param(
            {"KEYGUARD_STORE_URL": "memory://", "KEYGUARD_PUBLIC": ["/health"]},
            "dict KEYGUARD_POLICY",
            id="public-without-policy",
        ),
    ],
)
def test_bad_config_fails_at_init(config: dict[str, Any], message: str) -> None:
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=message):
        KeyGuard(app)


def test_verifier_excludes_building_config(world: World) -> None:
    app = Flask(__name__)
    app.config["KEYGUARD_POLICY"] = {"GET /agents": "agents:read"}
    with pytest.raises(ConfigurationError, match="would be ignored"):
        KeyGuard(app, verifier=world.verifier)
    with pytest.raises(ConfigurationError, match="not both"):
        KeyGuard(verifier=world.verifier, store="memory://")


def test_init_twice_is_an_error(world: World) -> None:
    app = Flask(__name__)
    KeyGuard(app, verifier=world.verifier)
    with pytest.raises(ConfigurationError, match="already"):
        KeyGuard(app, verifier=world.verifier)


def test_decorator_without_extension_is_an_error() -> None:
    app = Flask(__name__)
    app.add_url_rule("/x", view_func=require_scopes("agents:read")(dict))
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(ConfigurationError, match="KeyGuard"):
        app.test_client().get("/x")


# -- the example -------------------------------------------------------------------------------
def test_example_serves() -> None:
    client = flask_app.app.test_client()
    assert client.get("/health").json == {"status": "ok"}
    reply = client.get("/agents")
    assert reply.status_code == 401
    assert reply.json is not None
    assert reply.json["code"] == "missing_api_key"


def test_example_routes_and_scopes(world: World) -> None:
    verifier = Verifier(world.store, policy=flask_app.POLICY, hasher=Hasher(pepper_from_env=False))
    client = flask_app.create_app(verifier).test_client()
    reader = {"Authorization": world.header("reader")}
    admin = {"Authorization": world.header("admin")}
    assert client.get("/agents", headers=reader).status_code == 200
    assert client.post("/agents", headers=reader, json={"name": "x"}).status_code == 403
    assert client.get("/tasks", headers=reader).status_code == 403
    denied = client.post("/tasks/t1/execute", headers=reader)
    assert denied.status_code == 403
    assert denied.json is not None
    assert denied.json["required_scopes"] == ["tasks:execute"]
    done = client.post("/tasks/t1/execute", headers=admin)
    assert done.status_code == 202
    assert done.json is not None
    assert done.json["task"]["by"] == world.keys["admin"].key_id


def test_the_hook_reads_the_request_through_the_public_proxy_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook reads the WSGI environ from the context variable behind Flask's ``request``
    (a fifteenth of the proxy's cost); the public proxy, its fallback on a Flask without that
    variable, answers the same."""
    from keyguard.adapters import flask as kg_flask

    sequence = [
        ("GET", "/agents", "reader"),
        ("GET", "/agents", "reader"),  # the fused path now
        ("POST", "/agents", "reader"),  # its 403
        ("GET", "/agents", "UserKey not-a-key"),
        ("GET", "/health", None),
    ]

    def replies() -> list[tuple[int, Any]]:
        verifier = Verifier(world.store, policy=make_policy(), hasher=Hasher(pepper_from_env=False))
        app = make_app(verifier, [])
        client = app.test_client()
        out = []
        for method, path, key in sequence:
            value = world.header(key) if key in world.plaintexts else key
            headers = {} if key is None else {"Authorization": value}
            response = client.open(path, method=method, headers=headers)
            body = response.get_json()
            out.append((response.status_code, body.get("key_id", body.get("code"))))
        return out

    direct = replies()
    monkeypatch.setattr(kg_flask, "_request_environ", kg_flask._proxied_environ)
    assert replies() == direct
    assert [status for status, _ in direct] == [200, 200, 403, 401, 200]
    assert direct[0][1] == world.keys["reader"].key_id
