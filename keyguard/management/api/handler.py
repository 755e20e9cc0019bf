"""The management API: one framework-free handler from :class:`ApiRequest` to :class:`ApiResponse`.

Order of work for every request:

1. **route** — the path below the mount prefix picks an operation (unknown path ``404``,
   wrong method ``405`` with ``Allow``); ``GET /openapi.json`` is public, nothing else is;
2. **authenticate** — ``Authorization: UserKey <key>`` through keyguard's own
   :class:`~keyguard.core.verifier.Verifier`, exactly as a protected route: a failed guess
   counts for the brute-force guard (and is answered ``429`` once the address is over its
   threshold), then the key's own restrictions (suspended, networks:
   :func:`~keyguard.core.restrictions.record_denial`), then the management scope (``admin`` or
   ``keys:manage``, else ``403 insufficient_scope``), then the key's rate limit;
3. **re-read** the acting key from the store (never the verifier's cache), so a key revoked or
   suspended a moment ago cannot act; it must still be allowed to manage keys;
4. **operate** (:mod:`~keyguard.management.api.views`): validate the whole request, then one
   :class:`~keyguard.management.KeyManager` call under the authority rule.

Every refusal is problem+json through the application's renderer, the same body and headers as
a denial on a protected route; malformed input is a ``4xx`` naming the field, never a ``500``.
Allowed responses carry the verifier's rate-limit headers and, when the acting key expires
soon, ``API-Key-Expires`` (:mod:`keyguard.core.expiry`). The handler is synchronous (store I/O
blocks); the ASGI skin runs it in a worker thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Final, Literal

from keyguard.core import decision as d
from keyguard.core.decision import Decision, insufficient_scope
from keyguard.core.errors import ConfigurationError, ErrorCode, KeyguardError
from keyguard.core.expiry import DEFAULT_WARNING_WINDOW, EXPIRY_HEADER, expiry_warning
from keyguard.core.keys import is_key_id
from keyguard.core.records import AuditEvent, KeyRecord
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer, request_id_from
from keyguard.core.scopes import ADMIN
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier
from keyguard.management.api import views
from keyguard.management.api.body import DEFAULT_MAX_BODY
from keyguard.management.api.http import ApiRequest, ApiResponse, json_response
from keyguard.management.api.listing import Caller
from keyguard.management.api.policy import DEFAULT_HTTP_MAX_LIFETIME, LifetimePolicy
from keyguard.management.api.problems import ApiError, from_exception, render_problem
from keyguard.management.idempotency import DEFAULT_IDEMPOTENCY_TTL
from keyguard.management.manager import KeyManager

__all__ = ["DEFAULT_PREFIX", "ManagementAPI", "normalize_prefix"]

logger = logging.getLogger("keyguard.management.api")

DEFAULT_PREFIX: Final = "/api-keys"
_PREFIX_RE: Final = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)*")

View = Callable[..., ApiResponse]
#: The routes that change keys, and the audit action a refusal of each is recorded under.
_MUTATIONS: Final[dict[View, str]] = {
    views.create: "create",
    views.update: "update",
    views.revoke: "revoke",
    views.rotate: "rotate",
    views.expire: "expire",
}


def normalize_prefix(prefix: str) -> str:
    """``/api-keys`` from ``api-keys/``, ``/api-keys`` or ``/api-keys/``; ``""`` for the root."""
    if not isinstance(prefix, str):
        raise ConfigurationError("prefix must be a string such as '/api-keys'")
    cleaned = "/" + prefix.strip().strip("/") if prefix.strip().strip("/") else ""
    if not _PREFIX_RE.fullmatch(cleaned) or "//" in cleaned:
        raise ConfigurationError(f"invalid mount prefix {prefix!r}: use a path such as /api-keys")
    return cleaned


class ManagementAPI:
    """Key management over HTTP, framework-free: ``api.handle(ApiRequest) -> ApiResponse``.

    Serve it with :meth:`asgi_app` or :meth:`wsgi_app`, or mount it in a framework (each
    adapter has ``mount_management``). Keyword arguments:

    * ``verifier`` — authenticates callers (default: one built on the manager's store, catalog,
      key format, hasher and clock, with the default rate limits and brute-force guard). Share
      the application's verifier so limits, the guard and the cache are shared too.
    * ``prefix`` — where it is mounted (default ``/api-keys``): used for ``Location`` headers
      and the OpenAPI document, and stripped from incoming paths by :meth:`asgi_app` /
      :meth:`wsgi_app` when the framework did not strip it already.
    * ``max_lifetime``/``on_excess`` — the lifetime policy for keys created here (90 days;
      ``"refuse"`` or ``"clamp"`` requests for longer; see :mod:`.policy`).
    * ``cascade`` — whether ``DELETE`` revokes the keys a key created too (default ``True``; a
      request may say ``cascade=false``).
    * ``max_body`` — the largest request body read, in bytes (default 64 KiB).
    * ``idempotency_ttl`` — how long an ``Idempotency-Key`` is remembered (default 24 h).
    * ``expiry_warning`` — the ``API-Key-Expires`` window for the acting key (default 7 days;
      ``None`` sends none).
    """

    def __init__(
        self,
        manager: KeyManager | KeyStore | str,
        *,
        verifier: Verifier | None = None,
        prefix: str = DEFAULT_PREFIX,
        renderer: ProblemRenderer = DEFAULT_RENDERER,
        max_lifetime: float | None = DEFAULT_HTTP_MAX_LIFETIME,
        on_excess: Literal["refuse", "clamp"] = "refuse",
        cascade: bool = True,
        max_body: int = DEFAULT_MAX_BODY,
        idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
        expiry_warning: float | None = DEFAULT_WARNING_WINDOW,
    ) -> None:
        if not isinstance(manager, KeyManager):
            manager = KeyManager(manager)
        self.manager = manager
        self.verifier = verifier or Verifier(
            manager.store,
            catalog=manager.catalog,
            key_format=manager.key_format,
            hasher=manager.hasher,
            clock=manager.clock,
        )
        self.prefix = normalize_prefix(prefix)
        self.renderer = renderer
        self.lifetime = LifetimePolicy(max_lifetime, on_excess)
        self.cascade = bool(cascade)
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1024:
            raise ConfigurationError("max_body must be an integer of at least 1024 bytes")
        self.max_body = max_body
        self.idempotency_ttl = float(idempotency_ttl)
        self.expiry_window = expiry_warning
        self._openapi: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"ManagementAPI(prefix={self.prefix!r}, manager={self.manager!r})"

    # -- helpers for views ---------------------------------------------------------------------
    def now(self) -> float:
        return self.manager.clock()

    def location(self, key_id: str) -> str:
        return f"{self.prefix}/{key_id}"

    def changed(self, *key_ids: str) -> None:
        """Keys this API just changed: the verifier forgets them at once, so the change
        applies to this process's next request (other processes see it within their cache
        bound, or at once with a store that pushes invalidations)."""
        for key_id in key_ids:
            self.verifier.invalidate(key_id)

    def refuse(self, caller: Caller, action: str, key_id: str, reason: str) -> ApiError:
        """A 403 for a change this API itself refuses, audited like the manager's refusals."""
        event = AuditEvent(
            at=self.now(),
            action=f"{action}.refused",
            key_id=key_id,
            actor=caller.actor,
            details={"reason": reason, "acting_key": caller.key_id},
        )
        try:
            self.manager.store.add_audit(event)
        except KeyguardError as exc:
            logger.warning("could not audit a refused %s: %s", action, exc)
        return ApiError(ErrorCode.PERMISSION_DENIED, reason)

    # -- entry point ----------------------------------------------------------------------------
    def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request. Never raises for anything a client can send."""
        request_id = request_id_from(request.header("x-request-id"))
        try:
            response = self._dispatch(request)
        except ApiError as exc:
            response = render_problem(self.renderer, exc.decision, request_id, exc.members)
        except KeyguardError as exc:
            error = from_exception(exc)
            response = render_problem(self.renderer, error.decision, request_id, error.members)
        if response.header("x-request-id") is None:
            response.headers.append(("x-request-id", request_id))
        return response

    def outside(self, request: ApiRequest) -> ApiResponse:
        """The ``404`` for a request a skin received outside the API's prefix."""
        request_id = request_id_from(request.header("x-request-id"))
        error = ApiError(ErrorCode.NOT_FOUND, f"the management API lives under {self.prefix}/")
        return render_problem(self.renderer, error.decision, request_id)

    def _dispatch(self, request: ApiRequest) -> ApiResponse:
        method = request.method.upper()
        if method == "HEAD":
            method = "GET"  # answered as GET; the skins send no body
        parts = [p for p in request.path.split("/") if p] if request.path not in ("", "/") else []
        if parts == ["openapi.json"]:
            self._allow(method, ("GET",))
            from keyguard.management.api.openapi import openapi_document

            if self._openapi is None:
                self._openapi = openapi_document(self.prefix)
            return json_response(200, self._openapi)
        if parts == ["self"]:
            # Any valid key may read its own record (``keyguard keys verify --url`` uses it).
            self._allow(method, ("GET",))
            record, headers = self.authenticate(request, manage=False)
            return self._finish(views.me(self, record, request), headers)
        view, args = self._route(method, parts)
        record, headers = self.authenticate(request, manage=True)
        caller = self.caller(record, _MUTATIONS.get(view), args[0] if args else None)
        return self._finish(view(self, caller, request, *args), headers)

    def _route(self, method: str, parts: list[str]) -> tuple[View, tuple[str, ...]]:
        if not parts:
            self._allow(method, ("GET", "POST"))
            return (views.list_keys if method == "GET" else views.create), ()
        if parts == ["audit"]:
            self._allow(method, ("GET",))
            return views.audit_all, ()
        if parts == ["usage"]:
            self._allow(method, ("GET",))
            return views.usage_owner, ()
        key_id = parts[0]
        if not is_key_id(key_id) or len(parts) > 2:
            raise ApiError(ErrorCode.NOT_FOUND, "no such management route")
        if len(parts) == 1:
            self._allow(method, ("GET", "PATCH", "DELETE"))
            view = {"GET": views.show, "PATCH": views.update, "DELETE": views.revoke}[method]
            return view, (key_id,)
        action = parts[1]
        if action == "audit":
            self._allow(method, ("GET",))
            return views.audit_key, (key_id,)
        if action == "usage":
            self._allow(method, ("GET",))
            return views.usage_key, (key_id,)
        if action == "rotate":
            self._allow(method, ("POST",))
            return views.rotate, (key_id,)
        if action == "expire":
            self._allow(method, ("POST",))
            return views.expire, (key_id,)
        raise ApiError(ErrorCode.NOT_FOUND, "no such management route")

    @staticmethod
    def _allow(method: str, allowed: tuple[str, ...]) -> None:
        if method in allowed or (method == "HEAD" and "GET" in allowed):
            return
        raise ApiError(
            ErrorCode.METHOD_NOT_ALLOWED,
            f"{method} is not allowed here (allowed: {', '.join(allowed)})",
            headers=(("Allow", ", ".join(allowed)),),
        )

    # -- authentication -------------------------------------------------------------------------
    def _deny(self, decision: Decision) -> ApiError:
        assert decision.code is not None
        return ApiError(
            decision.code,
            decision.detail,
            headers=decision.headers,
            retry_after=decision.retry_after,
            required=decision.required,
        )

    def authenticate(
        self, request: ApiRequest, *, manage: bool
    ) -> tuple[KeyRecord, tuple[tuple[str, str], ...]]:
        """The acting key's record as the verifier saw it, and headers for the response."""
        verifier = self.verifier
        values = request.header_values("authorization")
        header = values[0] if len(values) == 1 else (values or None)
        # With the client address, the verifier applies everything a protected route gets: the
        # brute-force guard (a blocked address causes no store reads), then, once the secret
        # matched, the key's own restrictions (suspended, networks).
        decision = verifier.authenticate(
            header, peer=request.client, forwarded_for=request.forwarded_for()
        )
        if not decision.allowed:
            raise self._deny(decision)
        principal = decision.principal
        assert principal is not None
        now = self.now()
        if manage and not principal.has_scope(self.manager.manage_scope):
            scope = self.manager.manage_scope
            raise self._deny(insufficient_scope((scope,), f"'{scope}' (or '{ADMIN}')"))
        decision = verifier.rate_limit(decision)
        if not decision.allowed:
            raise self._deny(decision)
        headers = decision.headers
        if self.expiry_window is not None and not any(
            name.lower() == EXPIRY_HEADER.lower() for name, _ in headers
        ):
            # (A verifier that adds the warning itself has done it already.)
            headers += expiry_warning(principal.record, now, window=self.expiry_window)
        return principal.record, headers

    def caller(self, seen: KeyRecord, action: str | None, target: str | None) -> Caller:
        """The acting key re-read from the store (not the verifier's cache) and re-checked: a
        key revoked or suspended since the verifier cached it may not act. A refused change
        (``action``) is audited against its ``target`` (or the acting key)."""
        fresh = self.manager.store.get(seen.key_id)
        if fresh is None:
            raise self._deny(d.INVALID)
        caller = Caller(fresh, ADMIN in self.manager.catalog.grants(fresh.scopes))
        verdict = self.manager.may_act(fresh, self.now())
        if not verdict:
            if action is None:
                raise ApiError(ErrorCode.PERMISSION_DENIED, verdict.reason)
            raise self.refuse(caller, action, target or fresh.key_id, verdict.reason)
        return caller

    @staticmethod
    def _finish(response: ApiResponse, headers: tuple[tuple[str, str], ...]) -> ApiResponse:
        response.headers.extend((k.lower(), v) for k, v in headers)
        return response

    # -- skins ----------------------------------------------------------------------------------
    def asgi_app(self, *, strip_prefix: bool = True) -> Any:
        """This API as an ASGI application (see :mod:`keyguard.management.api.asgi`)."""
        from keyguard.management.api.asgi import ManagementASGI

        return ManagementASGI(self, strip_prefix=strip_prefix)

    def wsgi_app(self, *, strip_prefix: bool = True) -> Any:
        """This API as a WSGI application (see :mod:`keyguard.management.api.wsgi`)."""
        from keyguard.management.api.wsgi import ManagementWSGI

        return ManagementWSGI(self, strip_prefix=strip_prefix)

    def public_paths(self) -> tuple[str, ...]:
        """Route-policy templates covering this API, for an application whose keyguard
        middleware protects every route: list them as public there, since the API
        authenticates its callers itself (otherwise a request would be counted twice against
        the caller's rate limit)."""
        base = self.prefix or ""
        return (base or "/", f"{base}/{{rest:path}}")
