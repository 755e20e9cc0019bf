"""A platform-like Flask API protected by keyguard: one route policy, one extension.

Needs: pip install ".[flask]"   (from the repository root)
Run:   python -m examples.flask_app

Run it with a throw-away in-memory store and a demo key printed at start-up::

    python -m examples.flask_app
    curl -H "Authorization: UserKey <key>" http://127.0.0.1:5000/agents

or against a real store (create keys with the ``keyguard`` CLI)::

    KEYGUARD_STORE_URL=sqlite:///./keys.db flask --app examples.flask_app run
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from keyguard import RoutePolicy, Verifier
from keyguard.adapters.flask import EXTENSION_KEY, KeyGuard, current_principal

POLICY = RoutePolicy(
    {
        "GET /agents": "agents:read",
        "POST /agents": "agents:write",
        "GET /tasks": "tasks:read",
        "POST /tasks/{task_id}/execute": "tasks:execute",
    },
    public=["/health"],
)


def create_app(verifier: Verifier | None = None) -> Flask:
    """The app. ``verifier`` (tests, custom wiring) should carry :data:`POLICY`; without it
    the store comes from ``KEYGUARD_STORE_URL`` (default ``memory://``)."""
    app = Flask(__name__)
    if verifier is None:
        app.config["KEYGUARD_STORE_URL"] = os.environ.get("KEYGUARD_STORE_URL", "memory://")
        KeyGuard(app, policy=POLICY)
    else:
        KeyGuard(app, verifier=verifier)

    agents: list[dict[str, Any]] = [{"id": "agt_1", "name": "triage"}]
    tasks: list[dict[str, Any]] = []

    def caller() -> str | None:
        principal = current_principal()
        return principal.key_id if principal is not None else None

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/agents")
    def list_agents() -> dict[str, Any]:
        return {"agents": agents, "key_id": caller()}

    @app.post("/agents")
    def create_agent() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True) or {}
        agent = {"id": f"agt_{len(agents) + 1}", "name": str(body.get("name", "unnamed"))}
        agents.append(agent)
        return {"agent": agent, "key_id": caller()}, 201

    @app.get("/tasks")
    def list_tasks() -> dict[str, Any]:
        return {"tasks": tasks, "key_id": caller()}

    @app.post("/tasks/<task_id>/execute")
    def execute_task(task_id: str) -> tuple[dict[str, Any], int]:
        task = {"id": task_id, "status": "queued", "by": caller()}
        tasks.append(task)
        return {"task": task, "key_id": caller()}, 202

    return app


app = create_app()


if __name__ == "__main__":  # pragma: no cover - manual demo
    from keyguard.management.manager import KeyManager

    store = app.extensions[EXTENSION_KEY].verifier.store
    demo = KeyManager(store).create("demo", ["agents:read", "tasks:read"])
    # A demo convenience for a throw-away in-memory store: never print real keys.
    print(f"demo key (agents:read, tasks:read): {demo.plaintext}")
    app.run()
