"""DRF: the shared case table through KeyGuardAuthentication + HasScopes + the exception
handler (no middleware); DRF's own handler; reuse of the middleware's principal; KeyUser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import path

from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import Hasher
from keyguard.core.scopes import any_of
from keyguard.core.verifier import Verifier
from tests.adapters.cases import CASES, Case, Reply, World, check, make_world
from tests.adapters.django_settings import configure
from tests.adapters.wsgi_driver import sender as wsgi_sender

configure()  # DRF reads its settings when rest_framework.views is imported

from rest_framework.exceptions import NotFound  # noqa: E402
from rest_framework.permissions import AllowAny, IsAuthenticated  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from keyguard.adapters.drf import (  # noqa: E402
    HasScopes,
    KeyGuardAuthentication,
    KeyGuardDenied,
    KeyUser,
    problem_response,
)
from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware  # noqa: E402

MIDDLEWARE = "keyguard.adapters.django.KeyGuardMiddleware"
DRF_DEFAULT_HANDLER = "rest_framework.views.exception_handler"


class URLConf:
    """A URLconf as an object (Django's resolver takes any object with ``urlpatterns``)."""

    def __init__(self, *patterns: Any) -> None:
        self.urlpatterns = list(patterns)


def table_urls(calls: list[Any]) -> URLConf:
    """The table's routes as DRF views. /secret declares no ``required_scopes``: HasScopes
    denies it by default, the DRF spelling of "unlisted routes are denied"."""

    def answer(request: Request) -> Response:
        calls.append(request)
        principal = request.auth
        return Response({"key_id": principal.key_id if principal else None})

    class Agents(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [HasScopes]
        required_scopes = {"GET": "agents:read", "POST": "agents:write"}

        def get(self, request: Request) -> Response:
            return answer(request)

        def post(self, request: Request) -> Response:
            return answer(request)

    class Health(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [AllowAny]

        def get(self, request: Request) -> Response:
            return answer(request)

    class Secret(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [HasScopes]

        def get(self, request: Request) -> Response:
            return answer(request)

    return URLConf(
        path("agents", Agents.as_view()),
        path("health", Health.as_view()),
        path("secret", Secret.as_view()),
    )


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def plain_verifier(world: World, cls: type[Verifier] = Verifier) -> Verifier:
    """The world's keys; no route policy (DRF classes authenticate; HasScopes authorizes)."""
    return cls(world.store, hasher=Hasher(pepper_from_env=False))


@pytest.fixture
def calls() -> list[Any]:
    return []


@pytest.fixture
def drf_only(world: World, calls: list[Any]) -> Iterator[None]:
    with override_settings(
        ROOT_URLCONF=table_urls(calls), KEYGUARD={"VERIFIER": plain_verifier(world)}
    ):
        yield


def joined(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Repeated fields comma-joined, as WSGI servers do (the test client takes one value)."""
    out: dict[str, str] = {}
    for name, value in headers:
        out[name] = out[name] + "," + value if name in out else value
    return out


def client_send(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    response = Client().generic(method, path, headers=joined(headers))
    return Reply(
        response.status_code,
        {k.lower(): v for k, v in response.headers.items()},
        response.content,
    )


@pytest.mark.parametrize("case", CASES)
@pytest.mark.usefixtures("drf_only")
def test_case_table(case: Case, world: World, calls: list[Any]) -> None:
    check(case, world, client_send, calls=calls)


DENIALS = [p for p in CASES if p.values[0].code is not None]  # type: ignore[union-attr]


@pytest.mark.parametrize("case", DENIALS)
@pytest.mark.usefixtures("drf_only")
def test_denials_match_wsgi_middleware(case: Case, world: World) -> None:
    headers = [*case.headers(world), ("X-Request-ID", "req-123")]
    wsgi = KeyGuardWSGIMiddleware(lambda environ, start: [], verifier=world.verifier)
    expected = wsgi_sender(wsgi)(case.method, case.path, headers)
    reply = client_send(case.method, case.path, headers)
    assert (reply.status, reply.body) == (expected.status, expected.body)
    # DRF adds its view headers (Allow, Vary); every header keyguard sends is identical.
    assert {k: reply.headers.get(k) for k in expected.headers} == expected.headers


@pytest.mark.parametrize("case", DENIALS)
@pytest.mark.usefixtures("drf_only")
def test_without_the_exception_handler(case: Case, world: World, settings_rf: Any) -> None:
    # DRF's own handler: right status, the code on the ErrorDetail, the challenge.
    with override_settings(
        REST_FRAMEWORK={**settings_rf, "EXCEPTION_HANDLER": DRF_DEFAULT_HANDLER}
    ):
        response = Client().generic(case.method, case.path, headers=joined(case.headers(world)))
    assert response.status_code == case.status
    assert response.data["detail"].code == case.code
    assert response["Content-Type"] == "application/json"
    if case.status == 401:
        assert response["WWW-Authenticate"].startswith('UserKey realm="keyguard"')


@pytest.fixture
def settings_rf() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.REST_FRAMEWORK)


# -- with the middleware -----------------------------------------------------------------------
class CountingVerifier(Verifier):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def verify(self, *args: Any, **kwargs: Any) -> Decision:
        self.calls.append("verify")
        return super().verify(*args, **kwargs)

    def authenticate(self, *args: Any, **kwargs: Any) -> Decision:
        self.calls.append("authenticate")
        return super().authenticate(*args, **kwargs)


def test_reuses_the_middleware_principal(world: World, calls: list[Any]) -> None:
    verifier = CountingVerifier(
        world.store, policy=world.verifier.policy, hasher=Hasher(pepper_from_env=False)
    )
    with override_settings(
        ROOT_URLCONF=table_urls(calls), MIDDLEWARE=[MIDDLEWARE], KEYGUARD={"VERIFIER": verifier}
    ):
        response = Client().get("/agents", headers={"Authorization": world.header("reader")})
        assert response.status_code == 200
        assert verifier.calls == ["verify", "authenticate"]  # once, by the middleware
        denied = Client().post("/agents", headers={"Authorization": world.header("reader")})
    assert denied.status_code == 403  # the middleware's policy
    assert calls[0].user == KeyUser(calls[0].auth)


def test_public_route_behind_middleware_authenticates_in_drf(
    world: World, calls: list[Any]
) -> None:
    with override_settings(
        ROOT_URLCONF=table_urls(calls),
        MIDDLEWARE=[MIDDLEWARE],
        KEYGUARD={"VERIFIER": world.verifier},
    ):
        response = Client().get("/health", headers={"Authorization": world.header("reader")})
    assert response.json() == {"key_id": world.keys["reader"].key_id}


# -- classes -----------------------------------------------------------------------------------
def single_view(view: type[APIView], route: str = "x") -> URLConf:
    return URLConf(path(route, view.as_view()))


@pytest.mark.usefixtures("drf_only")
def test_has_scopes_require_factory(world: World) -> None:
    class Execute(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [HasScopes.require(any_of("tasks:execute", "admin"))]

        def post(self, request: Request) -> Response:
            return Response({"user": str(request.user.pk)})

    with override_settings(ROOT_URLCONF=single_view(Execute)):
        denied = Client().post("/x", headers={"Authorization": world.header("reader")})
        allowed = Client().post("/x", headers={"Authorization": world.header("admin")})
    assert denied.status_code == 403
    assert json.loads(denied.content)["required_scopes"] == ["tasks:execute", "admin"]
    assert allowed.json() == {"user": world.keys["admin"].key_id}
    assert HasScopes.require("tasks:execute").__name__ == "HasScopes[tasks:execute]"


@pytest.mark.usefixtures("drf_only")
def test_required_scopes_from_as_view_and_head(world: World) -> None:
    class Things(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [HasScopes]
        required_scopes: Any = None

        def get(self, request: Request) -> Response:
            return Response({})

    urls = URLConf(
        path("open", Things.as_view(required_scopes={"GET": "agents:read"})),
        path("closed", Things.as_view()),
    )
    reader = {"Authorization": world.header("reader")}
    with override_settings(ROOT_URLCONF=urls):
        assert Client().get("/open", headers=reader).status_code == 200
        assert Client().head("/open", headers=reader).status_code == 200  # HEAD → GET
        assert (
            Client().get("/closed", headers={"Authorization": world.header("admin")}).status_code
            == 403
        )


@pytest.mark.usefixtures("drf_only")
def test_drf_not_authenticated_is_rendered_as_missing_key(world: World) -> None:
    class Me(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [IsAuthenticated]

        def get(self, request: Request) -> Response:
            assert isinstance(request.user, KeyUser)
            assert request.user.is_authenticated
            assert isinstance(request.auth, Principal)
            return Response({"name": str(request.user)})

    with override_settings(ROOT_URLCONF=single_view(Me)):
        missing = Client().get("/x")
        ok = Client().get("/x", headers={"Authorization": world.header("reader")})
    assert missing.status_code == 401
    assert missing["Content-Type"] == "application/problem+json"
    assert json.loads(missing.content)["code"] == "missing_api_key"
    assert ok.json() == {"name": "test key"}


@pytest.mark.usefixtures("drf_only")
def test_other_exceptions_fall_through_to_drf() -> None:
    class Gone(APIView):
        authentication_classes = [KeyGuardAuthentication]
        permission_classes = [AllowAny]

        def get(self, request: Request) -> Response:
            raise NotFound("no such thing")

    with override_settings(ROOT_URLCONF=single_view(Gone)):
        response = Client().get("/x")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such thing"}
    assert problem_response(NotFound(), {}) is None


def test_rate_limit_without_the_middleware(world: World, calls: list[Any]) -> None:
    """DRF-only deployments are rate-limited by the authentication class: the platform's burst
    of 20 per 10 s, headers on success, 429 with Retry-After after that."""
    fresh = make_world()
    with override_settings(
        ROOT_URLCONF=table_urls(calls),
        KEYGUARD={"VERIFIER": plain_verifier(fresh)},
    ):
        client = Client()
        headers = {"Authorization": fresh.header("reader")}
        replies = [client.get("/agents", headers=headers) for _ in range(21)]
    assert [r.status_code for r in replies[:20]] == [200] * 20
    assert replies[0]["RateLimit"].startswith('"burst";r=19;t=10')
    assert replies[0]["X-RateLimit-Remaining"] == "19"
    last = replies[20]
    assert last.status_code == 429
    assert last["Content-Type"] == "application/problem+json"
    assert int(last["Retry-After"]) >= 1
    assert json.loads(last.content)["code"] == "rate_limited"


def test_key_user() -> None:
    world = make_world()
    decision = world.verifier.authenticate(world.header("writer"))
    assert decision.principal is not None
    user = KeyUser(decision.principal)
    assert user.is_authenticated
    assert not user.is_anonymous
    assert user.pk == user.id == user.get_username() == world.keys["writer"].key_id
    assert user.has_scope("agents:write")
    assert not user.has_scope("tasks:read")
    assert not user.has_perm("auth.anything")
    assert world.plaintexts["writer"] not in repr(user)


def test_denied_exception_needs_a_denial() -> None:
    with pytest.raises(ConfigurationError):
        KeyGuardDenied(Decision(True))
