"""A Starlette service behind keyguard's middleware, using Starlette's own ``requires``.

Needs: pip install ".[starlette,server]"   (from the repository root)
Run:   python -m examples.starlette_app

:class:`KeyGuardMiddleware` authenticates every request except the public ``/health``: a
missing or bad key is answered with problem+json before any view runs. The views then state
their scopes with ``starlette.authentication.requires``, which sees keyguard's scopes through
``request.auth.scopes`` (``admin`` and wildcards such as ``agents:*`` count), and use
``request.user`` (the key's :class:`~keyguard.Principal`). ``requires`` answers a missing scope
with a plain 403; :func:`~keyguard.adapters.starlette.requires_scopes`, used on the execute
route, answers with keyguard's problem+json 403 instead. Run it with a throw-away in-memory
store and a demo key printed at start-up::

    python -m examples.starlette_app
    curl -H "Authorization: UserKey <key>" http://127.0.0.1:8000/agents

or against a real store (create keys with the ``keyguard`` CLI)::

    KEYGUARD_STORE_URL=sqlite:///./keys.db uvicorn examples.starlette_app:app
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyguard import RoutePolicy, Verifier
from keyguard.adapters.starlette import (
    KeyGuardMiddleware,
    problem_http_exception,
    requires_scopes,
)

# Authentication for everything but /health; scopes are declared on the views below.
POLICY = RoutePolicy(public=["/health"], default="authenticated")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@requires("agents:read")
async def list_agents(request: Request) -> JSONResponse:
    return JSONResponse({"agents": [], "key_id": request.user.identity})


@requires("agents:write")
async def create_agent(request: Request) -> JSONResponse:
    return JSONResponse({"created_by": request.user.display_name}, status_code=201)


@requires("tasks:read")
async def list_tasks(request: Request) -> JSONResponse:
    return JSONResponse({"tasks": [], "key_id": request.user.identity})


@requires_scopes("tasks:execute")
async def execute_task(request: Request) -> JSONResponse:
    task_id = request.path_params["task_id"]
    return JSONResponse({"task_id": task_id, "status": "queued"}, status_code=202)


routes = [
    Route("/health", health),
    Route("/agents", list_agents, methods=["GET"]),
    Route("/agents", create_agent, methods=["POST"]),
    Route("/tasks", list_tasks, methods=["GET"]),
    Route("/tasks/{task_id}/execute", execute_task, methods=["POST"]),
]


def create_app(verifier: Verifier | None = None) -> Starlette:
    """The app. ``verifier`` (tests, custom wiring) should carry :data:`POLICY`; without it
    the store comes from ``KEYGUARD_STORE_URL`` (default ``memory://``)."""
    if verifier is not None:
        guard = Middleware(KeyGuardMiddleware, verifier=verifier)
    else:
        store = os.environ.get("KEYGUARD_STORE_URL") or "memory://"
        guard = Middleware(KeyGuardMiddleware, store=store, policy=POLICY)
    # Starlette's own ``requires`` raises a bare 403; this handler answers it as problem+json.
    return Starlette(
        routes=routes,
        middleware=[guard],
        exception_handlers={HTTPException: problem_http_exception},
    )


app = create_app()


if __name__ == "__main__":  # pragma: no cover - manual demo
    import uvicorn

    from keyguard.management.manager import KeyManager
    from keyguard.stores import from_url

    store = from_url("memory://")
    demo = KeyManager(store).create("demo", ["agents:read", "tasks:read"])
    # A demo convenience for a throw-away in-memory store: never print real keys.
    print(f"demo key (agents:read, tasks:read): {demo.plaintext}")
    uvicorn.run(create_app(Verifier(store, policy=POLICY)))
