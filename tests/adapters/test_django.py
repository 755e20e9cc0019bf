"""The Django middleware and decorator: the shared case table through the sync (WSGI) and
async (ASGI) stacks, with a policy and with decorators only; sync/async detection; settings
(built once, errors at start-up); parity with the WSGI middleware; the example project."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

from keyguard.adapters.django import (
    KeyGuardImproperlyConfigured,
    KeyGuardMiddleware,
    get_config,
    require_scopes,
)
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import ProblemRenderer
from keyguard.core.scopes import DENY
from keyguard.core.verifier import Verifier
from tests.adapters import asgi_driver, wsgi_driver
from tests.adapters.cases import CASES, Case, Reply, World, check, make_world
from tests.adapters.django_settings import configure

configure()

MIDDLEWARE = "keyguard.adapters.django.KeyGuardMiddleware"
RATE_HEADERS = (("RateLimit", '"burst";r=19;t=10'),)


class URLConf:
    """A URLconf as an object: Django's resolver takes a module *or* any object with
    ``urlpatterns`` (as ``include()`` does), so each test builds the views it needs."""

    def __init__(self, *patterns: Any) -> None:
        self.urlpatterns = list(patterns)


def table_urls(calls: list[Any], *, asynchronous: bool = False, decorated: bool = False) -> URLConf:
    """The table's routes, sync or async views. ``decorated``: scopes come from
    @require_scopes and /secret gets ``require_scopes(DENY)`` (the decorator spelling of
    "unlisted routes are denied")."""

    def body(request: HttpRequest) -> JsonResponse:
        calls.append(request)
        principal = getattr(request, "keyguard_principal", None)
        return JsonResponse({"key_id": principal.key_id if principal else None})

    def make(*scopes: Any, method: str | None = None) -> Any:
        def dispatch_sync(request: HttpRequest) -> HttpResponse:
            return body(request)

        async def dispatch_async(request: HttpRequest) -> HttpResponse:
            return body(request)

        view: Any = dispatch_async if asynchronous else dispatch_sync
        if decorated and scopes:
            view = require_scopes(*scopes)(view)
        return view

    read, write = make("agents:read"), make("agents:write")

    def agents_sync(request: HttpRequest) -> HttpResponse:
        return write(request) if request.method == "POST" else read(request)

    async def agents_async(request: HttpRequest) -> HttpResponse:
        return await (write(request) if request.method == "POST" else read(request))

    return URLConf(
        path("agents", agents_async if asynchronous else agents_sync),
        path("health", make()),
        path("secret", make(DENY)),
    )


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def plain_verifier(world: World) -> Verifier:
    return Verifier(world.store, hasher=Hasher(pepper_from_env=False))


@pytest.fixture
def calls() -> list[Any]:
    return []


@pytest.fixture
def with_policy(world: World, calls: list[Any], request: pytest.FixtureRequest) -> Iterator[None]:
    asynchronous = getattr(request, "param", False)
    with override_settings(
        ROOT_URLCONF=table_urls(calls, asynchronous=asynchronous),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": world.verifier},
    ):
        yield


def joined(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Repeated fields joined with commas, as WSGI servers and Django's ASGI handler do: the
    test clients take one value per header name."""
    out: dict[str, str] = {}
    for name, value in headers:
        out[name] = out[name] + "," + value if name in out else value
    return out


def reply_of(response: Any) -> Reply:
    return Reply(
        response.status_code,
        {k.lower(): v for k, v in response.headers.items()},
        response.content,
    )


def client_send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    return reply_of(Client().generic(method, path, headers=joined(headers)))


def async_client_send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    async def go() -> Reply:
        return reply_of(await AsyncClient().generic(method, path, headers=joined(headers)))

    return asyncio.run(go())


# -- the case table ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("with_policy")
def test_sync_middleware_case_table(case: Case, world: World, calls: list[Any]) -> None:
    check(case, world, client_send, calls=calls)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("with_policy")
def test_sync_middleware_case_table_raw_wsgi(case: Case, world: World, calls: list[Any]) -> None:
    # Django's real WSGI handler, called as a server would (repeated headers comma-joined).
    check(case, world, wsgi_driver.sender(WSGIHandler()), calls=calls)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_policy", [True], indirect=True, ids=["async-views"])
@pytest.mark.usefixtures("with_policy")
def test_async_middleware_case_table(case: Case, world: World, calls: list[Any]) -> None:
    check(case, world, async_client_send, calls=calls)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_policy", [True], indirect=True, ids=["async-views"])
