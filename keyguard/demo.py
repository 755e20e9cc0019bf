"""The demo service: a small imitation of the platform's API, protected by keyguard.

Every route carries the scope the platform's documentation gives it (``GET /agents`` needs
``agents:read``, ``POST /tasks/{task_id}/execute`` needs ``tasks:execute``...), ``/health`` is
public and unlisted routes are denied. :func:`bootstrap` creates an admin key and a read-only
key on first run and returns their plaintexts once; :func:`create_app` builds the ASGI app (any
ASGI server can run ``keyguard.demo:create_app`` with ``--factory``, or ``keyguard.demo:app``).
``keyguard demo`` (see :func:`run`) does both and starts uvicorn. Key management over HTTP
(:mod:`keyguard.management.api`) is mounted at :data:`MANAGEMENT_PREFIXES`: the library's
default ``/api-keys`` and the platform's own ``/api/v1/auth/keys``; the dashboard
(:mod:`keyguard.dashboard`) at :data:`DASHBOARD_PREFIX`. Every request is counted per key into
the key store (:mod:`keyguard.demo_usage`): the dashboard's charts and ``keyguard usage`` read
those counts.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit.settings import ENV, LimiterSettings
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier
from keyguard.demo_usage import attach_metrics, demo_observer, lifespan, usage_source
from keyguard.stores import DEFAULT_STORE_URL, STORE_URL_ENV, from_url
from keyguard.stores.ratelimit_url import limiter_from_settings, missing_extra

#: (method, path) → scope, following the platform's scopes table.
ROUTES: Mapping[str, str] = {
    "GET /agents": "agents:read",
    "POST /agents": "agents:write",
    "GET /agents/{agent_id}": "agents:read",
    "PUT /agents/{agent_id}": "agents:write",
    "DELETE /agents/{agent_id}": "agents:write",
    "GET /tasks": "tasks:read",
    "GET /tasks/{task_id}": "tasks:read",
    "POST /tasks/{task_id}/execute": "tasks:execute",
    "GET /workflows": "workflows:read",
    "POST /workflows": "workflows:manage",
    "GET /knowledge": "knowledge:read",
    "POST /knowledge": "knowledge:write",
    "GET /runners": "runners:read",
    "POST /runners": "runners:manage",
    "GET /integrations": "integrations:read",
    "POST /integrations": "integrations:write",
    "GET /webhooks": "webhooks:manage",
    "POST /webhooks": "webhooks:manage",
    "GET /whoami": "authenticated",
}
PUBLIC_PATHS = ("/", "/health")
DEMO_ROLE = "keyguard_demo_role"
ROLES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("demo admin key", ("admin",)),
    "read-only": ("demo read-only key", ("*:read",)),
}


#: Where the key-management API is served (it authenticates its callers itself, so the
#: middleware's policy leaves these paths to it).
MANAGEMENT_PREFIXES = ("/api-keys", "/api/v1/auth/keys")
#: Where the dashboard is served (it signs its users in itself, with a session).
DASHBOARD_PREFIX = "/keyguard"


#: Prometheus metrics, when prometheus_client is installed (keep it internal in production).
METRICS_PATH = "/metrics"


def demo_policy() -> RoutePolicy:
    prefixes = (*MANAGEMENT_PREFIXES, DASHBOARD_PREFIX)
    management = [p for prefix in prefixes for p in (prefix, prefix + "/{rest:path}")]
    return RoutePolicy(ROUTES, public=(*PUBLIC_PATHS, METRICS_PATH, *management))


RATELIMIT_URL_ENV = ENV["url"]
#: (:data:`keyguard.dashboard.SECRET_ENV`, spelled here so importing the demo needs no Jinja2.)
DASHBOARD_SECRET_ENV = "KEYGUARD_DASHBOARD_SECRET"  # noqa: S105 - a variable's name


def store_url() -> str:
    return os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL


def demo_limiter(settings: LimiterSettings | None = None) -> Any:
    """The rate limiter: Redis when ``KEYGUARD_RATELIMIT_URL`` names one (counts shared by every
    worker; on failure the ``KEYGUARD_RATELIMIT_MODE`` decides, see
    :mod:`keyguard.core.ratelimit.settings`), else None (the in-process default)."""
    return limiter_from_settings(settings if settings is not None else LimiterSettings.from_env())


@dataclass(frozen=True)
class DemoKeys:
    """Plaintexts of keys created by :func:`bootstrap` (empty when they existed already)."""

    created: dict[str, str]
    existing: dict[str, str]  # role → key id, for keys made on an earlier run

    def __repr__(self) -> str:
        return f"DemoKeys(created={sorted(self.created)}, existing={self.existing})"


def bootstrap(store: KeyStore, *, new_keys: bool = False) -> DemoKeys:
    """Make sure an admin and a read-only demo key exist; return the plaintext of new ones.

    Plaintexts are never stored, so a key made on an earlier run cannot be shown again: pass
    ``new_keys=True`` to revoke the old demo keys and issue fresh ones.
    """
    from keyguard.management.manager import KeyManager

    manager = KeyManager(store)
    existing: dict[str, str] = {}
    for record in manager.iter_all(status="active"):
        role = record.metadata.get(DEMO_ROLE)
        if isinstance(role, str) and role in ROLES and role not in existing:
            if new_keys:
                manager.revoke(
                    record.key_id,
                    reason="replaced by keyguard demo --new-keys",
                    actor="keyguard demo",
                )
            else:
                existing[role] = record.key_id
    created: dict[str, str] = {}
    for role, (name, scopes) in ROLES.items():
        if role not in existing:
            made = manager.create(name, scopes, metadata={DEMO_ROLE: role}, actor="keyguard demo")
            created[role] = made.plaintext
    return DemoKeys(created, existing)


class _Data:
    """In-memory demo content, shared by the routes of one app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids = itertools.count(3)
        self.agents: dict[str, dict[str, Any]] = {
            "1": {"id": "1", "name": "triage-bot", "status": "running"},
            "2": {"id": "2", "name": "deploy-helper", "status": "idle"},
        }
        self.tasks: dict[str, dict[str, Any]] = {
            "1": {"id": "1", "agent_id": "1", "status": "done"},
        }
        self.collections: dict[str, list[dict[str, Any]]] = {
            "workflows": [{"id": "1", "name": "nightly-report"}],
            "knowledge": [{"id": "1", "title": "On-call handbook"}],
            "runners": [{"id": "1", "name": "runner-eu-1", "status": "healthy"}],
            "integrations": [{"id": "1", "kind": "github"}],
            "webhooks": [{"id": "1", "url": "https://example.invalid/hook"}],
        }

    def next_id(self) -> str:
        with self.lock:
            return str(next(self.ids))


