"""WSGI middleware: keyguard in front of any WSGI application (Flask, Django, Werkzeug, bare).

Security notes:

* WSGI servers join repeated header fields with commas, so a ``HTTP_AUTHORIZATION`` value
  containing a comma is treated as two ``Authorization`` headers and refused with
  ``invalid_request`` — a keyguard key never contains a comma. The same joining makes
  ``HTTP_X_FORWARDED_FOR`` the whole ``X-Forwarded-For`` list, every line in order (gunicorn,
  Werkzeug, wsgiref and Django's ASGI handler all do it), which is what the brute-force guard
  reads — the ASGI adapters join the lines the same way
  (:func:`~keyguard.core.addresses.join_field_lines`).
* The check runs synchronously in the worker thread, as WSGI expects: no event loop is
  started inside a request.
* Nothing reaches the wrapped application on a denial. On success the principal is in
  ``environ["keyguard.principal"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any, Final

from keyguard.adapters._observed import observed_class
from keyguard.adapters._shared import build_verifier
from keyguard.core.decision import Decision, Principal
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer
from keyguard.core.store import KeyStore
from keyguard.core.verifier import AuthorizationValue, Verifier

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_new_tuple = tuple.__new__

PRINCIPAL_KEY = "keyguard.principal"
DECISION_KEY = "keyguard.decision"

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
_STATUS_LINES = {status: f"{status} {reason}" for status, reason in _REASONS.items()}


def authorization_from_environ(environ: Environ) -> AuthorizationValue:
    """The Authorization value(s) of a WSGI request; a comma-joined value counts as several."""
    value: str | None = environ.get("HTTP_AUTHORIZATION")
    if value is None or "," not in value:
        return value
    return value.split(",")


def path_from_environ(environ: Environ) -> str:
    """PATH_INFO as the text the client sent (WSGI carries it as latin-1-decoded bytes).

    Bytes that are not UTF-8 become U+FFFD, as Werkzeug decodes them for routing: the path
    matched against the policy is then the path the application routes. (Taken as latin-1
    text instead, ``/caf\\xe9`` would match a public ``/café`` while the application routed
    ``/caf\\ufffd`` to a guarded ``/{name}``.)
    """
    raw: str = environ.get("PATH_INFO", "") or "/"
    if raw.isascii():
        return raw
    try:
        return raw.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not latin-1 text: a server that already decoded the path
        return raw


def environ_facts(environ: Environ) -> dict[str, Any]:
    """What the verifier needs from a WSGI request, as keyword arguments of ``verify``."""
    return {
        "authorization": authorization_from_environ(environ),
        "method": environ.get("REQUEST_METHOD", "GET"),
        "path": path_from_environ(environ),
        "peer": environ.get("REMOTE_ADDR"),
        "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
    }


def verify_environ(verifier: Verifier, environ: Environ) -> Decision:
    """The verifier's decision for a WSGI request: the no-I/O answer first (a recently
    verified key, a cached denial; the same decision ``verify()`` gives, for a fraction of its
    cost), ``verify()`` when it stands aside. :func:`environ_facts` spelled out: building and
    unpacking its dict costs about a microsecond on this per-request path."""
    authorization = authorization_from_environ(environ)
    method = environ.get("REQUEST_METHOD", "GET")
    path = path_from_environ(environ)
    peer = environ.get("REMOTE_ADDR")
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    decision = verifier.verify_nowait(
        authorization, method, path, peer=peer, forwarded_for=forwarded
    )
    if decision is None:
        decision = verifier.verify(authorization, method, path, peer=peer, forwarded_for=forwarded)
    return decision


def fast_admit_environ(
    verifier: Verifier, environ: Environ
) -> tuple[Principal, tuple[tuple[str, str], ...]] | Decision | None:
    """:meth:`Verifier.fast_admit <keyguard.core.verifier.Verifier.fast_admit>` for a WSGI
    request: ``(principal, rate-limit headers as text pairs)`` for a recently verified key
    the in-process limiter admits, the denial it settles (403, 429), else ``None`` (then
    :func:`verify_environ` decides)."""
    value = environ.get("HTTP_AUTHORIZATION")
    if type(value) is not str or "," in value or verifier.limiter is None:
        return None  # no key, or several (verify() refuses them), or no rate limits
    return verifier.fast_admit(  # type: ignore[return-value]  # not observed: a pair
        value.encode(),
        environ.get("REQUEST_METHOD", "GET"),
        path_from_environ(environ),
        None,
        True,
    )


def deny_response(
    renderer: ProblemRenderer,
    decision: Decision,
    environ: Environ,
    start_response: StartResponse,
) -> list[bytes]:
    """Send a denial through ``start_response``; returns the body iterable."""
    status, headers, body = renderer.text_parts(decision, environ.get("HTTP_X_REQUEST_ID"))
    start_response(_STATUS_LINES.get(status) or f"{status} Error", headers)
    return [body]


class KeyGuardWSGIMiddleware:
    """Authenticate, authorize and rate-limit every request of a WSGI app.

    ``app.wsgi_app = KeyGuardWSGIMiddleware(app.wsgi_app, store=..., policy=...)``. Extra
    keyword arguments go to :class:`~keyguard.core.verifier.Verifier`.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        verifier: Verifier | None = None,
        store: KeyStore | str | None = None,
        policy: RoutePolicy | None = None,
        renderer: ProblemRenderer = DEFAULT_RENDERER,
        **options: Any,
    ) -> None:
        self.app = app
        self.verifier = build_verifier(verifier, store, policy, options)
        self.renderer = renderer
        if self.verifier.observer is not None:
            # Events or usage counting: the observed request path (keyguard.adapters._observed).
            self.__class__ = observed_class(type(self))

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        fast = fast_admit_environ(self.verifier, environ)
        if type(fast) is tuple:
            principal, headers = fast  # type: ignore[misc]  # not a Decision: a plain tuple
            environ[PRINCIPAL_KEY] = principal
            environ[DECISION_KEY] = _new_tuple(
                Decision, (True, principal, None, "", (), None, headers, None)
            )
            if headers:
                start_response = _with_headers(start_response, headers, True)
            return self.app(environ, start_response)
        decision: Decision = (
            fast if fast is not None else verify_environ(self.verifier, environ)  # type: ignore[assignment]
        )
        if not decision.allowed:
            return deny_response(self.renderer, decision, environ, start_response)
        environ[PRINCIPAL_KEY] = decision.principal
        environ[DECISION_KEY] = decision
        if decision.rate is not None or decision.extra_headers:
            start_response = _with_headers(
                start_response, decision.headers, not decision.extra_headers
            )
        return self.app(environ, start_response)


