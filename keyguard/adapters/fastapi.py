"""keyguard for FastAPI: scope dependencies, problem+json denials and OpenAPI security docs.

A :class:`KeyGuard` holds one verifier and renderer; ``guard.require("agents:read")`` is a
dependency (``Depends(...)`` or ``Security(...)``) that returns the caller's
:class:`~keyguard.core.decision.Principal`. It works with or without
:class:`~keyguard.adapters.asgi.KeyGuardMiddleware`: when the middleware has already
authenticated the request, the dependency only checks scopes against ``scope["keyguard"]`` (no
second verification); otherwise it verifies the request itself with ``averify``, so store I/O
never blocks the event loop. A denial raises :class:`KeyGuardHTTPException`, an
``HTTPException`` whose status and headers (``WWW-Authenticate``, ``Cache-Control: no-store``,
``X-Request-ID``, ``Retry-After``) are already right, so FastAPI's default handler degrades
gracefully; the handler :meth:`KeyGuard.install` registers renders the full problem+json body,
byte-for-byte what the middleware sends. :meth:`KeyGuard.install` also documents security in
the OpenAPI schema: the ``UserKey`` apiKey scheme (header ``Authorization``, so Swagger UI's
*Authorize* dialog takes ``UserKey kg_…`` verbatim), ``security`` requirements whose scope lists
are exact alternatives, and an ``x-required-scopes`` list on every protected operation, derived
from dependencies and from the middleware's route policy.

Dependencies built without a guard (``RequireScopes("agents:read")``) find their verifier at
request time: the guard installed on the application, else the ``KeyGuardMiddleware`` in its
middleware stack; with neither they fail closed (500, :class:`ConfigurationError`).
"""

from __future__ import annotations

import inspect
import itertools
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, NoReturn

from keyguard.adapters._extras import require_extra

require_extra(__name__, "fastapi", "fastapi", "starlette")

from fastapi import FastAPI, Security
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException, WebSocketException
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, SecurityScopes
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from keyguard.adapters._shared import build_verifier
from keyguard.adapters.asgi import KeyGuardCredentials, KeyGuardMiddleware, forwarded_for
from keyguard.adapters.starlette import (
    check_principal,
    principal_from_scope,
    read_credentials,
)
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import DEFAULT_RENDERER, Problem, ProblemRenderer, request_id_from
from keyguard.core.scopes import (
    AUTHENTICATED,
    DENY,
    AllOf,
    AnyOf,
    Requirement,
    Scope,
    all_of,
)
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier

if TYPE_CHECKING:
    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI

__all__ = [
    "DEFAULT_SCHEME_DESCRIPTION",
    "KeyGuard",
    "KeyGuardHTTPException",
    "PolicyCheck",
    "RequireScopes",
    "UserKeyHeader",
    "annotate_openapi",
    "install_exception_handlers",
    "install_openapi",
    "keyguard_exception_handler",
    "mount_dashboard",
    "mount_management",
]

SCHEME_NAME: Final = "UserKey"
DEFAULT_SCHEME_DESCRIPTION: Final = (
    "Send `Authorization: UserKey <key>`. In the *Authorize* dialog paste the whole value, "
    "`UserKey kg_…`, not the key alone. Each operation lists the scopes it requires "
    "(`x-required-scopes`); `admin` and wildcard grants such as `agents:*` satisfy them."
)
_POLICY_VIOLATION: Final = 1008
# Header names the HTTPException must not carry: FastAPI's default handler writes its own body.
_BODY_HEADERS: Final = frozenset({"content-type", "content-length"})
# Beyond this many alternatives an operation's ``security`` lists just the scheme.
_MAX_ALTERNATIVES: Final = 16
_PROBLEM_SCHEMA: Final = "KeyguardProblem"