@pytest.mark.usefixtures("with_policy")
def test_async_middleware_case_table_raw_asgi(case: Case, world: World, calls: list[Any]) -> None:
    # Django's real ASGI handler with truly repeated header fields (it joins them itself).
    check(case, world, asgi_driver.sync_send(ASGIHandler()), calls=calls)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync-views", "async-views"])
def test_decorators_only_case_table(
    case: Case, world: World, calls: list[Any], asynchronous: bool
) -> None:
    urls = table_urls(calls, asynchronous=asynchronous, decorated=True)
    send = async_client_send if asynchronous else client_send
    with override_settings(ROOT_URLCONF=urls, KEYGUARD={"VERIFIER": plain_verifier(world)}):
        check(case, world, send, calls=calls)


DENIALS = [p for p in CASES if p.values[0].code is not None]  # type: ignore[union-attr]


@pytest.mark.parametrize("case", DENIALS)
@pytest.mark.usefixtures("with_policy")
def test_denials_identical_to_wsgi_middleware(case: Case, world: World) -> None:
    headers = [*case.headers(world), ("X-Request-ID", "req-123")]
    wsgi = KeyGuardWSGIMiddleware(lambda environ, start: [], verifier=world.verifier)
    expected = wsgi_driver.sender(wsgi)(case.method, case.path, headers)
    assert wsgi_driver.sender(WSGIHandler())(case.method, case.path, headers) == expected
    assert client_send(case.method, case.path, headers) == expected
    assert async_client_send(case.method, case.path, headers) == expected


# -- sync / async ------------------------------------------------------------------------------
def test_middleware_picks_sync_or_async() -> None:
    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    sync_mw = KeyGuardMiddleware(sync_view)
    async_mw = KeyGuardMiddleware(async_view)
    assert not iscoroutinefunction(sync_mw)
    assert iscoroutinefunction(async_mw)
    assert (KeyGuardMiddleware.sync_capable, KeyGuardMiddleware.async_capable) == (True, True)


class CountingVerifier(Verifier):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def verify(self, *args: Any, **kwargs: Any) -> Decision:
        self.calls.append("verify")
        return super().verify(*args, **kwargs)

    async def averify(self, *args: Any, **kwargs: Any) -> Decision:
        self.calls.append("averify")
        return await super().averify(*args, **kwargs)


async def test_async_stack_awaits_averify(world: World) -> None:
    verifier = CountingVerifier(
        world.store, policy=world.verifier.policy, hasher=Hasher(pepper_from_env=False)
    )
    seen: list[Any] = []

    @require_scopes("agents:read")
    async def agents(request: HttpRequest) -> HttpResponse:
        seen.append(request.keyguard_principal)
        return JsonResponse({})

    with override_settings(
        ROOT_URLCONF=URLConf(path("agents", agents)),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": verifier},
    ):
        response = await AsyncClient().get(
            "/agents", headers={"Authorization": world.header("reader")}
        )
    assert response.status_code == 200
    assert verifier.calls == ["averify"]  # the middleware; the decorator reused its principal
    assert seen[0].key_id == world.keys["reader"].key_id


def test_decorator_under_middleware_checks_only_scopes(world: World) -> None:
    verifier = CountingVerifier(
        world.store, policy=world.verifier.policy, hasher=Hasher(pepper_from_env=False)
    )

    @require_scopes("agents:write")  # stricter than the policy's agents:read
    def agents(request: HttpRequest) -> HttpResponse:
        raise AssertionError("must not run")

    with override_settings(
        ROOT_URLCONF=URLConf(path("agents", agents)),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": verifier},
    ):
        response = Client().get("/agents", headers={"Authorization": world.header("reader")})
    assert response.status_code == 403
    assert response.json()["required_scopes"] == ["agents:write"]
    assert verifier.calls == ["verify"]


def test_decorator_on_public_route_verifies_the_key(world: World) -> None:
    @require_scopes("agents:read")
    def health(request: HttpRequest) -> HttpResponse:
        return JsonResponse({"key_id": request.keyguard_principal.key_id})

    with override_settings(
        ROOT_URLCONF=URLConf(path("health", health)),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": world.verifier},  # /health is public in the policy
    ):
        assert Client().get("/health").status_code == 401
        response = Client().get("/health", headers={"Authorization": world.header("reader")})
    assert response.json() == {"key_id": world.keys["reader"].key_id}


class HeaderVerifier(Verifier):
    def verify(self, *args: Any, **kwargs: Any) -> Decision:
        decision = super().verify(*args, **kwargs)
        return (
            decision._replace(extra_headers=RATE_HEADERS, rate=None)
            if decision.allowed
            else decision
        )

    async def averify(self, *args: Any, **kwargs: Any) -> Decision:
        return self.verify(*args, **kwargs)


