"""One flow through every way of serving the dashboard: its own ASGI and WSGI skins, the
ASGI/WSGI dispatchers in front of a keyguard-protected app, Werkzeug's dispatcher (the prefix
in ``SCRIPT_NAME``), Starlette, FastAPI, Flask and Django (with Django's CSRF middleware on)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keyguard.core.policy import RoutePolicy
from keyguard.core.verifier import Verifier
from keyguard.dashboard import Dashboard
from tests.dashboard.support import (
    SECRET,
    Browser,
    World,
    asgi_browser,
    make_world,
    new_key_in,
    wsgi_browser,
)

Mount = Callable[[World, Dashboard], contextlib.AbstractContextManager[Browser]]


def _guarded_verifier(world: World, dashboard: Dashboard) -> Verifier:
    policy = RoutePolicy({"GET /agents": "agents:read"}, public=dashboard.public_paths())
    return Verifier(world.store, policy=policy, hasher=world.manager.hasher, cache_ttl=0)


@contextlib.contextmanager
def own_asgi(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    with asgi_browser(dashboard.asgi_app(), prefix=dashboard.prefix) as b:
        yield b


@contextlib.contextmanager
def own_wsgi(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    with wsgi_browser(dashboard.wsgi_app(), prefix=dashboard.prefix) as b:
        yield b


async def _agents(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"agents"})


@contextlib.contextmanager
def asgi_dispatch(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from keyguard.adapters.asgi import KeyGuardMiddleware, mount_dashboard

    guarded = KeyGuardMiddleware(_agents, verifier=_guarded_verifier(world, dashboard))
    with asgi_browser(mount_dashboard(guarded, dashboard), prefix=dashboard.prefix) as b:
        assert b.client.get("/agents").status_code == 401  # the rest is still protected
        yield b


def _wsgi_agents(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"agents"]


@contextlib.contextmanager
def wsgi_dispatch(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from keyguard.adapters.wsgi import KeyGuardWSGIMiddleware, mount_dashboard

    guarded = KeyGuardWSGIMiddleware(_wsgi_agents, verifier=_guarded_verifier(world, dashboard))
    with wsgi_browser(mount_dashboard(guarded, dashboard), prefix=dashboard.prefix) as b:
        assert b.client.get("/agents").status_code == 401
        yield b


@contextlib.contextmanager
def werkzeug_dispatcher(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = DispatcherMiddleware(_wsgi_agents, {dashboard.prefix: dashboard.wsgi_app()})
    with wsgi_browser(app, prefix=dashboard.prefix) as b:
        yield b


@contextlib.contextmanager
def starlette(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from starlette.applications import Starlette

    from keyguard.adapters.starlette import mount_dashboard

    app = Starlette()
    mount_dashboard(app, dashboard)
    with asgi_browser(app, prefix=dashboard.prefix) as b:
        yield b


@contextlib.contextmanager
def fastapi(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from fastapi import FastAPI

    from keyguard.adapters.fastapi import KeyGuardMiddleware, mount_dashboard

    app = FastAPI()

    @app.get("/agents")
    def agents() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(KeyGuardMiddleware, verifier=_guarded_verifier(world, dashboard))
    mount_dashboard(app, dashboard)
    assert not [p for p in app.openapi()["paths"] if p.startswith(dashboard.prefix)]
    with asgi_browser(app, prefix=dashboard.prefix) as b:
        assert b.client.get("/agents").status_code == 401
        yield b


@contextlib.contextmanager
def flask(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from flask import Flask

    from keyguard.adapters.flask import mount_dashboard

    app = Flask("keyguard-dashboard-test")
    mount_dashboard(app, dashboard)
    with wsgi_browser(app, prefix=dashboard.prefix) as b:
        yield b


@contextlib.contextmanager
def django(world: World, dashboard: Dashboard) -> Iterator[Browser]:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    from keyguard.adapters.django import dashboard_urls
    from tests.adapters.django_settings import configure

    configure()

    class URLConf:
        urlpatterns = dashboard_urls(dashboard)

    middleware = ["django.middleware.csrf.CsrfViewMiddleware"]
    with (
        override_settings(ROOT_URLCONF=URLConf(), MIDDLEWARE=middleware),
        wsgi_browser(WSGIHandler(), prefix=dashboard.prefix) as b,
    ):
        yield b


MOUNTS: dict[str, Mount] = {
    "asgi": own_asgi,
    "wsgi": own_wsgi,
    "asgi-dispatch": asgi_dispatch,
    "wsgi-dispatch": wsgi_dispatch,
    "werkzeug-dispatcher": werkzeug_dispatcher,
    "starlette": starlette,
    "fastapi": fastapi,
    "flask": flask,
    "django": django,
}


@pytest.mark.parametrize("prefix", ["/keyguard", "/admin/api-keys"])
@pytest.mark.parametrize("mount", MOUNTS)
def test_the_dashboard_works_in_every_mount(mount: str, prefix: str) -> None:
    world = make_world()
    dashboard = Dashboard(world.api, prefix=prefix, secret=SECRET, usage=world.usage)
    with MOUNTS[mount](world, dashboard) as b:
        first = b.get("/keys")
        assert first.status_code == 303
        assert first.headers["location"] == f"{prefix}/sign-in"
        signin = b.get("/sign-in")
        assert signin.status_code == 200
        assert f'action="{prefix}/sign-in"' in signin.text
        assert f'href="{prefix}/static/dashboard.css?v=' in signin.text
        assert b.sign_in(world.key("admin")).headers["location"] == f"{prefix}/keys"
        session = next(c for c in b.cookie_headers() if c.startswith("kg_dashboard="))
        assert f"Path={prefix}" in session
        assert "HttpOnly" in session
        assert "SameSite=Strict" in session
        listing = b.get("/keys")
        assert listing.status_code == 200, listing.text
        assert f'href="{prefix}/keys/{world.id("mgr")}"' in listing.text
        _, plaintext = b.create("mounted", ["agents:read"])
        key_id = plaintext.split("_")[1]
        assert world.manager.verify(plaintext).allowed
        assert plaintext not in b.get("/keys").text
        b.get(f"/keys/{key_id}")
        done = b.post(f"/keys/{key_id}/suspend", {"reason": "mount test"})
        assert done.headers["location"] == f"{prefix}/keys/{key_id}?done=suspended"
        assert b.post("/keys/new", csrf="forged").status_code == 403
        css = b.get("/static/dashboard.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert b.post("/sign-out").headers["location"] == f"{prefix}/sign-in?m=signed-out"
        assert b.get("/keys").status_code == 303
    assert world.manager.get(key_id).suspended_at is not None
    assert new_key_in("") is None


def test_mounted_under_another_path_without_stripping_the_prefix() -> None:
    """A dashboard whose prefix is not where it is mounted: ``strip_prefix=False``, and the
    links follow the mount."""
    from starlette.applications import Starlette
    from starlette.routing import Mount as StarletteMount

    world = make_world()
    app = Starlette(
        routes=[StarletteMount("/ops", app=world.dashboard.asgi_app(strip_prefix=False))]
    )
    with asgi_browser(app, prefix="/ops") as b:
        page = b.get("/sign-in")
        assert page.status_code == 200
        assert 'action="/ops/sign-in"' in page.text
        assert b.sign_in(world.key("admin")).headers["location"] == "/ops/keys"
        assert re.search(r'href="/ops/keys/new"', b.get("/keys").text)
