"""Shared pieces of the management-API tests: a world of keys, an injected clock, and one
client per way of serving the API (the handler itself, ASGI, WSGI and every framework mount).

Every client takes paths *below* the API's prefix and returns an ``httpx.Response`` (or, for
the bare handler, an object with the same ``status_code``/``headers``/``json()``), so a test
runs unchanged through every mount."""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from keyguard.core.hashing import Hasher
from keyguard.core.records import AuditEvent, KeyRecord
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier
from keyguard.management import CreatedKey, KeyManager
from keyguard.management.api import ApiRequest, ManagementAPI
from keyguard.stores.memory import MemoryStore

T0 = 1_800_000_000.0
DAY = 86400.0
PEER = "127.0.0.1"


class Clock:
    """An injected wall clock (the manager, the verifier and the API all read it)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class World:
    """A store with a small tree of keys::

    admin (acme, admin) ─┬─ mgr (acme, keys:manage agents:read tasks:read) ─ child ─ grandchild
                         ├─ sibling (acme, keys:manage agents:read)
                         └─ reader (acme, agents:read: no management scope)
    stranger (globex, keys:manage agents:read)
    """

    clock: Clock
    store: KeyStore
    manager: KeyManager
    verifier: Verifier
    api: ManagementAPI
    keys: dict[str, CreatedKey] = field(default_factory=dict)

    def key(self, name: str) -> str:
        return self.keys[name].plaintext

    def id(self, name: str) -> str:
        return self.keys[name].key_id

    def record(self, name: str) -> KeyRecord:
        return self.manager.get(self.keys[name].key_id)

    def snapshot(self) -> list[KeyRecord]:
        """Every record as stored (``last_used_at`` aside: verifying a key touches it)."""
        return [replace(r, last_used_at=None) for r in self.store.list(limit=1000).items]

    def changes(self) -> list[AuditEvent]:
        """Audit events other than refusals (a refusal is audited, nothing else is written)."""
        return [e for e in self.store.audit(limit=1000) if not e.action.endswith(".refused")]


def make_world(
    store: KeyStore | None = None,
    *,
    rate_limits: Any = None,
    cache_ttl: float = 0,
    prefix: str = "/api-keys",
    **api_options: Any,
) -> World:
    clock = Clock()
    store = store or MemoryStore()
    hasher = Hasher(pepper_from_env=False)
    manager = KeyManager(store, hasher=hasher, clock=clock)
    verifier = Verifier(
        store, hasher=hasher, clock=clock, rate_limits=rate_limits, cache_ttl=cache_ttl
    )
    api = ManagementAPI(manager, verifier=verifier, prefix=prefix, **api_options)
    world = World(clock, store, manager, verifier, api)
    m = manager
    manage = ["keys:manage", "agents:read"]
    k = world.keys
    k["admin"] = m.create("admin", ["admin"], owner="acme")
    k["mgr"] = m.create("mgr", [*manage, "tasks:read"], parent=k["admin"].record)
    k["sibling"] = m.create("sibling", manage, parent=k["admin"].record)
    k["reader"] = m.create("reader", ["agents:read"], parent=k["admin"].record)
    k["child"] = m.create("child", manage, parent=k["mgr"].record)
    k["grandchild"] = m.create("grandchild", ["agents:read"], parent=k["child"].record)
    k["stranger"] = m.create("stranger", manage, owner="globex")
    return world


# -- clients --------------------------------------------------------------------------------------
@dataclass
class HandlerResponse:
    """The bare handler's answer with the bits of ``httpx.Response`` tests use."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Client:
    """``request(method, path, key=..., json=..., ...)`` through one way of serving the API."""

    def __init__(self, send: Callable[..., Any], prefix: str) -> None:
        self._send = send
        self.prefix = prefix

    def request(
        self,
        method: str,
        path: str = "/",
        *,
        key: str | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        params: dict[str, str] | None = None,
        peer: str | None = None,
    ) -> Any:
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if key is not None:
            pairs.append(("Authorization", f"UserKey {key}"))
        if json is not None:
            content = jsonlib.dumps(json).encode()
            if not any(k.lower() == "content-type" for k, _ in pairs):
                pairs.append(("Content-Type", "application/json"))
        url = self.prefix + ("" if path == "/" else path)
        if peer is not None:
            return self._send(method, url or "/", pairs, content or b"", params or {}, peer)
        return self._send(method, url or "/", pairs, content or b"", params or {})


def _handler_send(api: ManagementAPI) -> Callable[..., Any]:
    from urllib.parse import urlencode

    def send(
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        params: dict[str, str],
        peer: str = PEER,
    ) -> HandlerResponse:
        path = url[len(api.prefix) :] or "/"
        request = ApiRequest(method, path, urlencode(params), headers, body, peer)
        response = api.handle(request)
        names = [k for k, _ in response.headers]
        assert len(names) == len(set(names)), f"duplicate header fields: {names}"
        return HandlerResponse(response.status, httpx.Headers(response.headers), response.body)

    return send


