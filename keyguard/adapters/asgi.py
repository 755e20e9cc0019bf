"""Pure ASGI middleware: keyguard in front of any ASGI application, no framework imported.

HTTP requests and WebSocket handshakes are checked before the application sees them; lifespan
and other scope types pass through untouched. A denial is answered here with raw
``http.response.*`` messages rendered by the shared problem+json renderer, so nothing reaches
the application. On success the principal is put in ``scope["keyguard"]`` and — unless
``starlette_compat=False`` — ``scope["auth"]``/``scope["user"]`` are set the way Starlette's
``AuthenticationMiddleware`` sets them, so ``request.user``, ``request.auth.scopes`` and
``starlette.authentication.requires`` work unchanged (with keyguard's wildcard semantics).
Store I/O on a cache miss runs off the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from operator import itemgetter
from typing import Any, Final

from keyguard.adapters._observed import observed_class
from keyguard.adapters._shared import ANONYMOUS, build_verifier
from keyguard.core.addresses import join_field_lines
from keyguard.core.decision import Decision, Principal
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import admitted_headers_asgi
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer, request_id_from
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_AUTHORIZATION = b"authorization"
_REQUEST_ID = b"x-request-id"
_FORWARDED_FOR = b"x-forwarded-for"
_WS_DENIAL_EXT = "websocket.http.response"
_POLICY_VIOLATION = 1008


class ScopeView:
    """``request.auth.scopes`` for a key: ``"agents:read" in view`` applies wildcards/admin."""

    __slots__ = ("_principal",)

    def __init__(self, principal: Principal | None) -> None:
        self._principal = principal

    def __contains__(self, scope: object) -> bool:
        p = self._principal
        return p is not None and isinstance(scope, str) and p.grants.satisfies(scope)

    def __iter__(self) -> Any:
        p = self._principal
        return iter(sorted(p.scopes) if p is not None else ())

    def __len__(self) -> int:
        return 0 if self._principal is None else len(self._principal.scopes)

    def __repr__(self) -> str:
        return f"ScopeView({list(self)!r})"


class KeyGuardCredentials:
    """Starlette ``AuthCredentials`` look-alike carried in ``scope["auth"]``.

    Read-only: one per principal, shared by its requests (:func:`credentials`); its
    :attr:`scopes` view made only when asked for."""

    __slots__ = ("principal",)

    principal: Principal | None

    def __init__(self, principal: Principal | None) -> None:
        object.__setattr__(self, "principal", principal)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"KeyGuardCredentials is read-only (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"KeyGuardCredentials is read-only (cannot delete {name!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyGuardCredentials, (self.principal,))

    @property
    def scopes(self) -> ScopeView:
        return ScopeView(self.principal)


_ANONYMOUS_CREDENTIALS = KeyGuardCredentials(None)


def credentials(principal: Principal) -> KeyGuardCredentials:
    """``scope["auth"]`` for ``principal``: its :class:`KeyGuardCredentials`, made on first use
    and kept on the principal (which the verifier's cache reuses for every request of the
    key), so an admitted request allocates none."""
    view = principal._view
    if view is None:
        view = KeyGuardCredentials(principal)
        object.__setattr__(principal, "_view", view)
    return view  # type: ignore[no-any-return]


def forwarded_for(scope: Scope) -> bytes | None:
    """The ``X-Forwarded-For`` value of an ASGI request (for the brute-force guard): every
    line of it, in order, joined as one list (:func:`~keyguard.core.addresses.join_field_lines`);
    ``None`` without one."""
    return join_field_lines([value for name, value in scope["headers"] if name == _FORWARDED_FOR])


def problem_messages(
    renderer: ProblemRenderer, decision: Decision, request_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return renderer.render_asgi(decision, request_id)


class KeyGuardMiddleware:
    """Authenticate, authorize and rate-limit every HTTP and WebSocket request.

    ``app.add_middleware(KeyGuardMiddleware, store="sqlite:///keys.db", policy=policy)`` or
    ``KeyGuardMiddleware(app, verifier=verifier)``. Extra keyword arguments go to
    :class:`~keyguard.core.verifier.Verifier`.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        verifier: Verifier | None = None,
        store: KeyStore | str | None = None,
        policy: RoutePolicy | None = None,
        renderer: ProblemRenderer = DEFAULT_RENDERER,
        starlette_compat: bool = True,
        **options: Any,
    ) -> None:
        self.app = app
        self.verifier = build_verifier(verifier, store, policy, options)
        self.renderer = renderer
        self.starlette_compat = starlette_compat
        if self.verifier.observer is not None:
            # Events or usage counting: the observed request path (keyguard.adapters._observed).
            self.__class__ = observed_class(type(self))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            method = scope["method"]  # required in an HTTP scope (the ASGI spec)
        elif kind == "websocket":
            method = "GET"  # a handshake: checked as the GET it is
        else:
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        authorization: bytes | list[bytes] | None
        request_id: bytes | None
        forwarded: bytes | list[bytes] | None
        path = scope["path"]
        verifier = self.verifier
        # request_headers() inlined: this is the path nearly every request takes.
        if type(headers) is list and len(fields := dict(headers)) == len(headers):
            # No name repeats (the dict, built in C, kept every field): lookups.
            authorization = fields.get(_AUTHORIZATION)
            if type(authorization) is bytes and kind == "http" and verifier.limiter is not None:
                # The default path, when it applies: a recently verified key admitted by an
                # in-process limiter, its rate-limit headers rendered with the decision.
                fast = verifier.fast_admit(authorization, method, path)
                if type(fast) is tuple:
                    principal, extra = fast  # type: ignore[misc]  # not a Decision: a plain tuple
                    scope["keyguard"] = principal
                    if self.starlette_compat:
                        auth = principal._view  # credentials() inlined: made once per key
                        scope["auth"] = auth if auth is not None else credentials(principal)
                        scope["user"] = principal
                    if extra:
                        send = _with_rate_headers(send, extra)
                    await self.app(scope, receive, send)
                    return
                if fast is not None:  # a 403, or the limiter's 429 (_deny_http() inlined)
                    start, body = self.renderer.asgi_messages(fast, fields.get(_REQUEST_ID))  # type: ignore[arg-type]
                    await send(start)
                    await send(body)
                    return
            request_id = fields.get(_REQUEST_ID)
            forwarded = fields.get(_FORWARDED_FOR)
        else:
            authorization, request_id, forwarded = _scan(headers)
        peer = scope.get("client")
        if forwarded is not None and type(forwarded) is not bytes:
            forwarded = join_field_lines(forwarded)  # type: ignore[arg-type]
        decision = verifier.verify_nowait(
            authorization, method, path, peer=peer, forwarded_for=forwarded
        )
        if decision is None:
            decision = await verifier.averify(
                authorization, method, path, peer=peer, forwarded_for=forwarded
            )
        if not decision.allowed:
            if kind == "http":  # _deny_http() inlined
                start, body = self.renderer.asgi_messages(decision, request_id)
                await send(start)
                await send(body)
            else:
                await self._deny_websocket(scope, decision, request_id, receive, send)
            return
        principal = decision.principal
        scope["keyguard"] = principal
        if self.starlette_compat:
            if principal is None:
                scope["auth"] = _ANONYMOUS_CREDENTIALS
                scope["user"] = ANONYMOUS
            else:
                scope["auth"] = credentials(principal)
                scope["user"] = principal
        if kind == "http":
            rate = decision.rate
            if decision.extra_headers:
                send = _with_headers(send, decision.asgi_headers())
            elif rate is not None:
                # Decision.asgi_headers() inlined: the default path, rate-limit headers only.
                plan, counts, ietf, legacy = rate
                render = plan.asgi_render
                if render is None:
                    extra = admitted_headers_asgi(plan, counts, ietf, legacy)
                else:
                    extra = render(counts, ietf, legacy)
                send = _with_rate_headers(send, extra)
        await self.app(scope, receive, send)

    async def _deny_http(self, decision: Decision, request_id: bytes | None, send: Send) -> None:
        start, body = self.renderer.asgi_messages(decision, request_id)
        await send(start)
        await send(body)

    async def _deny_websocket(
        self,
        scope: Scope,
        decision: Decision,
        request_id: bytes | None,
        receive: Receive,
        send: Send,
    ) -> None:
        # The handshake must be consumed before any reply (ASGI websocket spec).
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if _WS_DENIAL_EXT in scope.get("extensions", {}):
            status, headers, body = problem_messages(
                self.renderer, decision, request_id_from(request_id)
            )
            await send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send(
                {
                    "type": "websocket.close",
                    "code": _POLICY_VIOLATION,
                    "reason": decision.code.value if decision.code else "",
                }
            )


