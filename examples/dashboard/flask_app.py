"""The key-management dashboard in a Flask app, behind keyguard's Flask extension.

Needs: pip install ".[flask,dashboard]"   (from the repository root)
Run:   KEYGUARD_DASHBOARD_SECRET=... flask --app examples.dashboard.flask_app:create_app run
Open:  http://127.0.0.1:5000/keyguard and sign in with a key holding admin or keys:manage.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from keyguard import RoutePolicy
from keyguard.adapters.flask import KeyGuard, mount_dashboard
from keyguard.dashboard import Dashboard, MemoryUsage, UsageRecorderWSGI
from keyguard.management import KeyManager

POLICY = RoutePolicy(
    {"GET /agents": "agents:read"},
    public=["/keyguard", "/keyguard/{rest:path}"],  # the dashboard signs its users in itself
)


def create_app(store: str | None = None, **dashboard_options: Any) -> Flask:
    manager = KeyManager(store or os.environ.get("KEYGUARD_STORE_URL", "sqlite:///./keyguard.db"))
    app = Flask(__name__)
    KeyGuard(app, store=manager.store, policy=POLICY, hasher=manager.hasher)

    @app.get("/agents")
    def agents() -> dict[str, list[str]]:
        return {"agents": ["triage"]}

    dashboard = Dashboard(manager, usage=MemoryUsage(), **dashboard_options)
    mount_dashboard(app, dashboard)
    app.wsgi_app = UsageRecorderWSGI(app.wsgi_app, dashboard.usage, policy=POLICY)  # type: ignore[method-assign]
    return app
