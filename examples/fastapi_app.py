"""A FastAPI service protected by keyguard, shaped like the agent platform's API.

Needs: pip install ".[fastapi,server]"   (from the repository root)
Run:   python -m examples.fastapi_app

Each route declares the scope it needs with a dependency; the dependency returns the caller's
:class:`~keyguard.Principal`. ``guard.install(app)`` renders denials as problem+json and
documents the ``UserKey`` scheme and every operation's scopes in ``/docs`` (paste
``UserKey kg_…`` into *Authorize*). Run it with a throw-away in-memory store and a demo key
printed at start-up::

    python -m examples.fastapi_app
    curl -H "Authorization: UserKey <key>" http://127.0.0.1:8000/agents

or against a real store (create keys with the ``keyguard`` CLI)::

    KEYGUARD_STORE_URL=sqlite:///./keys.db uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI

from keyguard import Principal, Verifier
from keyguard.adapters.fastapi import KeyGuard, RequireScopes

# Dependencies built without a guard find the one installed on the app at request time, so the
# routes can live at module level while create_app() chooses the store.
CanReadAgents = Annotated[Principal, Depends(RequireScopes("agents:read"))]
CanWriteAgents = Annotated[Principal, Depends(RequireScopes("agents:write"))]
CanReadTasks = Annotated[Principal, Depends(RequireScopes("tasks:read"))]
CanExecuteTasks = Annotated[Principal, Depends(RequireScopes("tasks:execute"))]

router = APIRouter()

AGENTS: list[dict[str, Any]] = [{"id": "agent-1", "name": "triage"}]
TASKS: list[dict[str, Any]] = [{"id": "task-1", "agent": "agent-1", "status": "done"}]


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness probe: public, no key needed."""
    return {"status": "ok"}


@router.get("/agents")
async def list_agents(principal: CanReadAgents) -> dict[str, Any]:
    """List agents."""
    return {"agents": AGENTS, "key_id": principal.key_id}


@router.post("/agents", status_code=201)
async def create_agent(principal: CanWriteAgents) -> dict[str, Any]:
    """Create an agent, owned by the key's owner."""
    agent = {"id": f"agent-{len(AGENTS) + 1}", "name": "new", "owner": principal.owner}
    AGENTS.append(agent)
    return agent


@router.get("/tasks")
async def list_tasks(principal: CanReadTasks) -> dict[str, Any]:
    """Task history."""
    return {"tasks": TASKS, "key_id": principal.key_id}


@router.post("/tasks/{task_id}/execute", status_code=202)
async def execute_task(task_id: str, principal: CanExecuteTasks) -> dict[str, Any]:
    """Queue a task for execution."""
    return {"task_id": task_id, "status": "queued", "requested_by": principal.key_id}


def create_app(verifier: Verifier | None = None) -> FastAPI:
    """The app. ``verifier`` (tests, custom wiring) replaces the store from
    ``KEYGUARD_STORE_URL`` (default ``memory://``); give it no route policy, or one that lists
    these routes: the dependencies apply a guard's policy too."""
    if verifier is not None:
        guard = KeyGuard(verifier=verifier)
    else:
        guard = KeyGuard(store=os.environ.get("KEYGUARD_STORE_URL") or "memory://")
    app = FastAPI(title="Agent platform (keyguard example)")
    app.include_router(router)
    guard.install(app)
    return app


app = create_app()


if __name__ == "__main__":  # pragma: no cover - manual demo
    import uvicorn

    from keyguard.management.manager import KeyManager
    from keyguard.stores import from_url

    store = from_url("memory://")
    demo = KeyManager(store).create("demo", ["agents:read", "tasks:read"])
    # A demo convenience for a throw-away in-memory store: never print real keys.
    print(f"demo key (agents:read, tasks:read): {demo.plaintext}")
    uvicorn.run(create_app(Verifier(store)))