@pytest.mark.parametrize("send", [client_send, async_client_send], ids=["sync", "async"])
def test_rate_limit_headers_on_success(world: World, calls: list[Any], send: Any) -> None:
    verifier = HeaderVerifier(
        world.store, policy=world.verifier.policy, hasher=Hasher(pepper_from_env=False)
    )
    asynchronous = send is async_client_send
    with override_settings(
        ROOT_URLCONF=table_urls(calls, asynchronous=asynchronous),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": verifier},
    ):
        reply = send("GET", "/agents", [("Authorization", world.header("reader"))])
    assert reply.status == 200
    assert reply.headers["ratelimit"] == '"burst";r=19;t=10'


# -- settings ----------------------------------------------------------------------------------
def make_test_verifier() -> Verifier:
    """Referenced by dotted path from settings."""
    return Verifier(make_world().store, policy=RoutePolicy({}, public=["/health"]), cache_ttl=0.25)


ACME = ProblemRenderer(realm="acme")


def test_settings_are_built_once_and_follow_overrides() -> None:
    first = get_config()
    assert get_config() is first
    with override_settings(
        KEYGUARD={
            "STORE_URL": "memory://",
            "POLICY": {"GET /agents": "agents:read"},
            "PUBLIC": ["/health"],
            "CACHE_TTL": 0.5,
            "RENDERER": f"{__name__}.ACME",
        }
    ):
        config = get_config()
        assert config is get_config()
        assert config.verifier.cache_ttl == 0.5
        assert config.verifier.policy is not None
        assert config.verifier.policy.public_paths == ("/health",)
        assert config.renderer is ACME
    assert get_config() is not config


def test_verifier_from_dotted_factory() -> None:
    with override_settings(KEYGUARD={"VERIFIER": f"{__name__}.make_test_verifier"}):
        assert get_config().verifier.cache_ttl == 0.25


def test_custom_realm_in_challenge(world: World, calls: list[Any]) -> None:
    with override_settings(
        ROOT_URLCONF=table_urls(calls),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": world.verifier, "RENDERER": ACME},
    ):
        response = Client().get("/agents")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'UserKey realm="acme"'


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param({"STORE_URL": "nosuch://x"}, "unknown store scheme", id="bad-store"),
        pytest.param({"STORE_URL": "not a url"}, "not a URL", id="not-a-url"),
        pytest.param({"POLCY": {}}, "unknown keys", id="typo"),
        pytest.param("memory://", "must be a dict", id="not-a-dict"),
        pytest.param(
            {"STORE_URL": "memory://", "POLICY": {"GET agents": "agents:read"}},
            "starting with '/'",
            id="bad-policy",
        ),
        pytest.param(
            {"STORE_URL": "memory://", "POLICY": {"GET /a": "Agents:Read"}},
            "invalid required scope",
            id="bad-scope",
        ),
        pytest.param(
            {"STORE_URL": "memory://", "PUBLIC": ["/health"]}, "dict POLICY", id="public-alone"
        ),
        pytest.param(
            {"VERIFIER": "keyguard.nosuch.verifier"}, "keyguard.nosuch", id="bad-dotted-path"
        ),
        pytest.param(
            {"VERIFIER": f"{__name__}.make_test_verifier", "STORE_URL": "memory://"},
            "VERIFIER excludes",
            id="verifier-and-store",
        ),
        pytest.param({"VERIFIER": f"{__name__}.ACME"}, "must be a Verifier", id="wrong-type"),
        pytest.param({"STORE_URL": "memory://", "CACHE_TTL": -1}, "TTL", id="bad-option"),
    ],
)
def test_bad_settings_fail_at_startup(setting: Any, message: str) -> None:
    with override_settings(KEYGUARD=setting):
        with pytest.raises(ImproperlyConfigured, match=message) as caught:
            KeyGuardMiddleware(lambda request: HttpResponse())
        assert isinstance(caught.value, ConfigurationError)
        assert isinstance(caught.value, KeyGuardImproperlyConfigured)


def test_reset_closes_a_store_built_from_settings(tmp_path: Any) -> None:
    with override_settings(KEYGUARD={"STORE_URL": f"sqlite:///{tmp_path / 'keys.db'}"}):
        config = get_config()
        assert config.owns_store
        config.verifier.store.get("x" * 12)
    assert get_config() is not config
    with pytest.raises(StoreUnavailable, match="closed"):
        config.verifier.store.get("x" * 12)


def test_a_given_verifier_is_not_closed(world: World) -> None:
    with override_settings(KEYGUARD={"VERIFIER": world.verifier}):
        assert not get_config().owns_store


