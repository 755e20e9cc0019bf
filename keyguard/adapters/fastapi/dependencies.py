"""The dependencies (:class:`RequireScopes`, :class:`PolicyCheck`) and the :class:`KeyGuard`
that builds them: verify a request (or reuse the middleware's verdict), check scopes, refuse
with keyguard's error contract."""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Final, NoReturn

from fastapi import FastAPI
from fastapi.exceptions import WebSocketException
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection
from starlette.responses import Response

from keyguard.adapters._shared import build_verifier
from keyguard.adapters.asgi import KeyGuardMiddleware, credentials, request_headers
from keyguard.adapters.fastapi.errors import KeyGuardHTTPException, install_exception_handlers
from keyguard.adapters.fastapi.scheme import (
    DEFAULT_SCHEME,
    DEFAULT_SCHEME_DESCRIPTION,
    SCHEME_NAME,
    UserKeyHeader,
)
from keyguard.adapters.starlette import (
    check_principal,
    principal_from_scope,
    read_credentials,
)
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer, request_id_from
from keyguard.core.scopes import AUTHENTICATED, Requirement, all_of
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier

_POLICY_VIOLATION: Final = 1008
_AUTHORIZATION: Final = b"authorization"


class _Dependency(SecurityBase):
    """Shared machinery of :class:`RequireScopes` and :class:`PolicyCheck`.

    FastAPI reads a dependency's parameters from its signature: ``request``,
    ``security_scopes`` (scopes an enclosing ``Security(..., scopes=...)`` adds) and
    ``response`` (where the rate-limit headers go), all of which FastAPI has at hand, so
    solving this dependency costs FastAPI no nested dependency. The dependency is itself the
    ``UserKey`` security scheme (a ``SecurityBase``): FastAPI's OpenAPI document lists the
    scheme for every operation using it, with the scopes given to ``Security(...)``;
    :meth:`KeyGuard.install` adds each requirement's own scopes and alternatives.
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
        self.model = scheme.model
        self.scheme_name = scheme.scheme_name
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter("request", kind, annotation=HTTPConnection),
                inspect.Parameter("security_scopes", kind, annotation=SecurityScopes),
                inspect.Parameter("response", kind, annotation=Response),
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
        authorization, _, forwarded = request_headers(scope["headers"])
        http = scope["type"] == "http"
        method = scope.get("method", "GET") if http else "GET"
        path = scope["path"]
        if http and type(authorization) is bytes and verifier.limiter is not None:
            # The default path, when it applies (a recently verified key, an in-process
            # limiter): the decision and its rate-limit headers in one call.
            fast = verifier.fast_admit(authorization, method, path, requirement)
            if type(fast) is tuple:
                principal, added = fast  # type: ignore[misc]  # not a Decision: a plain tuple
                scope["keyguard"] = principal
                scope["user"] = principal
                auth = principal._view  # credentials() inlined: made once per key
                scope["auth"] = auth if auth is not None else credentials(principal)
                if added:
                    _add_headers(response, added)
                return principal
            if fast is not None:  # a 403, or the limiter's 429
                self._refuse(request, fast)  # type: ignore[arg-type]
        peer = scope.get("client")
        # No await on the common paths (a recently verified key, a cached denial).
        decision = verifier.verify_nowait(
            authorization,
            method,
            path,
            required=requirement,
            peer=peer,
            forwarded_for=forwarded,
        )
        if decision is None:
            decision = await verifier.averify(
                authorization,
                method,
                path,
                required=requirement,
                peer=peer,
                forwarded_for=forwarded,
            )
        if not decision.allowed:
            self._refuse(request, decision)
        principal = decision.principal
        if principal is not None:
            scope["keyguard"] = principal
            scope["user"] = principal
            scope["auth"] = credentials(principal)
        if decision.rate is not None or decision.extra_headers:
            _add_headers(response, decision.asgi_headers())
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


def _add_headers(response: Response, headers: list[tuple[bytes, bytes]]) -> None:
    """Rate-limit (and expiry) headers, as the middleware adds them. FastAPI's sub-response
    starts without headers: extend its raw list at once; else replace field by field."""
    raw = response.raw_headers
    if not raw:
        raw.extend(headers)
    else:
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")


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
        scope = request.scope
        guard = self.guard
        # The default path inline (what _check() does for it, without a second coroutine): no
        # middleware ran, this dependency's own guard, one Authorization field, a recently
        # verified key admitted by an in-process limiter. Anything else: _check().
        if (
            guard is not None
            and not security_scopes.scopes
            and "keyguard" not in scope
            and not isinstance(scope.get("user"), Principal)
        ):
            verifier = guard.verifier
            headers = scope["headers"]
            fields = dict(headers) if type(headers) is list else None
            if fields is not None and len(fields) == len(headers):
                value = fields.get(_AUTHORIZATION)
                if type(value) is bytes and verifier.limiter is not None:
                    fast = verifier.fast_admit(
                        value, scope.get("method", "GET"), scope["path"], self.requirement
                    )
                    if type(fast) is tuple:
                        principal, added = fast  # type: ignore[misc]  # a plain tuple
                        scope["keyguard"] = principal
                        scope["user"] = principal
                        auth = principal._view  # credentials() inlined
                        scope["auth"] = auth if auth is not None else credentials(principal)
                        if added:
                            raw = response.raw_headers
                            if raw:
                                _add_headers(response, added)
                            else:
                                raw.extend(added)
                        return principal
                    if fast is not None:  # a 403, or the limiter's 429
                        self._refuse(request, fast)  # type: ignore[arg-type]
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
            # Imported here: the OpenAPI module reads this one's dependencies and guard.
            from keyguard.adapters.fastapi.openapi import install_openapi

            install_openapi(app, scheme=self.scheme)

    def __repr__(self) -> str:
        return f"KeyGuard(verifier={self.verifier!r})"
