"""keyguard for Starlette: the pure ASGI middleware, or a backend for Starlette's own
``AuthenticationMiddleware``.

Two ways in, one contract. :class:`KeyGuardMiddleware` (re-exported from
:mod:`keyguard.adapters.asgi`) is the fast path, and the only one that can add rate-limit
headers to allowed responses. :class:`KeyGuardBackend` plugs into
``AuthenticationMiddleware(app, backend=KeyGuardBackend(...), on_error=keyguard_on_error)`` for
applications already built around it: a denial raises :class:`KeyGuardAuthenticationError`
carrying the :class:`~keyguard.core.decision.Decision`, and :func:`keyguard_on_error` renders it
as the same ``application/problem+json`` response the middleware sends (status, ``code``,
``WWW-Authenticate``, ``Cache-Control: no-store``, ``X-Request-ID``). Either way
``request.user`` is the :class:`~keyguard.core.decision.Principal` and ``request.auth.scopes``
honours wildcards and ``admin``, so ``starlette.authentication.requires`` works unchanged;
:func:`requires_scopes` is the keyguard-flavoured decorator (``all_of``/``any_of``, and
problem+json 401/403 instead of a bare 403).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, ParamSpec, cast

from keyguard.adapters._extras import require_extra

require_extra(__name__, "starlette", "starlette")

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocket

from keyguard.adapters._shared import build_verifier
from keyguard.adapters.asgi import (
    KeyGuardCredentials,
    KeyGuardMiddleware,
    ScopeView,
    forwarded_for,
)
from keyguard.core import decision as d
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ErrorCode
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer, request_id_from
from keyguard.core.scopes import Requirement, all_of
from keyguard.core.store import KeyStore
from keyguard.core.verifier import AuthorizationValue, Verifier, authorize

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI

__all__ = [
    "KeyGuardAuthCredentials",
    "KeyGuardAuthenticationError",
    "KeyGuardBackend",
    "KeyGuardCredentials",
    "KeyGuardMiddleware",
    "check_principal",
    "dashboard_routes",
    "keyguard_on_error",
    "management_routes",
    "mount_dashboard",
    "mount_management",
    "principal_from_scope",
    "problem_response",
    "read_credentials",
    "requires_scopes",
]

_P = ParamSpec("_P")
_AUTHORIZATION = b"authorization"
_REQUEST_ID = b"x-request-id"
_POLICY_VIOLATION = 1008


# -- helpers shared with the FastAPI adapter ------------------------------------------------------
def read_credentials(scope: MutableMapping[str, Any]) -> tuple[AuthorizationValue, bytes | None]:
    """The raw ``Authorization`` value(s) and ``X-Request-ID`` of an ASGI scope.

    Read from the raw header list, exactly as :class:`KeyGuardMiddleware` does, so that two
    ``Authorization`` fields are seen as two (and refused) rather than merged or truncated.
    """
    authorization: list[bytes] = []
    request_id: bytes | None = None
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            authorization.append(value)
        elif name == _REQUEST_ID:
            request_id = value
    if len(authorization) == 1:
        return authorization[0], request_id
    return authorization or None, request_id


def principal_from_scope(scope: MutableMapping[str, Any]) -> Principal | None:
    """The principal keyguard authenticated for this request, if any (middleware or backend)."""
    principal = scope.get("keyguard")
    if isinstance(principal, Principal):
        return principal
    user = scope.get("user")
    return user if isinstance(user, Principal) else None


#: The per-view scope check shared with the verifier (kept under its adapter-facing name).
check_principal = authorize


def problem_response(
    decision: Decision, request_id: str, renderer: ProblemRenderer = DEFAULT_RENDERER
) -> Response:
    """A Starlette response for a denial, byte-for-byte the one the ASGI middleware sends."""
    problem = renderer.render(decision, request_id)
    response = Response(problem.body, status_code=problem.status)
    # The rendered header list is complete (content-type and content-length included) and may
    # repeat a name (rate-limit headers), so it replaces Starlette's rather than merging a dict.
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers]
    return response


# -- AuthenticationMiddleware backend -------------------------------------------------------------
class KeyGuardAuthCredentials(AuthCredentials):
    """``request.auth`` for a key: ``"agents:read" in request.auth.scopes`` applies the key's
    wildcards and ``admin``, so ``starlette.authentication.requires`` understands them."""

    # A read-only view rather than a list: membership must apply wildcard/admin semantics.
    scopes: ScopeView  # type: ignore[assignment]

    def __init__(self, principal: Principal | None) -> None:
        super().__init__()
        self.principal = principal
        self.scopes = ScopeView(principal)


class KeyGuardAuthenticationError(AuthenticationError):
    """A keyguard denial raised inside ``AuthenticationMiddleware``; ``decision`` says why.

    The message is the denial's public detail: never key material.
    """

    def __init__(
        self,
        decision: Decision,
        request_id: str,
        renderer: ProblemRenderer = DEFAULT_RENDERER,
    ) -> None:
        super().__init__(decision.detail)
        self.decision = decision
        self.request_id = request_id
        self.renderer = renderer

    @property
    def status_code(self) -> int:
        return self.decision.status


class KeyGuardBackend(AuthenticationBackend):
    """keyguard as a Starlette ``AuthenticationBackend``.

    ``AuthenticationMiddleware(app, backend=KeyGuardBackend(store=..., policy=policy),
    on_error=keyguard_on_error)``. Extra keyword arguments go to
    :class:`~keyguard.core.verifier.Verifier`.

    With a ``policy`` the policy decides every request, exactly as :class:`KeyGuardMiddleware`
    does (a protected route without a key is a 401, an unlisted one is denied). Without one,
    a request carrying no ``UserKey`` credential passes as anonymous (Starlette's
    ``UnauthenticatedUser``) and views protect themselves with ``requires``/
    :func:`requires_scopes`; a credential that is present but bad is always refused.
    Rate-limit headers on allowed responses, and WebSocket denials answered with an HTTP
    response or close code 1008, need :class:`KeyGuardMiddleware`: a backend cannot touch the
    response, and ``AuthenticationMiddleware`` closes refused WebSockets with 1000.
    """

    def __init__(
        self,
        *,
        verifier: Verifier | None = None,
        store: KeyStore | str | None = None,
        policy: RoutePolicy | None = None,
        renderer: ProblemRenderer = DEFAULT_RENDERER,
        **options: Any,
    ) -> None:
        self.verifier = build_verifier(verifier, store, policy, options)
        self.renderer = renderer

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        scope = conn.scope
        authorization, request_id = read_credentials(scope)
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        decision = await self.verifier.averify(
            authorization,
            method,
            scope["path"],
            peer=scope.get("client"),
            forwarded_for=forwarded_for(scope),
        )
        if decision.allowed:
            principal = decision.principal
            scope["keyguard"] = principal
            if principal is None:  # a public route: no key was looked at
                return None
            # Principal implements BaseUser's protocol (is_authenticated, display_name,
            # identity) structurally; it cannot inherit from it without importing Starlette
            # into core.
            return KeyGuardAuthCredentials(principal), cast(BaseUser, principal)
        if decision.code is ErrorCode.MISSING_API_KEY and self.verifier.policy is None:
            return None
        raise KeyGuardAuthenticationError(decision, request_id_from(request_id), self.renderer)

    def on_error(self, conn: HTTPConnection, exc: AuthenticationError) -> Response:
        """:func:`keyguard_on_error` rendering foreign errors with this backend's renderer."""
        return _on_error(conn, exc, self.renderer)