def create_app(
    *,
    verifier: Verifier | None = None,
    store: KeyStore | str | None = None,
    **options: Any,
) -> Any:
    """The demo ASGI app (Starlette) with keyguard in front.

    ``store`` defaults to ``KEYGUARD_STORE_URL`` (or the SQLite default); ``options`` go to the
    :class:`~keyguard.core.verifier.Verifier`.
    """
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigurationError(
            "the demo needs Starlette and uvicorn: pip install 'keyguard[server]'"
        ) from exc

    from keyguard.adapters.asgi import KeyGuardMiddleware
    from keyguard.adapters.starlette import dashboard_routes

    if verifier is None:
        if "limiter" not in options and options.get("rate_limits", True) is not None:
            limiter = demo_limiter()
            if limiter is not None:
                options["limiter"] = limiter
        store = from_url(store or store_url()) if not isinstance(store, KeyStore) else store
        if "observer" not in options:
            options["observer"] = demo_observer(store)
        verifier = Verifier(store, policy=demo_policy(), **options)
    data = _Data()
    started = time.time()

    def principal(request: Request) -> Any:
        return request.scope["keyguard"]

    async def index(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": "keyguard demo",
                "auth": "send 'Authorization: UserKey <key>'",
                "routes": dict(ROUTES),
                "public": list(PUBLIC_PATHS),
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "uptime_s": round(time.time() - started, 1), "pid": os.getpid()}
        )

    async def whoami(request: Request) -> JSONResponse:
        p = principal(request)
        return JSONResponse(
            {"key_id": p.key_id, "name": p.name, "owner": p.owner, "scopes": sorted(p.scopes)}
        )

    async def list_agents(request: Request) -> JSONResponse:
        return JSONResponse({"agents": list(data.agents.values())})

    async def body(request: Request) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        return payload if isinstance(payload, dict) else {}

    async def create_agent(request: Request) -> JSONResponse:
        payload = await body(request)
        name = payload.get("name")
        if not isinstance(name, str) or not name.strip():
            return JSONResponse({"error": "a JSON body with a non-empty 'name' is required"}, 422)
        agent = {"id": data.next_id(), "name": name.strip()[:100], "status": "idle"}
        data.agents[agent["id"]] = agent
        return JSONResponse(agent, 201)

    async def agent(request: Request) -> JSONResponse:
        agent_id = request.path_params["agent_id"]
        found = data.agents.get(agent_id)
        if found is None:
            return JSONResponse({"error": "no such agent"}, 404)
        if request.method == "DELETE":
            data.agents.pop(agent_id, None)
            return JSONResponse({"deleted": agent_id})
        if request.method == "PUT":
            payload = await body(request)
            if isinstance(payload.get("name"), str) and payload["name"].strip():
                found["name"] = payload["name"].strip()[:100]
        return JSONResponse(found)

    async def list_tasks(request: Request) -> JSONResponse:
        return JSONResponse({"tasks": list(data.tasks.values())})

    async def task(request: Request) -> JSONResponse:
        found = data.tasks.get(request.path_params["task_id"])
        if found is None:
            return JSONResponse({"error": "no such task"}, 404)
        return JSONResponse(found)

    async def execute(request: Request) -> JSONResponse:
        task_id = request.path_params["task_id"]
        run = {
            "task_id": task_id,
            "run_id": data.next_id(),
            "status": "queued",
            "by": principal(request).key_id,
        }
        return JSONResponse(run, 202)

    def collection(name: str) -> Any:
        async def handler(request: Request) -> JSONResponse:
            items = data.collections[name]
            if request.method == "POST":
                item = {
                    "id": data.next_id(),
                    **{
                        k: v
                        for k, v in (await body(request)).items()
                        if isinstance(k, str) and k != "id"
                    },
                }
                items.append(item)
                return JSONResponse(item, 201)
            return JSONResponse({name: items})

        return handler

    routes: list[Any] = [
        Route("/", index),
        Route("/health", health),
        Route("/whoami", whoami),
        Route("/agents", list_agents, methods=["GET"]),
        Route("/agents", create_agent, methods=["POST"]),
        Route("/agents/{agent_id}", agent, methods=["GET", "PUT", "DELETE"]),
        Route("/tasks", list_tasks, methods=["GET"]),
        Route("/tasks/{task_id}", task, methods=["GET"]),
        Route("/tasks/{task_id}/execute", execute, methods=["POST"]),
    ]
    for name in ("workflows", "knowledge", "runners", "integrations", "webhooks"):
        routes.append(Route(f"/{name}", collection(name), methods=["GET", "POST"]))
    routes.extend(management_routes(verifier))
    dashboard = demo_dashboard(verifier)
    routes.extend(dashboard_routes(dashboard))
    from keyguard.observability.exposition import optional_metrics

    metrics = optional_metrics(verifier)
    if metrics is not None:
        routes.append(Route(METRICS_PATH, metrics.asgi_app(), methods=["GET"]))
        attach_metrics(verifier, metrics)
    from keyguard.demo_detectors import attach_detectors

    detectors = attach_detectors(verifier)  # anomalies logged and counted; nothing suspended
    app = Starlette(routes=routes, lifespan=lifespan(verifier))
    app.add_middleware(KeyGuardMiddleware, verifier=verifier)
    app.state.keyguard = verifier
    app.state.dashboard = dashboard
    app.state.metrics = metrics  # fed by keyguard's events (attach_metrics)
    app.state.detectors = detectors
    return app