def _httpx_send(client: httpx.Client) -> Callable[..., Any]:
    def send(
        method: str, url: str, headers: list[tuple[str, str]], body: bytes, params: dict[str, str]
    ) -> httpx.Response:
        return client.request(method, url, headers=headers, content=body, params=params)

    return send


class SyncASGITransport(httpx.BaseTransport):
    """httpx's ASGI transport for a synchronous client: each request runs on a fresh event
    loop (the management API's ASGI skin hands the work to a thread, as under a server)."""

    def __init__(self, app: Any) -> None:
        self._transport = httpx.ASGITransport(app=app, client=(PEER, 40000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def run() -> httpx.Response:
            response = await self._transport.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run(run())


@contextlib.contextmanager
def asgi_client(app: Any, prefix: str) -> Iterator[Client]:
    transport = SyncASGITransport(app)
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        yield Client(_httpx_send(client), prefix)


@contextlib.contextmanager
def wsgi_client(app: Any, prefix: str) -> Iterator[Client]:
    transport = httpx.WSGITransport(app=app, remote_addr=PEER)
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        yield Client(_httpx_send(client), prefix)


# -- the mounts ----------------------------------------------------------------------------------
@contextlib.contextmanager
def mount_handler(api: ManagementAPI) -> Iterator[Client]:
    yield Client(_handler_send(api), api.prefix)


@contextlib.contextmanager
def mount_asgi(api: ManagementAPI) -> Iterator[Client]:
    with asgi_client(api.asgi_app(), api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_asgi_behind_middleware(api: ManagementAPI) -> Iterator[Client]:
    """The pure ASGI app behind keyguard's ASGI middleware, whose policy leaves the API's
    paths public (the API authenticates its callers itself)."""
    from keyguard.adapters.asgi import KeyGuardMiddleware
    from keyguard.core.policy import RoutePolicy

    policy = RoutePolicy({"GET /agents": "agents:read"}, public=api.public_paths())
    app = KeyGuardMiddleware(api.asgi_app(), verifier=_policy_verifier(api, policy))
    with asgi_client(app, api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_wsgi(api: ManagementAPI) -> Iterator[Client]:
    with wsgi_client(api.wsgi_app(), api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_wsgi_dispatcher(api: ManagementAPI) -> Iterator[Client]:
    """Behind Werkzeug's DispatcherMiddleware (the prefix arrives in SCRIPT_NAME) and
    keyguard's WSGI middleware in front of the whole application."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware
    from keyguard.core.policy import RoutePolicy

    def other(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    policy = RoutePolicy({"GET /agents": "agents:read"}, public=api.public_paths())
    app = KeyGuardWSGIMiddleware(
        DispatcherMiddleware(other, {api.prefix: api.wsgi_app()}),
        verifier=_policy_verifier(api, policy),
    )
    with wsgi_client(app, api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_starlette(api: ManagementAPI) -> Iterator[Client]:
    from starlette.applications import Starlette

    from keyguard.adapters.starlette import management_routes

    with asgi_client(Starlette(routes=management_routes(api)), api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_fastapi(api: ManagementAPI) -> Iterator[Client]:
    from fastapi import FastAPI

    from keyguard.adapters.fastapi import mount_management

    app = FastAPI()

    @app.get("/agents")
    def agents() -> dict[str, str]:
        return {"ok": "yes"}

    mount_management(app, api)
    with asgi_client(app, api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_flask(api: ManagementAPI) -> Iterator[Client]:
    from flask import Flask

    from keyguard.adapters.flask import mount_management

    app = Flask("keyguard-test")
    mount_management(app, api)
    with wsgi_client(app, api.prefix) as client:
        yield client


@contextlib.contextmanager
def mount_django(api: ManagementAPI) -> Iterator[Client]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    from keyguard.adapters.django import management_urls
    from tests.adapters.django_settings import configure

    configure()

    class URLConf:
        urlpatterns = management_urls(api)

    with override_settings(ROOT_URLCONF=URLConf()), wsgi_client(WSGIHandler(), api.prefix) as c:
        yield c


def _policy_verifier(api: ManagementAPI, policy: Any) -> Verifier:
    v = api.verifier
    return Verifier(v.store, policy=policy, hasher=v.hasher, clock=api.manager.clock, cache_ttl=0)


MOUNTS: dict[str, Callable[[ManagementAPI], contextlib.AbstractContextManager[Client]]] = {
    "handler": mount_handler,
    "asgi": mount_asgi,
    "asgi+middleware": mount_asgi_behind_middleware,
    "wsgi": mount_wsgi,
    "wsgi+dispatcher": mount_wsgi_dispatcher,
    "starlette": mount_starlette,
    "fastapi": mount_fastapi,
    "flask": mount_flask,
    "django": mount_django,
}