def keyguard_on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """``on_error`` for ``AuthenticationMiddleware``: the keyguard problem+json response.

    Any other ``AuthenticationError`` (from code around keyguard) is answered as
    ``invalid_api_key`` — its message is not echoed, since it may quote the credential.
    """
    return _on_error(conn, exc, DEFAULT_RENDERER)


def _on_error(
    conn: HTTPConnection, exc: AuthenticationError, renderer: ProblemRenderer
) -> Response:
    if isinstance(exc, KeyGuardAuthenticationError):
        return problem_response(exc.decision, exc.request_id, exc.renderer)
    _, request_id = read_credentials(conn.scope)
    return problem_response(d.INVALID, request_id_from(request_id), renderer)


# -- Starlette's own ``requires`` -----------------------------------------------------------------
async def problem_http_exception(request: Request, exc: Exception) -> Response:
    """An ``HTTPException`` handler that answers 401 and 403 as problem+json.

    Starlette's own ``requires`` raises a bare ``HTTPException(403)`` (plain text, no code, no
    scope names). Register this handler (``exception_handlers={HTTPException:
    problem_http_exception}``) and those answers follow keyguard's contract: 403
    ``insufficient_scope`` (which scope is not known to Starlette, so none is named — use
    :func:`requires_scopes` to name it) and 401 ``missing_api_key``. Other statuses get
    Starlette's usual response.
    """
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for it only
        raise exc
    request_id = request_id_from(request.headers.get("x-request-id"))
    if exc.status_code == 403:
        return problem_response(_SCOPE_NOT_NAMED, request_id)
    if exc.status_code == 401:
        return problem_response(d.MISSING, request_id)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