# -- the OpenAPI security scheme -----------------------------------------------------------------
class UserKeyHeader(APIKeyHeader):
    """The ``UserKey`` security scheme: an OpenAPI ``apiKey`` in the ``Authorization`` header.

    The value is the whole header, ``UserKey <key>``, which is exactly what Swagger UI sends
    after a user pastes it into *Authorize*. As a dependency it returns that header (or
    ``None``) and never refuses on its own: keyguard's dependencies decide, with keyguard's
    error contract.
    """

    def __init__(
        self,
        *,
        scheme_name: str = SCHEME_NAME,
        description: str = DEFAULT_SCHEME_DESCRIPTION,
    ) -> None:
        super().__init__(
            name="Authorization",
            scheme_name=scheme_name,
            description=description,
            auto_error=False,
        )

    async def __call__(self, request: HTTPConnection) -> str | None:
        return request.headers.get("authorization")


DEFAULT_SCHEME: Final = UserKeyHeader()


# -- denials ------------------------------------------------------------------------------------
class KeyGuardHTTPException(HTTPException):
    """A keyguard denial as an ``HTTPException``: ``decision`` says why, ``problem`` is the
    rendered problem+json response.

    ``status_code`` and ``headers`` (``WWW-Authenticate``, ``Cache-Control``, ``X-Request-ID``,
    ``Retry-After``, rate-limit headers) are set even without keyguard's handler installed;
    ``detail`` is the denial's public detail, never key material.
    """

    def __init__(self, decision: Decision, problem: Problem) -> None:
        headers = {k: v for k, v in problem.headers if k not in _BODY_HEADERS}
        super().__init__(status_code=problem.status, detail=decision.detail, headers=headers)
        self.decision = decision
        self.problem = problem


async def keyguard_exception_handler(request: Request, exc: Exception) -> Response:
    """Render a :class:`KeyGuardHTTPException` as the shared problem+json response."""
    if not isinstance(exc, KeyGuardHTTPException):  # pragma: no cover - registered for it only
        raise exc
    problem = exc.problem
    response = Response(problem.body, status_code=problem.status)
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers]
    return response


def install_exception_handlers(app: FastAPI) -> None:
    """Render keyguard denials from dependencies as problem+json (status, code, headers
    identical to :class:`~keyguard.adapters.asgi.KeyGuardMiddleware`)."""
    app.add_exception_handler(KeyGuardHTTPException, keyguard_exception_handler)


