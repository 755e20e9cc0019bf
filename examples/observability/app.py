"""keyguard with events and usage counting, in a Starlette app.

Needs: pip install ".[server]"   (from the repository root)
Run:   uvicorn --factory examples.observability.app:create_app
Then:  keyguard usage <key id>   (or ``report(<key id>)`` below)

Every request produces one event (logged on ``keyguard.events``; a revoked, expired or
suspended key used produces a warning and calls ``on_refused_key``), and is counted per key,
day, status class and route in the key store, flushed every 5 seconds and when the server
stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyguard import RoutePolicy
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.management import KeyManager
from keyguard.observability import (
    CallbackSink,
    Emitter,
    Event,
    EventKind,
    LoggingSink,
    Observer,
    UsageCounter,
)
from keyguard.stores import from_url

STORE_URL = os.environ.get("KEYGUARD_STORE_URL", "sqlite:///./keyguard.db")
POLICY = RoutePolicy({"GET /agents": "agents:read", "GET /agents/{agent_id}": "agents:read"})


def on_refused_key(event: Event) -> None:
    """A key that ended (revoked, expired, suspended) is still in use somewhere."""
    logging.getLogger("app.security").warning(
        "key %s of %s used after its end (%s) from %s",
        event.key_id,
        event.owner,
        event.code,
        event.client,
    )


def create_app(store_url: str = STORE_URL) -> Starlette:
    store = from_url(store_url)
    events = Emitter(
        [
            LoggingSink(),  # one line per event on "keyguard.events", fields in extra=
            CallbackSink(on_refused_key, kinds=[EventKind.KEY_REFUSED]),
        ]
    )
    usage = UsageCounter(store)  # per key, day, status class and route; flushed every 5 s
    observer = Observer(events=events, usage=usage)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        observer.close()  # a clean shutdown writes the last counts and delivers the last events

    async def agents(request: Request) -> JSONResponse:
        return JSONResponse({"agents": ["triage"]})

    async def agent(request: Request) -> JSONResponse:
        agent_id = request.path_params["agent_id"]
        if agent_id != "triage":
            return JSONResponse({"error": "no such agent"}, 404)
        return JSONResponse({"id": agent_id})

    app = Starlette(
        routes=[Route("/agents", agents), Route("/agents/{agent_id}", agent)], lifespan=lifespan
    )
    app.add_middleware(KeyGuardMiddleware, store=store, policy=POLICY, observer=observer)
    app.state.observer = observer
    return app


def report(key_id: str, store_url: str = STORE_URL) -> list[str]:
    """One line per day of the last week: the key's requests by status class."""
    with KeyManager(store_url) as manager:
        usage = manager.usage(key_id, days=7)
    return [
        f"{day.day}  {day.total:5d}  " + " ".join(f"{c}={n}" for c, n in day.by_status.items())
        for day in usage.days
    ]


def simpler(app: Any, store_url: str = STORE_URL) -> Any:
    """The same with the adapter's own options: log every event, count usage in the store."""
    return KeyGuardMiddleware(app, store=store_url, policy=POLICY, events=True, usage=True)
