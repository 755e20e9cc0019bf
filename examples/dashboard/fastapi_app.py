"""The key-management dashboard in a FastAPI app, beside the management API, behind keyguard.

Needs: pip install ".[fastapi,dashboard,server]"   (from the repository root)
Run:   KEYGUARD_DASHBOARD_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \
       uvicorn --factory examples.dashboard.fastapi_app:create_app
Open:  http://127.0.0.1:8000/keyguard and sign in with a key holding admin or keys:manage
       (keyguard keys create ops --scope admin).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from keyguard import RoutePolicy, Verifier
from keyguard.adapters.fastapi import KeyGuardMiddleware, mount_dashboard, mount_management
from keyguard.dashboard import Dashboard, MemoryUsage, UsageRecorder
from keyguard.management import KeyManager
from keyguard.management.api import ManagementAPI

POLICY = RoutePolicy(
    {"GET /agents": "agents:read"},
    # The management API and the dashboard sign their callers in themselves.
    public=["/api-keys", "/api-keys/{rest:path}", "/keyguard", "/keyguard/{rest:path}"],
)


def create_app(store: str | None = None, **dashboard_options: Any) -> Any:
    manager = KeyManager(store or os.environ.get("KEYGUARD_STORE_URL", "sqlite:///./keyguard.db"))
    # One verifier for the app, the API and the dashboard's sign-in: one brute-force guard.
    verifier = Verifier(manager.store, policy=POLICY, hasher=manager.hasher)
    api = ManagementAPI(manager, verifier=verifier)  # at /api-keys
    dashboard = Dashboard(api, usage=MemoryUsage(), **dashboard_options)  # at /keyguard

    app = FastAPI()

    @app.get("/agents")
    async def agents() -> dict[str, list[str]]:
        return {"agents": ["triage"]}

    app.add_middleware(KeyGuardMiddleware, verifier=verifier)
    mount_management(app, api)
    mount_dashboard(app, dashboard)
    # Usage charts from this process's requests (a real usage source replaces MemoryUsage).
    return UsageRecorder(app, dashboard.usage, policy=POLICY)