def demo_dashboard(verifier: Verifier) -> Any:
    """The dashboard, acting through a management API that shares ``verifier``, with the usage
    counted into the key store (:mod:`keyguard.demo_usage`)."""
    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI
    from keyguard.management.manager import KeyManager

    manager = KeyManager(verifier.store, key_format=verifier.key_format, hasher=verifier.hasher)
    api = ManagementAPI(manager, verifier=verifier, prefix=MANAGEMENT_PREFIXES[0])
    return Dashboard(api, prefix=DASHBOARD_PREFIX, usage=usage_source(verifier))


def management_routes(verifier: Verifier) -> list[Any]:
    """Starlette routes serving the key-management API at each of :data:`MANAGEMENT_PREFIXES`,
    authenticating through ``verifier`` (so rate limits and the brute-force guard are shared
    with the rest of the demo)."""
    from keyguard.adapters.starlette import management_routes as routes_for
    from keyguard.management.api import ManagementAPI
    from keyguard.management.manager import KeyManager

    manager = KeyManager(verifier.store, key_format=verifier.key_format, hasher=verifier.hasher)
    return [
        route
        for prefix in MANAGEMENT_PREFIXES
        for route in routes_for(ManagementAPI(manager, verifier=verifier, prefix=prefix))
    ]


def print_banner(keys: DemoKeys, base_url: str, out: TextIO = sys.stdout) -> None:
    """Print each new key once, on a line naming its role, and curl commands to try."""
    print(f"keyguard demo — store: {store_url_redacted()}", file=out)
    if keys.created:
        print("New demo keys (shown once; store them now, they will not be shown again):", file=out)
        for role, plaintext in keys.created.items():
            print(f"  {role} key: {plaintext}", file=out)
    for role, key_id in keys.existing.items():
        print(
            f"  {role} key: created on an earlier run (id {key_id}); "
            "run 'keyguard demo --new-keys' to replace it",
            file=out,
        )
    admin = keys.created.get("admin", "<admin key>")
    reader = keys.created.get("read-only", "<read-only key>")
    print(f"\nDashboard: {base_url}{DASHBOARD_PREFIX} (sign in with the admin key)", file=out)
    print("\nTry:", file=out)
    print(f"  curl -s {base_url}/health", file=out)
    print("  # rate limits per key: 20 requests / 10 s, 100 / minute, 5,000 / day", file=out)
    print(f"  curl -s {base_url}/agents                       # 401 missing_api_key", file=out)
    print(f'  curl -s -H "Authorization: UserKey {reader}" {base_url}/agents', file=out)
    print(
        f'  curl -s -X POST -H "Authorization: UserKey {reader}" '
        f'-d \'{{"name": "x"}}\' {base_url}/agents   # 403 insufficient_scope',
        file=out,
    )
    print(
        f'  curl -s -X POST -H "Authorization: UserKey {admin}" '
        f'-d \'{{"name": "x"}}\' {base_url}/agents',
        file=out,
    )
    out.flush()


