"""A Starlette API behind keyguard that also receives GitHub's secret-scanning alerts.

GitHub's secret scanning finds keyguard keys pushed to public repositories (once the key
pattern is registered with its partner programme: docs/scanning.md) and POSTs them to
``/security/leaks``; each key whose whole secret matches the store is revoked at once, and
this process stops accepting it immediately (the receiver invalidates the middleware's cache).

Needs: pip install ".[starlette,server,scanning]"
Run:   KEYGUARD_STORE_URL=sqlite:///./keyguard.db uvicorn --factory alert_receiver:create_app
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keyguard import Hasher, KeyStore, RoutePolicy
from keyguard.abuse import AlertASGIApp, AlertReceiver, GitHubKeySet
from keyguard.abuse.signing import GITHUB_KEYS_URL
from keyguard.adapters.asgi import KeyGuardMiddleware
from keyguard.management import KeyManager


async def list_agents(request: Request) -> JSONResponse:
    return JSONResponse({"agents": []})


def create_app(
    store: KeyStore | str | None = None,
    *,
    keys_url: str = GITHUB_KEYS_URL,
    hasher: Hasher | None = None,
) -> Any:
    manager = KeyManager(store or os.environ["KEYGUARD_STORE_URL"], hasher=hasher)
    # GitHub's public keys, fetched when the first alert arrives and cached for an hour.
    receiver = AlertReceiver(manager, github=GitHubKeySet(keys_url))
    app = Starlette(
        routes=[
            Route("/agents", list_agents),
            # The scanner proves itself with its signature, not an API key: a public path.
            Route("/security/leaks", AlertASGIApp(receiver)),
        ]
    )
    policy = RoutePolicy({"GET /agents": "agents:read"}, public=["/security/leaks"])
    guarded = KeyGuardMiddleware(app, store=manager.store, policy=policy, hasher=manager.hasher)
    receiver.on_action = (guarded.verifier.invalidate,)
    return guarded