_SCOPE_NOT_NAMED = d.deny(
    ErrorCode.INSUFFICIENT_SCOPE, "This API key lacks a scope this endpoint requires."
)


# -- per-view decorator --------------------------------------------------------------------------
def requires_scopes(
    *requirements: str | Requirement,
    renderer: ProblemRenderer = DEFAULT_RENDERER,
) -> Callable[[Callable[_P, Any]], Callable[_P, Any]]:
    """Protect one Starlette endpoint: every listed scope/requirement is needed.

    Like ``starlette.authentication.requires`` but with keyguard's requirement trees
    (``requires_scopes(any_of("agents:read", "agents:write"))``) and its error contract: no
    principal is a problem+json 401 ``missing_api_key``, too few scopes a 403
    ``insufficient_scope`` naming what is needed. A WebSocket is closed with 1008. Needs
    :class:`KeyGuardMiddleware` or :class:`KeyGuardBackend` in front. On a route the policy
    marks public no key is checked, so such a view answers 401: do not make it public.
    """
    requirement = all_of(*requirements)

    def decorator(func: Callable[_P, Any]) -> Callable[_P, Any]:
        def denial(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Response | WebSocket | None:
            conn = _connection(func, args, kwargs)
            denied = check_principal(principal_from_scope(conn.scope), requirement)
            if denied is None:
                return None
            if isinstance(conn, WebSocket):
                return conn
            _, request_id = read_credentials(conn.scope)
            return problem_response(denied, request_id_from(request_id), renderer)

        if _is_async(func):

            @functools.wraps(func)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                refused = denial(args, kwargs)
                if isinstance(refused, WebSocket):
                    await refused.close(code=_POLICY_VIOLATION)
                    return None
                if refused is not None:
                    return refused
                return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def sync_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
            refused = denial(args, kwargs)
            if refused is not None:
                return refused
            return func(*args, **kwargs)

        return sync_wrapper

    return decorator


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an async callable object counts
    )


def _connection(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError(f"requires_scopes: {func!r} was not called with a Request or WebSocket")


# -- the key-management API ----------------------------------------------------------------------
def management_routes(api: ManagementAPI) -> list[BaseRoute]:
    """Routes serving ``api`` (a :class:`~keyguard.management.api.ManagementAPI`) at its
    prefix: the prefix itself (``POST /api-keys`` without a trailing slash) and everything
    below it. ``Starlette(routes=[..., *management_routes(api)])``."""
    from starlette.routing import Mount, Route

    app = api.asgi_app()
    return [Route(api.prefix or "/", app), Mount(api.prefix, app=app)]


def mount_management(app: Starlette, api: ManagementAPI) -> None:
    """Serve ``api`` in an existing Starlette application, at ``api.prefix``.

    The API authenticates its callers itself: if a :class:`KeyGuardMiddleware` with a route
    policy protects the application, list ``api.public_paths()`` as public there, or each
    request is verified (and rate-limited) twice.
    """
    app.router.routes.extend(management_routes(api))


# -- the dashboard --------------------------------------------------------------------------------
def dashboard_routes(dashboard: Dashboard) -> list[BaseRoute]:
    """Routes serving ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) at its prefix:
    ``Starlette(routes=[..., *dashboard_routes(dashboard)])``."""
    from starlette.routing import Mount, Route

    app = dashboard.asgi_app()
    return [Route(dashboard.prefix or "/", app), Mount(dashboard.prefix, app=app)]


def mount_dashboard(app: Starlette, dashboard: Dashboard) -> None:
    """Serve ``dashboard`` in an existing Starlette application, at ``dashboard.prefix``.

    The dashboard signs its users in itself (a session cookie, not an ``Authorization``
    header): with a :class:`KeyGuardMiddleware` route policy, list
    ``dashboard.public_paths()`` as public there.
    """
    app.router.routes.extend(dashboard_routes(dashboard))