# -- dependencies --------------------------------------------------------------------------------
class _Dependency:
    """Shared machinery of :class:`RequireScopes` and :class:`PolicyCheck`.

    FastAPI reads a dependency's parameters from its signature; each instance publishes its
    own (``__signature__``) so that its nested ``Security(scheme, scopes=...)`` carries *its*
    scopes into the OpenAPI document without any post-processing.
    """

    __signature__: inspect.Signature

    def __init__(
        self,
        requirement: Requirement | None,
        guard: KeyGuard | None,
        verifier: Verifier | None,
    ) -> None:
        if guard is not None and verifier is not None:
            raise ConfigurationError("pass guard= or verifier=, not both")
        if verifier is not None:
            guard = KeyGuard(verifier=verifier)
        self.requirement = requirement
        self.guard = guard
        self._extra: dict[tuple[str, ...], Requirement] = {}
        scheme = guard.scheme if guard is not None else DEFAULT_SCHEME
        alternatives = _alternatives(requirement) if requirement is not None else [()]
        # FastAPI ANDs the scopes of one security entry: only a single alternative fits there
        # (annotate_openapi lists any_of alternatives properly).
        single = alternatives is not None and len(alternatives) == 1
        native = list(alternatives[0]) if alternatives and single else []
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter("request", kind, annotation=HTTPConnection),
                inspect.Parameter("security_scopes", kind, annotation=SecurityScopes),
                inspect.Parameter("response", kind, annotation=Response),
                inspect.Parameter(
                    "authorization",
                    kind,
                    annotation=str | None,
                    default=Security(scheme, scopes=native),
                ),
            ]
        )

    def requirement_for(self, extra: list[str] | tuple[str, ...]) -> Requirement | None:
        """This dependency's requirement plus scopes from an enclosing ``Security(scopes=)``."""
        if not extra:
            return self.requirement
        key = tuple(extra)
        combined = self._extra.get(key)
        if combined is None:
            parts: list[str | Requirement] = list(key)
            if self.requirement is not None and self.requirement is not AUTHENTICATED:
                parts.insert(0, self.requirement)
            combined = self._extra[key] = all_of(*parts)
        return combined

    async def _check(
        self, request: HTTPConnection, extra: list[str], response: Response
    ) -> Principal | None:
        requirement = self.requirement_for(extra)
        scope = request.scope
        principal = principal_from_scope(scope)
        if principal is not None:
            # The middleware (or an earlier keyguard dependency) verified the key and enforced
            # its policy: only this dependency's own requirement is left, a pure check.
            if requirement is None:
                return principal
            denied = check_principal(principal, requirement)
            if denied is None:
                return principal
            self._refuse(request, denied)
        if requirement is None and "keyguard" in scope:
            return None  # the middleware ran and found the route public
        verifier, _ = self._resolve(request)
        if verifier is None:
            raise ConfigurationError(
                "no keyguard verifier for this dependency: build it with guard.require(...) or "
                "verifier=, call KeyGuard.install(app), or add KeyGuardMiddleware"
            )
        authorization, _ = read_credentials(scope)
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        decision = await verifier.averify(
            authorization,
            method,
            scope["path"],
            required=requirement,
            peer=scope.get("client"),
            forwarded_for=forwarded_for(scope),
        )
        if not decision.allowed:
            self._refuse(request, decision)
        principal = decision.principal
        if principal is not None:
            scope["keyguard"] = principal
            scope["user"] = principal
            scope["auth"] = KeyGuardCredentials(principal)
        for name, value in decision.headers:  # rate-limit headers, as the middleware adds them
            response.headers[name] = value
        return principal

    def _resolve(self, request: HTTPConnection) -> tuple[Verifier | None, ProblemRenderer]:
        if self.guard is not None:
            return self.guard.verifier, self.guard.renderer
        app = request.scope.get("app")
        guard = getattr(getattr(app, "state", None), "keyguard", None)
        if isinstance(guard, KeyGuard):
            return guard.verifier, guard.renderer
        middleware = _find_middleware(app)
        if middleware is not None:
            return middleware.verifier, middleware.renderer
        return None, DEFAULT_RENDERER

    def _refuse(self, request: HTTPConnection, decision: Decision) -> NoReturn:
        _, renderer = self._resolve(request)
        _, request_id = read_credentials(request.scope)
        if request.scope["type"] == "websocket":
            code = decision.code.value if decision.code is not None else ""
            raise WebSocketException(code=_POLICY_VIOLATION, reason=code)
        raise KeyGuardHTTPException(
            decision, renderer.render(decision, request_id_from(request_id))
        )


