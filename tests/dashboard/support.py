"""Shared pieces of the dashboard tests: a world of keys with an injected clock, a dashboard
over it, and a small browser-like client (a cookie jar, forms posted with the page's CSRF
token) that runs through any mount."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any

import httpx

from keyguard.core.hashing import Hasher
from keyguard.core.verifier import Verifier
from keyguard.dashboard import Dashboard, MemoryUsage
from keyguard.management import CreatedKey, KeyManager
from keyguard.management.api import ManagementAPI
from keyguard.stores.memory import MemoryStore
from tests.api.support import T0, Clock, SyncASGITransport

SECRET = "dashboard-test-secret-0123456789abcdef"
PREFIX = "/keyguard"
PEER = "127.0.0.1"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')
_NEW_KEY = re.compile(r'id="new-key" class="mono" value="([^"]+)"')


@dataclass
class World:
    """A store with keys (as in the management API tests)::

    admin (acme, admin) ─┬─ mgr (acme, keys:manage agents:read tasks:read) ─ child
                         └─ reader (acme, agents:read: no management scope)
    stranger (globex, keys:manage agents:read)
    """

    clock: Clock
    store: MemoryStore
    manager: KeyManager
    verifier: Verifier
    api: ManagementAPI
    usage: MemoryUsage
    dashboard: Dashboard
    keys: dict[str, CreatedKey] = field(default_factory=dict)

    def key(self, name: str) -> str:
        return self.keys[name].plaintext

    def id(self, name: str) -> str:
        return self.keys[name].key_id

    def another_dashboard(self, **options: Any) -> Dashboard:
        """A second dashboard on the same store and secret: another worker process."""
        return Dashboard(self.api, secret=SECRET, usage=self.usage, **options)


def make_world(
    *, usage: bool = True, verifier_options: dict[str, Any] | None = None, **options: Any
) -> World:
    clock = Clock()
    store = MemoryStore()
    hasher = Hasher(pepper_from_env=False)
    manager = KeyManager(store, hasher=hasher, clock=clock)
    verifier = Verifier(
        store,
        hasher=hasher,
        clock=clock,
        **{"rate_limits": None, "cache_ttl": 0, **(verifier_options or {})},
    )
    api = ManagementAPI(manager, verifier=verifier)
    source = MemoryUsage(clock=clock)
    dashboard = Dashboard(api, secret=SECRET, usage=source if usage else None, **options)
    world = World(clock, store, manager, verifier, api, source, dashboard)
    k = world.keys
    k["admin"] = manager.create("admin", ["admin"], owner="acme")
    k["mgr"] = manager.create(
        "mgr", ["keys:manage", "agents:read", "tasks:read"], parent=k["admin"].record
    )
    k["reader"] = manager.create("reader", ["agents:read"], parent=k["admin"].record)
    k["child"] = manager.create("child", ["keys:manage", "agents:read"], parent=k["mgr"].record)
    k["stranger"] = manager.create("stranger", ["keys:manage", "agents:read"], owner="globex")
    return world


class Browser:
    """Pages through an httpx client: cookies kept, redirects not followed unless asked,
    forms posted with the CSRF token of the last page seen."""

    def __init__(self, client: httpx.Client, prefix: str = PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self.last: httpx.Response | None = None
        self.seen: list[httpx.Response] = []

    def url(self, path: str) -> str:
        return self.prefix + path

    def get(self, path: str, *, follow: bool = False, **kw: Any) -> httpx.Response:
        response = self.client.get(self.url(path), follow_redirects=follow, **kw)
        return self._keep(response)

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        csrf: str | bool | None = True,
        follow: bool = False,
        **kw: Any,
    ) -> httpx.Response:
        fields = dict(data or {})
        if csrf is True:
            fields.setdefault("csrf_token", self.csrf())
        elif isinstance(csrf, str):
            fields["csrf_token"] = csrf
        response = self.client.post(self.url(path), data=fields, follow_redirects=follow, **kw)
        return self._keep(response)

    def _keep(self, response: httpx.Response) -> httpx.Response:
        self.last = response
        self.seen.append(response)
        return response

    def csrf(self) -> str:
        if self.last is None or _CSRF.search(self.last.text) is None:
            self.get("/keys")
        assert self.last is not None
        found = _CSRF.search(self.last.text)
        assert found is not None, "no CSRF token on the page"
        return unescape(found.group(1))

    def request_id(self) -> str:
        assert self.last is not None
        found = _REQUEST_ID.search(self.last.text)
        assert found is not None
        return found.group(1)

    def sign_in(self, key: str) -> httpx.Response:
        self.get("/sign-in")
        return self.post("/sign-in", {"key": key})

    def create(self, name: str, scopes: list[str], **fields: Any) -> tuple[httpx.Response, str]:
        """Create a key through the form; the answer and the plaintext it shows."""
        self.get("/keys/new")
        data = {"name": name, "scopes": scopes, "request_id": self.request_id(), **fields}
        response = self.post("/keys/new", data)
        assert response.status_code == 200, response.text
        found = _NEW_KEY.search(response.text)
        assert found is not None
        return response, unescape(found.group(1))

    def cookie_headers(self) -> list[str]:
        return [v.strip() for r in self.seen for v in r.headers.get_list("set-cookie")]


def new_key_in(page: str) -> str | None:
    found = _NEW_KEY.search(page)
    return unescape(found.group(1)) if found else None


@contextlib.contextmanager
def asgi_browser(app: Any, *, prefix: str = PREFIX, https: bool = False) -> Iterator[Browser]:
    base = ("https" if https else "http") + "://testserver"
    with httpx.Client(transport=SyncASGITransport(app), base_url=base) as client:
        yield Browser(client, prefix)


@contextlib.contextmanager
def wsgi_browser(app: Any, *, prefix: str = PREFIX) -> Iterator[Browser]:
    transport = httpx.WSGITransport(app=app, remote_addr=PEER)
    with httpx.Client(transport=transport, base_url="http://testserver") as client:
        yield Browser(client, prefix)


@contextlib.contextmanager
def browser(world: World, dashboard: Dashboard | None = None) -> Iterator[Browser]:
    with asgi_browser((dashboard or world.dashboard).asgi_app()) as b:
        yield b


__all__ = ["PREFIX", "SECRET", "T0", "Browser", "World", "browser", "make_world"]