# -- the example project -----------------------------------------------------------------------
@pytest.fixture
def example_settings() -> Iterator[dict[str, Any]]:
    from examples.django_project import settings as example

    names = ["ROOT_URLCONF", "MIDDLEWARE", "KEYGUARD", "REST_FRAMEWORK"]
    values = {name: getattr(example, name) for name in names}
    with override_settings(**values):
        yield values


def test_example_project_serves(example_settings: dict[str, Any]) -> None:
    client = Client()
    assert client.get("/health").json() == {"status": "ok"}
    for url in ("/agents", "/api/agents"):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["code"] == "missing_api_key"


def test_example_project_with_keys(example_settings: dict[str, Any], world: World) -> None:
    conf = example_settings["KEYGUARD"]
    policy = RoutePolicy(conf["POLICY"], public=conf["PUBLIC"])
    verifier = Verifier(world.store, policy=policy, hasher=Hasher(pepper_from_env=False))
    reader = {"Authorization": world.header("reader")}
    admin = {"Authorization": world.header("admin")}
    with override_settings(KEYGUARD={"VERIFIER": verifier}):
        client = Client()
        for url in ("/agents", "/api/agents"):
            response = client.get(url, headers=reader)
            assert response.status_code == 200, response.content
            assert response.json()["key_id"] == world.keys["reader"].key_id
        assert client.get("/tasks", headers=reader).status_code == 403
        denied = client.post("/api/tasks/t1/execute", headers=reader)
        assert denied.status_code == 403
        assert denied["Content-Type"] == "application/problem+json"
        assert json.loads(denied.content)["required_scopes"] == ["tasks:execute"]
        done = client.post("/api/tasks/t1/execute", headers=admin)
        assert done.status_code == 202
        assert done.json()["task"]["by"] == world.keys["admin"].key_id
        created = client.post(
            "/api/agents", {"name": "scout"}, content_type="application/json", headers=admin
        )
        assert created.status_code == 201


# -- keyguard's headers on Django responses -------------------------------------------------------
HEADERS = (
    ("RateLimit-Policy", '"burst";q=20;w=10'),
    ("RateLimit", '"burst";r=19;t=10'),
    ("X-RateLimit-Remaining", "19"),
)


def _public_way(response: HttpResponse, headers: tuple[tuple[str, str], ...]) -> HttpResponse:
    for name, value in headers:
        response[name] = value
    return response


@pytest.mark.parametrize("kind", [HttpResponse, JsonResponse])
@pytest.mark.parametrize("writer", ["_with_headers", "_with_rate_headers"])
def test_headers_go_into_the_store_exactly_as_the_public_way_puts_them(
    kind: Any, writer: str
) -> None:
    """_with_headers writes Django's header store directly (Django's per-field checks cost
    about 1 µs each), _with_rate_headers too without even the checks (the default path's
    rate-limit fields, ASCII by construction): the response must come out as
    ``response[name] = value`` leaves it, replacing the view's own field of the same name
    whatever its case."""
    from keyguard.adapters import django as kg_django

    _with_headers = getattr(kg_django, writer)

    def view_response() -> HttpResponse:
        response = kind({"a": 1}) if kind is JsonResponse else kind(b"body")
        response["ratelimit"] = "the view's own"
        response["X-Other"] = "kept"
        return response

    fast = _with_headers(view_response(), HEADERS)
    slow = _public_way(view_response(), HEADERS)
    assert list(fast.items()) == list(slow.items())
    assert fast["RateLimit"] == '"burst";r=19;t=10'
    assert fast.serialize_headers() == slow.serialize_headers()


def test_a_header_value_django_must_check_takes_the_public_way() -> None:
    """A value that is not printable ASCII (never one of keyguard's own, but the rule holds)
    goes through Django's checks: a line break is refused, not written into the response."""
    from django.http import BadHeaderError

    from keyguard.adapters.django import _with_headers

    with pytest.raises(BadHeaderError):
        _with_headers(HttpResponse(b""), (("RateLimit", "a\r\nSet-Cookie: x=1"),))
    encoded = _with_headers(HttpResponse(b""), (("X-Name", "café"),))
    assert encoded["X-Name"] == _public_way(HttpResponse(b""), (("X-Name", "café"),))["X-Name"]


@pytest.mark.parametrize("writer", ["_with_headers", "_with_rate_headers"])
def test_a_response_without_django_s_header_store_gets_the_headers_the_public_way(
    writer: str,
) -> None:
    from keyguard.adapters import django as kg_django

    class Plain(dict):  # type: ignore[type-arg]
        pass

    response = Plain()
    assert getattr(kg_django, writer)(response, HEADERS) is response
    assert dict(response) == dict(HEADERS)