class RequireScopes(_Dependency):
    """Dependency: a valid key holding every listed scope/requirement; returns its Principal.

    ``Depends(RequireScopes("agents:read"))``, ``Depends(RequireScopes(any_of("a:read",
    "b:read")))``, or ``Security(RequireScopes(AUTHENTICATED), scopes=["agents:read"])``
    (scopes given to ``Security`` are required too). Pass ``guard=`` or ``verifier=``, or
    let it find the guard installed on the app / the middleware at request time. When this
    dependency verifies the key itself, the guard's route policy (if any) applies as well.
    """

    def __init__(
        self,
        *requirements: str | Requirement,
        guard: KeyGuard | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        if not requirements:
            raise ConfigurationError(
                "RequireScopes() needs at least one scope; use AUTHENTICATED for 'any valid key'"
            )
        super().__init__(all_of(*requirements), guard, verifier)

    async def __call__(
        self,
        request: HTTPConnection,
        security_scopes: SecurityScopes,
        response: Response,
        authorization: str | None = None,
    ) -> Principal:
        principal = await self._check(request, security_scopes.scopes, response)
        assert principal is not None, "a requirement is never met without a key"
        return principal

    def __repr__(self) -> str:
        assert self.requirement is not None
        return f"RequireScopes({self.requirement.describe()})"


class PolicyCheck(_Dependency):
    """Dependency: whatever the guard's route policy says for this request (method, path).

    For applications that want policy-table authorization without the middleware, e.g.
    ``FastAPI(dependencies=[Depends(guard.enforce_policy())])``. Returns the Principal, or
    ``None`` on a public route (no key is looked at there).
    """

    def __init__(self, *, guard: KeyGuard | None = None, verifier: Verifier | None = None) -> None:
        super().__init__(None, guard, verifier)

    async def __call__(
        self,
        request: HTTPConnection,
        security_scopes: SecurityScopes,
        response: Response,
        authorization: str | None = None,
    ) -> Principal | None:
        return await self._check(request, security_scopes.scopes, response)

    def __repr__(self) -> str:
        return "PolicyCheck()"


_MIDDLEWARE: weakref.WeakKeyDictionary[Any, KeyGuardMiddleware] = weakref.WeakKeyDictionary()


def _find_middleware(app: Any) -> KeyGuardMiddleware | None:
    """The KeyGuardMiddleware in ``app``'s built middleware stack (cached per app)."""
    if app is None:
        return None
    try:
        found = _MIDDLEWARE.get(app)
    except TypeError:  # not weak-referenceable
        return None
    if found is not None:
        return found
    node = getattr(app, "middleware_stack", None)
    for _ in range(64):  # a middleware chain is short; the bound guards against cycles
        if node is None:
            return None
        if isinstance(node, KeyGuardMiddleware):
            _MIDDLEWARE[app] = node
            return node
        node = getattr(node, "app", None)
    return None


# -- the guard -----------------------------------------------------------------------------------
class KeyGuard:
    """keyguard for one FastAPI application: a verifier, a renderer and a security scheme.

    ``KeyGuard(store="sqlite:///keys.db")`` or ``KeyGuard(verifier=verifier)``; extra keyword
    arguments go to :class:`~keyguard.core.verifier.Verifier`. A ``policy`` applies to every
    request when the middleware is installed, and to this guard's dependencies when they verify
    a key themselves. ``scheme_name``/``description`` shape the OpenAPI security scheme.
    """

    def __init__(
        self,
        *,
        verifier: Verifier | None = None,
        store: KeyStore | str | None = None,
        policy: RoutePolicy | None = None,
        renderer: ProblemRenderer = DEFAULT_RENDERER,
        scheme_name: str = SCHEME_NAME,
        description: str = DEFAULT_SCHEME_DESCRIPTION,
        **options: Any,
    ) -> None:
        self.verifier = build_verifier(verifier, store, policy, options)
        self.renderer = renderer
        self.scheme = UserKeyHeader(scheme_name=scheme_name, description=description)
        #: Dependency: any valid key, whatever its scopes.
        self.authenticated = RequireScopes(AUTHENTICATED, guard=self)

    @property
    def policy(self) -> RoutePolicy | None:
        return self.verifier.policy

    def require(self, *requirements: str | Requirement) -> RequireScopes:
        """A dependency requiring every listed scope/requirement; returns the Principal."""
        return RequireScopes(*requirements, guard=self)

    def enforce_policy(self) -> PolicyCheck:
        """A dependency applying this guard's route policy (use it app- or router-wide)."""
        if self.policy is None:
            raise ConfigurationError("enforce_policy() needs a guard built with a policy")
        return PolicyCheck(guard=self)

    def install(self, app: FastAPI, *, middleware: bool = False, openapi: bool = True) -> None:
        """Wire this guard into ``app``: problem+json exception handlers, ``app.state.keyguard``
        (for dependencies built without a guard), optionally :class:`KeyGuardMiddleware` with
        this guard's verifier, and (unless ``openapi=False``) the OpenAPI security docs."""
        app.state.keyguard = self
        install_exception_handlers(app)
        if middleware:
            app.add_middleware(
                KeyGuardMiddleware,
                verifier=self.verifier,
                renderer=self.renderer,
            )
        if openapi:
            install_openapi(app, scheme=self.scheme)

    def __repr__(self) -> str:
        return f"KeyGuard(verifier={self.verifier!r})"


# -- OpenAPI -------------------------------------------------------------------------------------
class _OpenAPIHook:
    """Replaces ``app.openapi``: FastAPI's schema, annotated by keyguard once per schema that
    FastAPI generates (it caches one, and regenerates when routes change)."""

    def __init__(
        self,
        app: FastAPI,
        original: Any,
        policy: RoutePolicy | None,
        scheme: UserKeyHeader,
    ) -> None:
        self.app = app
        self.original = original
        self.policy = policy
        self.scheme = scheme
        self._annotated: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.original()
        if schema is not self._annotated:
            annotate_openapi(schema, self.app, policy=self.policy, scheme=self.scheme)
            self._annotated = schema
        return schema


def install_openapi(
    app: FastAPI,
    *,
    policy: RoutePolicy | None = None,
    scheme: UserKeyHeader | None = None,
) -> None:
    """Document keyguard security in ``app``'s OpenAPI schema (see :func:`annotate_openapi`).

    ``policy`` is the route policy enforced in front of the app; by default it is read from a
    ``KeyGuardMiddleware`` added with ``app.add_middleware``. Calling this again replaces the
    previous settings.
    """
    current = app.openapi
    original = current.original if isinstance(current, _OpenAPIHook) else current
    hook = _OpenAPIHook(app, original, policy, scheme or DEFAULT_SCHEME)
    # FastAPI's documented way to customise the schema is to replace this method.
    app.openapi = hook  # type: ignore[method-assign]
    app.openapi_schema = None


def annotate_openapi(
    schema: dict[str, Any],
    app: FastAPI,
    *,
    policy: RoutePolicy | None = None,
    scheme: UserKeyHeader | None = None,
) -> dict[str, Any]:
    """Add keyguard's security documentation to an OpenAPI ``schema`` generated for ``app``.

    For every operation guarded by keyguard (by the route ``policy``, the policy of a
    ``KeyGuardMiddleware`` in ``app.user_middleware``, or keyguard dependencies):

    * ``security``: one ``{"UserKey": [scopes]}`` entry per way of satisfying the requirement
      (``any_of`` becomes alternatives, as OpenAPI intends); public operations get ``[]``;
    * ``x-required-scopes``: every scope the requirement names; ``x-scope-requirement``: its
      exact form (``any_of(agents:read, tasks:read)``), since apiKey schemes carry no scopes;
    * a line in the description, and 401/403 ``application/problem+json`` responses.

    The ``UserKey`` scheme is added to ``components.securitySchemes``. Returns ``schema``.
    """
    scheme = scheme or DEFAULT_SCHEME
    if policy is None:
        policy = _middleware_policy(app)
    app_guard = getattr(app.state, "keyguard", None)
    paths: dict[str, Any] = schema.get("paths", {})
    used = False
    for route in _api_routes(app):
        if not route.include_in_schema:
            continue
        item = paths.get(route.path_format)
        if item is None:
            continue
        for method in sorted(route.methods or ()):
            operation = item.get(method.lower())
            if operation is None:
                continue
            requirements = _operation_requirements(route, method, policy, app_guard)
            if requirements is None:
                continue
            _annotate_operation(operation, requirements, scheme.scheme_name)
            used = used or bool(requirements)
    if used:
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[scheme.scheme_name] = jsonable_encoder(
            scheme.model, by_alias=True, exclude_none=True
        )
        components.setdefault("schemas", {}).setdefault(_PROBLEM_SCHEMA, _problem_schema())
    return schema


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route with its effective path, methods and dependant (router prefixes and
    router-level dependencies applied)."""
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    if contexts is None:  # FastAPI before lazily included routers: routes are flat
        yield from (r for r in app.routes if isinstance(r, APIRoute))
        return
    for context in contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


def _middleware_policy(app: FastAPI) -> RoutePolicy | None:
    for entry in app.user_middleware:
        factory: object = entry.cls
        if factory is not KeyGuardMiddleware:
            continue
        verifier = entry.kwargs.get("verifier")
        policy = verifier.policy if isinstance(verifier, Verifier) else entry.kwargs.get("policy")
        # Without a policy the middleware requires a valid key everywhere.
        return policy if isinstance(policy, RoutePolicy) else RoutePolicy.allow_all()
    return None


def _keyguard_dependencies(dependant: Dependant) -> Iterator[tuple[_Dependency, list[str]]]:
    stack = dependant.dependencies[::-1]  # depth first, in declaration order
    while stack:
        sub = stack.pop()
        if isinstance(sub.call, _Dependency):
            extra = list(
                dict.fromkeys([*(sub.parent_oauth_scopes or ()), *(sub.own_oauth_scopes or ())])
            )
            yield sub.call, extra
        stack.extend(sub.dependencies[::-1])


def _operation_requirements(
    route: Any, method: str, policy: RoutePolicy | None, app_guard: object
) -> list[Requirement] | None:
    """What an operation needs (all of the list), ``[]`` if public, ``None`` if not keyguard's."""
    path = route.path_format
    found: list[Requirement] = []
    known = policy is not None
    policies = [policy] if policy is not None else []
    for dependency, extra in _keyguard_dependencies(route.dependant):
        known = True
        guard = dependency.guard if dependency.guard is not None else app_guard
        if isinstance(guard, KeyGuard) and guard.policy is not None:
            policies.append(guard.policy)
        requirement = dependency.requirement_for(extra)
        if requirement is not None:
            found.append(requirement)
    if not known:
        return None
    for p in dict.fromkeys(policies):
        rule = p.match(method, path).requirement
        if rule is not None:
            found.insert(0, rule)
    return list(dict.fromkeys(found))


def _annotate_operation(
    operation: dict[str, Any], requirements: list[Requirement], scheme_name: str
) -> None:
    others = [e for e in operation.get("security", []) if scheme_name not in e]
    if not requirements:
        operation["security"] = others  # public: explicitly no keyguard security
        return
    alternatives = _conjunction(requirements)
    if alternatives:
        entries: list[dict[str, list[str]]] = [{scheme_name: list(a)} for a in alternatives]
    else:  # denied to everyone, or too many alternatives to list
        entries = [{scheme_name: []}]
    operation["security"] = entries + others
    scopes = list(dict.fromkeys(s for r in requirements for s in r.scopes))
    described = _describe(requirements)
    operation["x-required-scopes"] = scopes
    operation["x-scope-requirement"] = described
    if described == "deny":
        note = "Denied to every key by the route policy."
    elif described == "authenticated":
        note = "Requires a valid API key (any scope)."
    else:
        note = f"Requires an API key with `{described}`."
    text = operation.get("description")
    operation["description"] = f"{text}\n\n{note}" if text else note
    responses = operation.setdefault("responses", {})
    ref = {"$ref": f"#/components/schemas/{_PROBLEM_SCHEMA}"}
    for status, title in (("401", "Missing or invalid API key"), ("403", "Insufficient scope")):
        responses.setdefault(
            status,
            {"description": title, "content": {"application/problem+json": {"schema": ref}}},
        )


def _describe(requirements: list[Requirement]) -> str:
    if DENY in requirements:
        return "deny"
    named = [r for r in requirements if r is not AUTHENTICATED]
    if not named:
        return "authenticated"
    if len(named) == 1:
        return named[0].describe()
    return f"all_of({', '.join(r.describe() for r in named)})"


def _alternatives(requirement: Requirement) -> list[tuple[str, ...]] | None:
    """The requirement as a disjunction of scope sets (``[]``: unsatisfiable; ``None``: too
    many, or a custom Requirement whose shape is unknown)."""
    if requirement is DENY:
        return []
    if requirement is AUTHENTICATED:
        return [()]
    if isinstance(requirement, Scope):
        return [(requirement.name,)]
    if isinstance(requirement, AnyOf):
        out: list[tuple[str, ...]] = []
        for member in requirement.requirements:
            alts = _alternatives(member)
            if alts is None:
                return None
            out.extend(alts)
        return _minimal(out)
    if isinstance(requirement, AllOf):
        return _conjunction(list(requirement.requirements))
    return None


def _conjunction(requirements: list[Requirement]) -> list[tuple[str, ...]] | None:
    result: list[tuple[str, ...]] = [()]
    for member in requirements:
        alts = _alternatives(member)
        if alts is None:
            return None
        result = [tuple(dict.fromkeys(a + b)) for a, b in itertools.product(result, alts)]
        if len(result) > _MAX_ALTERNATIVES:
            return None
    return _minimal(result)


def _minimal(alternatives: list[tuple[str, ...]]) -> list[tuple[str, ...]] | None:
    """Drop duplicates and alternatives that demand more than another one does."""
    sets = [frozenset(a) for a in alternatives]
    kept: list[tuple[str, ...]] = []
    seen: set[frozenset[str]] = set()
    for alt, s in zip(alternatives, sets, strict=True):
        if s in seen or any(other < s for other in sets):
            continue
        seen.add(s)
        kept.append(alt)
    return kept if len(kept) <= _MAX_ALTERNATIVES else None


def _problem_schema() -> dict[str, Any]:
    string = {"type": "string"}
    return {
        "type": "object",
        "description": "An RFC 9457 problem; `code` is keyguard's stable machine code.",
        "properties": {
            "type": string,
            "title": string,
            "status": {"type": "integer"},
            "detail": string,
            "code": string,
            "request_id": string,
            "required_scopes": {"type": "array", "items": string},
            "retry_after": {"type": "integer"},
        },
        "required": ["type", "title", "status", "code", "request_id"],
    }


# -- the key-management API ----------------------------------------------------------------------
class _ManagementOpenAPI:
    """Wraps ``app.openapi``: the application's schema with the management API's merged in."""

    def __init__(self, original: Any, document: dict[str, Any]) -> None:
        self.original = original
        self.document = document
        self._merged: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any]:
        from keyguard.management.api.openapi import merge_openapi

        schema: dict[str, Any] = self.original()
        if schema is not self._merged:
            merge_openapi(schema, self.document)
            self._merged = schema
        return schema