def store_url_redacted() -> str:
    from keyguard.stores import redact_url

    return redact_url(store_url())


def shared_limiter_url(store_url: str) -> str | None:
    """The rate-limit URL a Redis key store implies (the same server or Cluster, and the same
    prefix), or None."""
    parts = urlsplit(store_url)
    if parts.scheme.lower() not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        return None
    keep = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "prefix"]
    return urlunsplit(parts._replace(query=urlencode(keep)))


def run(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    new_keys: bool = False,
    url: str | None = None,
    ratelimit: LimiterSettings | None = None,
    out: TextIO = sys.stdout,
    banner: Callable[[DemoKeys, str, TextIO], None] | None = None,
) -> None:
    """Bootstrap the demo keys, print them (with ``banner``, default :func:`print_banner`),
    and serve the demo with uvicorn.

    ``ratelimit`` defaults to the ``KEYGUARD_RATELIMIT_*`` environment variables (see
    :mod:`keyguard.core.ratelimit.settings`); worker processes get it through the same
    variables. Everything the workers will need (uvicorn, the store, the limiter's driver) is
    checked here, before any worker starts, so a missing package is one error line, not a
    worker crash loop.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError("the demo needs uvicorn: pip install 'keyguard[server]'") from exc
    try:
        import jinja2  # noqa: F401 - the dashboard's templates
    except ImportError as exc:
        raise ConfigurationError(
            "the demo's dashboard needs Jinja2: pip install 'keyguard[server]'"
        ) from exc
    if workers < 1:
        raise ConfigurationError("--workers must be at least 1")
    if not 0 < port < 65536:
        raise ConfigurationError("--port must be between 1 and 65535")
    url = url or store_url()
    if url.startswith("memory:") and workers > 1:
        raise ConfigurationError(
            "a memory:// store lives in one process; use SQLite or Redis with --workers > 1"
        )
    if ratelimit is None:
        ratelimit = LimiterSettings.from_env()
    if ratelimit.url is None:
        shared = shared_limiter_url(url)
        if shared is not None:
            # One Redis serves keys and rate-limit counts unless a limiter URL is given.
            ratelimit = dataclasses.replace(ratelimit, url=shared)
    missing = missing_extra(ratelimit)
    if missing is not None:
        raise ConfigurationError(missing)
    store = from_url(url)
    limiter = demo_limiter(ratelimit)
    # Worker processes build their app from the environment: make it name this store and
    # this limiter.
    os.environ[STORE_URL_ENV] = url
    os.environ.update(ratelimit.environ())
    if workers > 1 and not os.environ.get(DASHBOARD_SECRET_ENV):
        # Every worker must sign dashboard sessions with the same secret.
        os.environ[DASHBOARD_SECRET_ENV] = secrets.token_urlsafe(32)
    if workers > 1 and ratelimit.url is None:
        print(
            f"note: with --workers {workers} and no {RATELIMIT_URL_ENV}=redis://..., each worker "
            "counts rate limits on its own",
            file=out,
        )
    keys = bootstrap(store, new_keys=new_keys)
    shown_host = f"[{host}]" if ":" in host else host
    (banner or print_banner)(keys, f"http://{shown_host}:{port}", out)
    if workers == 1:
        options = {} if limiter is None else {"limiter": limiter}
        uvicorn.run(create_app(store=store, **options), host=host, port=port, log_level="info")
    else:
        store.close()
        uvicorn.run(
            "keyguard.demo:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
        )


def __getattr__(name: str) -> Any:
    # ``keyguard.demo:app`` for ASGI servers, built on first access so importing this module
    # opens no store.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