#: Every header name (lower-case) a rate-limited decision without extra headers can add.
_RATE_NAMES: Final = frozenset(
    {"ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining"}
    | {"x-ratelimit-reset"}
)
_first = itemgetter(0)
_lower = str.lower


def _with_headers(
    start_response: StartResponse, extra: tuple[tuple[str, str], ...], rate_only: bool = False
) -> StartResponse:
    """Wrap ``start_response`` so the response carries ``extra`` headers, replacing any field
    of the same name the application set (names compare case-insensitively). ``rate_only``:
    ``extra`` holds rate-limit headers only, so one C-level pass over the application's
    header names decides whether any must be dropped (almost never)."""

    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        # _merged() inlined: the plain path's every admitted request.
        if type(headers) is not list:
            headers = list(headers)
        if not rate_only or not _RATE_NAMES.isdisjoint(map(_lower, map(_first, headers))):
            names = {k.lower() for k, _ in extra}
            headers = [(k, v) for k, v in headers if k.lower() not in names]
        return start_response(status, [*headers, *extra], exc_info)

    return wrapped


def _merged(
    headers: Iterable[tuple[str, str]], extra: tuple[tuple[str, str], ...], rate_only: bool
) -> list[tuple[str, str]]:
    """The application's ``headers`` then ``extra``, without the application's fields that
    ``extra`` replaces (see :func:`_with_headers`, whose wrapper does the same inline); the
    observed path's merge."""
    if type(headers) is not list:
        headers = list(headers)
    if not rate_only or not _RATE_NAMES.isdisjoint(map(_lower, map(_first, headers))):
        names = {k.lower() for k, _ in extra}
        headers = [(k, v) for k, v in headers if k.lower() not in names]
    return [*headers, *extra]


def merged_headers(
    headers: Iterable[tuple[str, str]], extra: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The application's response headers followed by ``extra``, dropping any field the app
    set that ``extra`` sends too (names compare case-insensitively), so none appears twice;
    a name ``extra`` itself repeats keeps its last value."""
    extra = list(extra)
    names = {k.lower() for k, _ in extra}
    if len(names) != len(extra):
        last = {k.lower(): (k, v) for k, v in extra}
        extra = list(last.values())
    if type(headers) is not list:
        headers = list(headers)
    if not names.isdisjoint(map(_lower, map(_first, headers))):
        headers = [(k, v) for k, v in headers if k.lower() not in names]
    return [*headers, *extra]


# -- the dashboard --------------------------------------------------------------------------------
def mount_dashboard(app: WSGIApp, dashboard: Any) -> WSGIApp:
    """``app`` with ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) answering every
    request under ``dashboard.prefix``; everything else goes to ``app``.

    Wrap the application *with* keyguard's middleware: the dashboard signs its users in
    itself, with a session cookie.
    """
    dashboard_app = dashboard.wsgi_app()
    prefix = dashboard.prefix

    def dispatch(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or ""
        if path == prefix or path.startswith(prefix + "/"):
            result: Iterable[bytes] = dashboard_app(environ, start_response)
            return result
        return app(environ, start_response)

    return dispatch
