"""The demo serves the dashboard at /keyguard, counts its requests into the key store for the
charts, and says where the dashboard is."""

from __future__ import annotations

import io
import sys

import httpx
import pytest

from keyguard.core.errors import ConfigurationError
from keyguard.demo import (
    DASHBOARD_PREFIX,
    DemoKeys,
    bootstrap,
    create_app,
    demo_policy,
    print_banner,
)
from keyguard.stores.memory import MemoryStore
from tests.api.support import SyncASGITransport
from tests.dashboard.support import Browser


def test_the_demo_mounts_the_dashboard_and_charts_real_requests() -> None:
    store = MemoryStore()
    keys = bootstrap(store).created
    app = create_app(store=store)
    assert demo_policy().match("GET", f"{DASHBOARD_PREFIX}/keys").is_public
    with httpx.Client(transport=SyncASGITransport(app), base_url="http://demo") as client:
        b = Browser(client, DASHBOARD_PREFIX)
        assert b.sign_in(keys["admin"]).status_code == 303
        _, made = b.create("demo key", ["agents:read"])
        auth = {"Authorization": f"UserKey {made}"}
        assert [client.get("/agents", headers=auth).status_code for _ in range(3)] == [200] * 3
        assert client.get("/agents/nope", headers=auth).status_code == 404
        assert client.post("/agents", headers=auth).status_code == 403  # keyguard refused
        page = b.get(f"/keys/{made.split('_')[1]}").text
    app.state.keyguard.observer.close()
    assert 'data-total="2xx">3<' in page
    assert 'data-total="4xx">2<' in page  # the app's 404 and keyguard's own 403
    assert 'data-route-count="GET /agents">3<' in page
    assert 'data-route-count="POST /agents">1<' in page
    assert app.state.dashboard.prefix == DASHBOARD_PREFIX


def test_the_banner_points_at_the_dashboard() -> None:
    out = io.StringIO()
    print_banner(DemoKeys({"admin": "kg_x"}, {}), "http://127.0.0.1:8000", out)
    assert (
        "Dashboard: http://127.0.0.1:8000/keyguard (sign in with the admin key)" in out.getvalue()
    )


def test_the_demo_needs_jinja2_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from keyguard import demo

    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ConfigurationError, match=r"keyguard\[server\]"):
        demo.run(port=0, url="memory://")
