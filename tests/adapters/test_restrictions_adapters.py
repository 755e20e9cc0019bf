"""Suspended and network-restricted keys, and the expiry warning header, through every adapter.

Runs once the verifier applies :func:`keyguard.core.restrictions.record_denial` after a secret
matched and adds :func:`keyguard.core.expiry.expiry_warning` to allowed decisions (the wiring
described in the management-API report); until then ``keyguard.core.verifier`` does not import
``record_denial`` and this module is skipped. Every adapter must answer:

* a suspended key: 401 ``suspended_api_key`` with ``WWW-Authenticate`` — wherever it is used from;
* a key restricted to 10.0.0.0/8: 200 from 10.1.2.3, 403 ``network_not_allowed`` from 192.0.2.1,
  also right after a success from inside (the fast path must not remember the address);
* a key expiring in three days: 200 with ``API-Key-Expires``; a key without expiry: no header
  (except through Starlette's ``AuthenticationMiddleware`` backend, which cannot add headers).

The client address comes through ``X-Forwarded-For`` with ``trusted_proxies=1`` (the peer is
127.0.0.1 in every driver), so each adapter's address plumbing is exercised too.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import keyguard.core.verifier as verifier_module
from keyguard.core.clock import to_iso
from keyguard.core.hashing import Hasher
from keyguard.core.policy import RoutePolicy
from keyguard.core.verifier import Verifier
from keyguard.management import KeyManager
from keyguard.stores.memory import MemoryStore
from tests.adapters import asgi_driver, wsgi_driver
from tests.adapters.cases import Reply

WIRED = hasattr(verifier_module, "record_denial")
pytestmark = pytest.mark.skipif(
    not WIRED,
    reason="enable when keyguard.core.verifier applies keyguard.core.restrictions.record_denial",
)

INSIDE = "10.1.2.3"
OUTSIDE = "192.0.2.1"
Send = Callable[[str, str, list[tuple[str, str]]], Reply]


class Keys:
    def __init__(self) -> None:
        self.store = MemoryStore()
        m = KeyManager(self.store, hasher=Hasher(pepper_from_env=False))
        self.plain = m.create("plain", ["agents:read"]).plaintext
        suspended = m.create("suspended", ["agents:read"])
        m.suspend(suspended.key_id, reason="abuse")
        self.suspended = suspended.plaintext
        self.office = m.create("office", ["agents:read"], allowed_networks=["10.0.0.0/8"]).plaintext
        self.suspended_office = m.create(
            "suspended office", ["agents:read"], allowed_networks=["10.0.0.0/8"]
        )
        m.suspend(self.suspended_office.key_id, reason="x")
        soon = m.create("soon", ["agents:read"], expires_in=3 * 86400)
        self.soon = soon.plaintext
        assert soon.record.expires_at is not None
        self.soon_header = to_iso(math.floor(soon.record.expires_at))

    def verifier(self, **options: Any) -> Verifier:
        return Verifier(
            self.store, hasher=Hasher(pepper_from_env=False), trusted_proxies=1, **options
        )


POLICY = RoutePolicy({"GET /agents": "agents:read"}, public=["/health"])


def _answer() -> dict[str, str]:
    return {"ok": "yes"}


# -- one app per adapter ------------------------------------------------------------------------
def asgi_middleware(keys: Keys) -> Send:
    from keyguard.adapters.asgi import KeyGuardMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(_answer()).encode()})

    wrapped = KeyGuardMiddleware(app, verifier=keys.verifier(policy=POLICY))
    return lambda m, p, h: asyncio.run(asgi_driver.call(wrapped, m, p, h))


def starlette_backend(keys: Keys) -> Send:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from keyguard.adapters.starlette import KeyGuardBackend, keyguard_on_error

    async def agents(request: Any) -> JSONResponse:
        return JSONResponse(_answer())

    backend = KeyGuardBackend(verifier=keys.verifier(policy=POLICY))
    app = Starlette(
        routes=[Route("/agents", agents)],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=backend, on_error=keyguard_on_error)
        ],
    )
    return lambda m, p, h: asyncio.run(asgi_driver.call(app, m, p, h))


def fastapi_dependency(keys: Keys) -> Send:
    from fastapi import Depends, FastAPI

    from keyguard.adapters.fastapi import KeyGuard

    guard = KeyGuard(verifier=keys.verifier())
    app = FastAPI()
    reader = Depends(guard.require("agents:read"))

    @app.get("/agents")
    def agents(principal: Any = reader) -> dict[str, str]:
        return _answer()

    guard.install(app)
    return lambda m, p, h: asyncio.run(asgi_driver.call(app, m, p, h))


def wsgi_middleware(keys: Keys) -> Send:
    from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(_answer()).encode()]

    return wsgi_driver.sender(KeyGuardWSGIMiddleware(app, verifier=keys.verifier(policy=POLICY)))


def flask_extension(keys: Keys) -> Send:
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard

    app = Flask("restrictions")
    app.get("/agents")(_answer)
    KeyGuard(app, verifier=keys.verifier(policy=POLICY))
    return wsgi_driver.sender(app)


def flask_decorator(keys: Keys) -> Send:
    from flask import Flask

    from keyguard.adapters.flask import KeyGuard, require_scopes

    app = Flask("restrictions-decorator")
    app.get("/agents")(require_scopes("agents:read")(_answer))
    KeyGuard(app, verifier=keys.verifier())
    return wsgi_driver.sender(app)


@pytest.fixture
def django_urls() -> Iterator[Callable[[Keys, bool], Send]]:
    from tests.adapters.django_settings import configure

    configure()
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import JsonResponse
    from django.test import override_settings
    from django.urls import path

    stack: list[Any] = []

    def build(keys: Keys, drf: bool) -> Send:
        if drf:
            from rest_framework.response import Response
            from rest_framework.views import APIView

            from keyguard.adapters.drf import HasScopes, KeyGuardAuthentication

            class Agents(APIView):
                authentication_classes = [KeyGuardAuthentication]
                permission_classes = [HasScopes]
                required_scopes = {"GET": "agents:read"}

                def get(self, request: Any) -> Response:
                    return Response(_answer())

            view: Any = Agents.as_view()
            settings: dict[str, Any] = {"KEYGUARD": {"VERIFIER": keys.verifier()}}
        else:

            def view(request: Any) -> JsonResponse:
                return JsonResponse(_answer())

            settings = {
                "KEYGUARD": {"VERIFIER": keys.verifier(policy=POLICY)},
                "MIDDLEWARE": ["keyguard.adapters.django.KeyGuardMiddleware"],
            }

        class URLConf:
            urlpatterns = [path("agents", view)]

        override = override_settings(ROOT_URLCONF=URLConf(), **settings)
        override.enable()
        stack.append(override)
        return wsgi_driver.sender(WSGIHandler())

    yield build
    for override in reversed(stack):
        override.disable()


ADAPTERS: dict[str, Callable[[Keys], Send]] = {
    "asgi": asgi_middleware,
    "starlette-backend": starlette_backend,
    "fastapi": fastapi_dependency,
    "wsgi": wsgi_middleware,
    "flask-extension": flask_extension,
    "flask-decorator": flask_decorator,
}


@pytest.fixture(params=[*ADAPTERS, "django", "drf"])
def send(request: pytest.FixtureRequest) -> tuple[Keys, Send]:
    keys = Keys()
    name = request.param
    if name in ("django", "drf"):
        build = request.getfixturevalue("django_urls")
        return keys, build(keys, name == "drf")
    return keys, ADAPTERS[name](keys)


def get(send: Send, key: str, address: str) -> Reply:
    return send(
        "GET", "/agents", [("Authorization", f"UserKey {key}"), ("X-Forwarded-For", address)]
    )


def code(reply: Reply) -> str | None:
    return json.loads(reply.body).get("code") if reply.status >= 400 else None


# -- the table ----------------------------------------------------------------------------------
def test_suspended_keys_are_refused_everywhere(send: tuple[Keys, Send]) -> None:
    keys, do = send
    for address in (INSIDE, OUTSIDE):
        reply = get(do, keys.suspended, address)
        assert reply.status == 401, reply
        assert code(reply) == "suspended_api_key"
        assert reply.headers["www-authenticate"].startswith("UserKey realm=")
    # Suspension is reported before the network: the key is suspended wherever it is used.
    assert code(get(do, keys.suspended_office.plaintext, OUTSIDE)) == "suspended_api_key"


def test_network_restricted_keys(send: tuple[Keys, Send]) -> None:
    keys, do = send
    assert get(do, keys.office, INSIDE).status == 200
    # Right after a success from inside (a fast-path hit), the outside is still refused.
    reply = get(do, keys.office, OUTSIDE)
    assert reply.status == 403, reply
    assert code(reply) == "network_not_allowed"
    assert reply.headers["content-type"] == "application/problem+json"
    assert get(do, keys.office, INSIDE).status == 200
    assert get(do, keys.plain, OUTSIDE).status == 200


def test_the_expiry_warning_header(send: tuple[Keys, Send], request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["send"] == "starlette-backend":
        pytest.skip("an AuthenticationMiddleware backend cannot add response headers")
    keys, do = send
    for _ in range(2):  # the second from the fast path
        reply = get(do, keys.soon, INSIDE)
        assert reply.status == 200
        assert reply.headers["api-key-expires"] == keys.soon_header
    assert "api-key-expires" not in get(do, keys.plain, INSIDE).headers