def request_headers(headers: Any) -> tuple[Any, bytes | None, bytes | None]:
    """``Authorization`` (a list when repeated: the verifier refuses it), ``X-Request-ID`` and
    ``X-Forwarded-For`` (every line of it, joined) of a raw ASGI header list: what
    :meth:`KeyGuardMiddleware.__call__` reads inline, for the other ASGI entry points."""
    fields = dict(headers) if type(headers) is list else None
    if fields is not None and len(fields) == len(headers):
        # No name repeats (the dict, built in C, kept every field): three lookups.
        return fields.get(_AUTHORIZATION), fields.get(_REQUEST_ID), fields.get(_FORWARDED_FOR)
    authorization, request_id, forwarded = _scan(headers)
    if forwarded is not None and type(forwarded) is not bytes:
        forwarded = join_field_lines(forwarded)  # type: ignore[arg-type]
    return authorization, request_id, forwarded


def _scan(
    headers: Any,
) -> tuple[bytes | list[bytes] | None, bytes | None, bytes | list[bytes] | None]:
    """``Authorization`` (a list when repeated: the verifier refuses it), ``X-Request-ID`` and
    ``X-Forwarded-For`` (a list of its lines when repeated) of a raw ASGI header list."""
    authorization: bytes | list[bytes] | None = None
    request_id: bytes | None = None
    forwarded: bytes | list[bytes] | None = None
    for name, value in headers:
        if name == _AUTHORIZATION:
            if authorization is None:
                authorization = value
            elif type(authorization) is bytes:
                authorization = [authorization, value]
            else:
                authorization.append(value)  # type: ignore[union-attr]
        elif name == _REQUEST_ID:
            request_id = value
        elif name == _FORWARDED_FOR:
            if forwarded is None:
                forwarded = value
            elif type(forwarded) is bytes:
                forwarded = [forwarded, value]
            else:
                forwarded.append(value)  # type: ignore[union-attr]
    return authorization, request_id, forwarded