def mount_management(app: FastAPI, api: ManagementAPI, *, openapi: bool = True) -> None:
    """Serve ``api`` (a :class:`~keyguard.management.api.ManagementAPI`) in ``app`` at
    ``api.prefix``, and (``openapi``) merge its routes into ``app``'s OpenAPI document.

    The API authenticates its callers itself: with a ``KeyGuardMiddleware`` route policy in
    front, list ``api.public_paths()`` as public there (or requests are verified twice).
    """
    from keyguard.adapters.starlette import management_routes
    from keyguard.management.api.openapi import openapi_document

    app.router.routes.extend(management_routes(api))
    if openapi:
        hook = _ManagementOpenAPI(app.openapi, openapi_document(api.prefix))
        app.openapi = hook  # type: ignore[method-assign]
        app.openapi_schema = None


# -- the dashboard --------------------------------------------------------------------------------
def mount_dashboard(app: FastAPI, dashboard: Dashboard) -> None:
    """Serve ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) in ``app`` at
    ``dashboard.prefix`` (outside the OpenAPI document: it is a set of HTML pages).

    The dashboard signs its users in itself: with a ``KeyGuardMiddleware`` route policy in
    front, list ``dashboard.public_paths()`` as public there.
    """
    from keyguard.adapters.starlette import dashboard_routes

    app.router.routes.extend(dashboard_routes(dashboard))
