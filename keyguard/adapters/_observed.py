"""The ASGI and WSGI middlewares' observed path: used instead of the plain one when the
verifier has an observer (events, usage counting), and only then.

A middleware built with such a verifier becomes, once, an instance of a subclass whose
``__call__`` is the observed one (:func:`observed_class`), so that neither path pays for the
choice per request. (An observer given to the verifier *after* the middleware was built is
still told of every request, by the verifier itself, but without the application's status:
admitted requests then count as answered 200.)

It does what the plain path does (the fused path first, ``Verifier.fast_admit(...,
observed=True)``, when the observer merges admitted requests into their usage record; else the
same checks through :mod:`keyguard.core.observe`; same denials, same headers, same scope and
environ entries) and in addition reports the response
status the application actually sent for each admitted request — from the
``http.response.start`` message (ASGI; ``websocket.accept`` counts as 101, a close before it as
403) or the ``start_response`` call (WSGI); an application that fails before answering counts
as 500. Kept apart from ``asgi.py``/``wsgi.py`` so that the plain request path stays as it
was: one attribute check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from operator import itemgetter
from time import perf_counter
from typing import TYPE_CHECKING, Any

from keyguard.adapters._shared import ANONYMOUS
from keyguard.core.decision import Decision
from keyguard.core.observe import (
    Admission,
    RequestObserver,
    observed_averify,
    observed_nowait,
    observed_verify,
)

if TYPE_CHECKING:
    from keyguard.adapters.asgi import KeyGuardMiddleware, Message, Receive, Scope, Send
    from keyguard.adapters.wsgi import Environ, KeyGuardWSGIMiddleware, StartResponse

__all__ = ["observed_class"]


# The request header fields the ASGI path reads (asgi.request_headers()'s).
_AUTHORIZATION = b"authorization"
_REQUEST_ID = b"x-request-id"
_FORWARDED_FOR = b"x-forwarded-for"
_first = itemgetter(0)
_lower = str.lower

# The middleware modules import this one; their helpers are looked up once, on first use
# (an import statement per request would cost microseconds).
_asgi: Any = None
_wsgi: Any = None


def _asgi_module() -> Any:
    global _asgi
    from keyguard.adapters import asgi

    _asgi = asgi
    return asgi


def _wsgi_module() -> Any:
    global _wsgi
    from keyguard.adapters import wsgi

    _wsgi = wsgi
    return wsgi


async def _asgi_call(mw: KeyGuardMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
    """:meth:`KeyGuardMiddleware.__call__`, observed."""
    kind = scope["type"]
    if kind == "http":
        method = scope["method"]  # required in an HTTP scope (the ASGI spec), as the plain path
    elif kind == "websocket":
        method = "GET"  # a handshake: checked as the GET it is
    else:
        await mw.app(scope, receive, send)
        return
    asgi = _asgi or _asgi_module()
    verifier = mw.verifier
    observer: RequestObserver = verifier.observer  # type: ignore[assignment]
    headers = scope["headers"]
    # asgi.request_headers() inlined, as the plain path has it.
    if type(headers) is list and len(fields := dict(headers)) == len(headers):
        header = fields.get(_AUTHORIZATION)
        request_id = fields.get(_REQUEST_ID)
        forwarded_for = fields.get(_FORWARDED_FOR)
    else:
        header, request_id, forwarded_for = asgi.request_headers(headers)
    path = scope["path"]
    peer = scope.get("client")
    fast = None
    if kind == "http" and type(header) is bytes and observer.merges_admitted:
        # The fused path (Verifier.fast_admit), when it applies: an admitted request is then
        # reported by responded() alone, as observed_nowait() reports one with this observer.
        started = perf_counter() if observer.timed else 0.0
        fast = verifier.fast_admit(header, method, path, observed=True)
    extra: list[tuple[bytes, bytes]] | None = None
    rate_only = True
    if fast is not None:
        principal, result, template, rate = fast  # type: ignore[misc]
        elapsed = perf_counter() - started if observer.timed else 0.0
        if type(result) is Decision:  # a 403, or the limiter's 429
            observer.refused(
                verifier,
                result,
                principal,
                rate,
                None,
                method,
                template,
                peer,
                forwarded_for,
                elapsed,
            )
            await mw._deny_http(result, request_id, send)
            return
        scope["keyguard"] = principal
        if mw.starlette_compat:
            auth = principal._view  # asgi.credentials() inlined: made once per key
            scope["auth"] = auth if auth is not None else asgi.credentials(principal)
            scope["user"] = principal
        admission: Admission | None = (
            verifier,
            principal,
            method,
            template,
            peer,
            forwarded_for,
            elapsed,
        )
        if result:
            extra = result
    else:
        outcome = observed_nowait(
            verifier, observer, header, method, path, peer, forwarded_for, True
        )
        if outcome is None:
            outcome = await observed_averify(
                verifier, observer, header, method, path, None, peer, forwarded_for, True
            )
        decision, admission = outcome
        if not decision.allowed:
            if kind == "http":
                await mw._deny_http(decision, request_id, send)
            else:
                await mw._deny_websocket(scope, decision, request_id, receive, send)
            return
        principal = decision.principal
        scope["keyguard"] = principal
        if mw.starlette_compat:
            if principal is None:
                scope["auth"] = asgi._ANONYMOUS_CREDENTIALS
                scope["user"] = ANONYMOUS
            else:
                scope["auth"] = asgi.credentials(principal)
                scope["user"] = principal
        if kind == "http" and (decision.rate is not None or decision.extra_headers):
            extra = decision.asgi_headers()
            rate_only = not decision.extra_headers
        if admission is None:  # a public route: nothing to count
            await mw.app(scope, receive, send if extra is None else asgi._with_headers(send, extra))
            return
    assert admission is not None  # a public route was answered above
    status = 0

    def watch(message: Message) -> Awaitable[None]:
        # The response start: its status is counted, keyguard's headers added (one wrapper
        # for both, as the plain path has one for the headers; a plain function returning
        # send's awaitable, as there: no coroutine of its own per message).
        nonlocal status
        if not status:
            kind_of = message["type"]
            if kind_of == "http.response.start":
                status = int(message["status"])
                if extra is not None:
                    sent = message.get("headers")
                    if not sent:
                        message["headers"] = extra
                    elif (
                        rate_only
                        and type(sent) is list
                        and asgi._RATE_NAMES.isdisjoint(map(_first, sent))
                    ):
                        # asgi._merged()'s common case, as the plain path inlines it.
                        message["headers"] = sent + extra
                    else:
                        message["headers"] = asgi._merged(sent, extra, rate_only)
            elif kind_of == "websocket.accept":
                status = 101
            elif kind_of in ("websocket.close", "websocket.http.response.start"):
                status = int(message.get("status", 403))
        return send(message)

    try:
        await mw.app(scope, receive, watch)
    finally:
        observer.responded(admission, status or 500)


def _wsgi_call(
    mw: KeyGuardWSGIMiddleware, environ: Environ, start_response: StartResponse
) -> Iterable[bytes]:
    """:meth:`KeyGuardWSGIMiddleware.__call__`, observed."""
    wsgi = _wsgi or _wsgi_module()
    method = environ.get("REQUEST_METHOD", "GET")
    peer = environ.get("REMOTE_ADDR")
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    verifier = mw.verifier
    observer: RequestObserver = verifier.observer  # type: ignore[assignment]
    path = wsgi.path_from_environ(environ)
    value = environ.get("HTTP_AUTHORIZATION")
    if type(value) is str and observer.merges_admitted:
        # The fused path, as in _asgi_call. (Several Authorization values, joined with commas,
        # are never in its index: the general path refuses them.)
        started = perf_counter() if observer.timed else 0.0
        fast = verifier.fast_admit(value.encode(), method, path, None, True, observed=True)
        if fast is not None:
            principal, outcome, template, rate = fast  # type: ignore[misc]
            elapsed = perf_counter() - started if observer.timed else 0.0
            if type(outcome) is Decision:  # a 403, or the limiter's 429
                observer.refused(
                    verifier,
                    outcome,
                    principal,
                    rate,
                    None,
                    method,
                    template,
                    peer,
                    forwarded_for,
                    elapsed,
                )
                denied: Iterable[bytes] = wsgi.deny_response(
                    mw.renderer, outcome, environ, start_response
                )
                return denied
            environ[wsgi.PRINCIPAL_KEY] = principal
            environ[wsgi.DECISION_KEY] = _new_tuple(
                Decision, (True, principal, None, "", (), None, outcome, None)
            )
            admitted = (verifier, principal, method, template, peer, forwarded_for, elapsed)
            return _watched_wsgi(mw, environ, start_response, observer, admitted, outcome, True)
    decision, admission = observed_verify(
        verifier,
        observer,
        wsgi.authorization_from_environ(environ),
        method,
        path,
        None,
        peer,
        forwarded_for,
        True,
    )
    if not decision.allowed:
        result: Iterable[bytes] = wsgi.deny_response(mw.renderer, decision, environ, start_response)
        return result
    principal = decision.principal
    environ[wsgi.PRINCIPAL_KEY] = principal
    environ[wsgi.DECISION_KEY] = decision
    extra = decision.headers
    if admission is None:
        return mw.app(
            environ, wsgi._with_headers(start_response, extra) if extra else start_response
        )
    return _watched_wsgi(
        mw, environ, start_response, observer, admission, extra, not decision.extra_headers
    )


def _watched_wsgi(
    mw: KeyGuardWSGIMiddleware,
    environ: Environ,
    start_response: StartResponse,
    observer: RequestObserver,
    admission: Admission,
    extra: tuple[tuple[str, str], ...],
    rate_only: bool,
) -> Iterable[bytes]:
    """Run the application for an admitted request, adding ``extra`` headers to its response
    (``rate_only``: rate-limit headers only; merged as the plain path merges them) and
    reporting its status to ``observer``."""
    counted = False
    wsgi = _wsgi or _wsgi_module()
    merged = wsgi._merged
    names = wsgi._RATE_NAMES

    def watch(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        # Counts the status, adds keyguard's headers (one wrapper for both).
        nonlocal counted
        if not counted:
            counted = True
            try:
                code = int(status[:3])
            except ValueError:
                code = 500
            observer.responded(admission, code)
        if extra:
            if (
                rate_only
                and type(headers) is list
                and names.isdisjoint(map(_lower, map(_first, headers)))
            ):
                headers = [*headers, *extra]  # merged()'s common case, as the plain path has it
            else:
                headers = merged(headers, extra, rate_only)
        return start_response(status, headers, exc_info)

    try:
        return mw.app(environ, watch)
    except BaseException:
        if not counted:
            counted = True
            observer.responded(admission, 500)
        raise


_new_tuple = tuple.__new__
_CLASSES: dict[type, type] = {}


def observed_class(cls: type) -> type:
    """The observed subclass of :class:`~keyguard.adapters.asgi.KeyGuardMiddleware` or
    :class:`~keyguard.adapters.wsgi.KeyGuardWSGIMiddleware` (``cls``), made once."""
    made = _CLASSES.get(cls)
    if made is None:
        asgi = _asgi or _asgi_module()
        call = _asgi_call if issubclass(cls, asgi.KeyGuardMiddleware) else _wsgi_call
        made = _CLASSES[cls] = type(
            f"Observed{cls.__name__}",
            (cls,),
            {"__call__": call, "__module__": cls.__module__, "__doc__": cls.__doc__},
        )
    return made