#: Every header name a rate-limited decision without extra headers can add.
_RATE_NAMES: Final = frozenset(
    {b"ratelimit-policy", b"ratelimit", b"x-ratelimit-limit", b"x-ratelimit-remaining"}
    | {b"x-ratelimit-reset"}
)
_first = itemgetter(0)


def _with_headers(send: Send, extra: list[tuple[bytes, bytes]], rate_only: bool = False) -> Send:
    """Wrap ``send`` so the response start carries ``extra`` headers (rate-limit headers).

    ``rate_only``: ``extra`` holds rate-limit headers only, so one C-level pass over the
    application's header names decides whether any must be dropped (almost never). The
    wrapper is a plain function returning ``send``'s awaitable: no coroutine of its own per
    message."""

    def wrapped(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = message.get("headers")
            message["headers"] = _merged(headers, extra, rate_only) if headers else extra
        return send(message)

    return wrapped


def _with_rate_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """:func:`_with_headers` for ``extra`` holding rate-limit headers only (the default path),
    with :func:`_merged`'s common case inlined: one C-level pass over the application's header
    names finds none of them (almost always), so the lists are simply joined."""

    def wrapped(message: Message) -> Awaitable[None]:
        if message["type"] == "http.response.start":
            headers = message.get("headers")
            if not headers:
                message["headers"] = extra
            elif type(headers) is list and _RATE_NAMES.isdisjoint(map(_first, headers)):
                message["headers"] = headers + extra
            else:
                message["headers"] = _merged(headers, extra, False)
        return send(message)

    return wrapped


def _merged(
    headers: Iterable[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]], rate_only: bool
) -> list[tuple[bytes, bytes]]:
    """The application's response headers followed by ``extra``, dropping any field the app set
    that ``extra`` sends too (ASGI names are lower-case bytes), so no field appears twice.
    ``rate_only``: ``extra`` holds rate-limit headers only, so one C-level pass over the app's
    names decides whether any must be dropped (almost never)."""
    if type(headers) is not list:
        headers = list(headers)
    if not rate_only or not _RATE_NAMES.isdisjoint(map(_first, headers)):
        names = {k for k, _ in extra}
        headers = [kv for kv in headers if kv[0] not in names]
    return headers + extra


# -- the dashboard --------------------------------------------------------------------------------
def mount_dashboard(app: ASGIApp, dashboard: Any) -> ASGIApp:
    """``app`` with ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) answering every
    HTTP request under ``dashboard.prefix``; all else (lifespan included) goes to ``app``.

    Wrap the application *with* keyguard's middleware (``mount_dashboard(KeyGuardMiddleware(
    app, ...), dashboard)``): the dashboard signs its users in itself, with a session cookie.
    """
    dashboard_app = dashboard.asgi_app()
    prefix = dashboard.prefix

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if path == prefix or path.startswith(prefix + "/"):
            await dashboard_app(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch
