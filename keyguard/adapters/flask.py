"""Flask: the :class:`KeyGuard` extension, the :func:`require_scopes` view decorator, and
:func:`current_principal`.

::

    app.config["KEYGUARD_STORE_URL"] = "sqlite:////var/lib/app/keys.db"
    app.config["KEYGUARD_POLICY"] = {"GET /agents": "agents:read", "POST /agents": "agents:write"}
    app.config["KEYGUARD_PUBLIC"] = ["/health"]
    guard = KeyGuard(app)  # or KeyGuard(app, verifier=...), or guard.init_app(app) later

    @app.post("/tasks/<task_id>/execute")
    @require_scopes("tasks:execute")
    def execute(task_id): ...

Configuration comes from the constructor's keyword arguments, else from ``app.config``:
``KEYGUARD_STORE_URL`` (else the ``KEYGUARD_STORE_URL`` environment variable, else SQLite),
``KEYGUARD_POLICY`` (a :class:`~keyguard.core.policy.RoutePolicy`, a ``{"METHOD /path":
scope}`` dict, or a dotted path), ``KEYGUARD_PUBLIC`` and ``KEYGUARD_POLICY_DEFAULT`` (for a
dict policy), ``KEYGUARD_VERIFIER``/``KEYGUARD_RENDERER`` (objects or dotted paths), and any
:class:`~keyguard.core.verifier.Verifier` option as ``KEYGUARD_<OPTION>``
(``KEYGUARD_CACHE_TTL``). An unknown ``KEYGUARD_*`` key is an error, so a typo cannot
silently switch the policy off.

Security notes:

* With a policy, every request is checked in a ``before_request`` hook that runs before the
  app's own hooks, on the WSGI method and ``PATH_INFO`` — exactly what
  :class:`~keyguard.adapters.wsgi.KeyGuardWSGIMiddleware` checks — so unlisted routes (404s
  included) are denied by default. Without a policy only decorated views are protected.
* WSGI servers (and Werkzeug's test client) join repeated header fields with commas: a comma
  in the ``Authorization`` value counts as two headers and is refused.
* Nothing reaches the view on a denial. The response is the shared problem+json rendering,
  identical to the WSGI middleware's; rate-limit headers are added to successful responses.

The principal lives in the WSGI environ (``request.environ["keyguard.principal"]``, the same
key the WSGI middleware uses), not on ``flask.g``: every access to one of Flask's context
proxies costs most of a microsecond, and the hook touches ``request`` exactly once.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from keyguard.adapters._extras import require_extra

require_extra(__name__, "flask", "flask")

from flask import Flask, Response, current_app, has_app_context, request

from keyguard.adapters._shared import (
    OWN_KEYS,
    VERIFIER_OPTIONS,
    build_verifier,
    load_object,
    policy_from_settings,
)
from keyguard.adapters.wsgi import (
    _RATE_NAMES,
    PRINCIPAL_KEY,
    environ_facts,
    fast_admit_environ,
    merged_headers,
    verify_environ,
)
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer, request_id_from
from keyguard.core.scopes import Requirement, as_requirement
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier, authorize

if TYPE_CHECKING:
    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI

__all__ = [
    "EXTENSION_KEY",
    "KeyGuard",
    "current_principal",
    "mount_dashboard",
    "mount_management",
    "require_scopes",
]

#: Where the extension keeps its per-app state: ``app.extensions[EXTENSION_KEY]``.
EXTENSION_KEY: Final = "keyguard"
CONFIG_PREFIX: Final = "KEYGUARD_"

_HEADERS_KEY: Final = "keyguard.headers"
#: The default path's rate-limit headers (text pairs), kept apart from the others.
_RATE_KEY: Final = "keyguard.rate_headers"
_first = itemgetter(0)
_lower = str.lower

View = TypeVar("View", bound=Callable[..., Any])


def _proxied_environ() -> dict[str, Any]:
    return request.environ


try:
    # The context variable behind Flask's ``request`` proxy (Flask >= 2.3): read directly it
    # costs a fifteenth of a trip through the proxy, on every request (the hook's one read).
    from flask.globals import _cv_request
except ImportError:  # pragma: no cover - a Flask without it: the public proxy
    _request_environ = _proxied_environ
else:

    def _request_environ() -> dict[str, Any]:
        return _cv_request.get().request.environ


class _AppState:
    """One app's verifier and renderer, and the hooks that use them."""

    __slots__ = ("renderer", "verifier")

    def __init__(self, verifier: Verifier, renderer: ProblemRenderer) -> None:
        self.verifier = verifier
        self.renderer = renderer

    def deny(self, decision: Decision, environ: dict[str, Any]) -> Response:
        problem = self.renderer.render(decision, request_id_from(environ.get("HTTP_X_REQUEST_ID")))
        return current_app.response_class(
            problem.body, status=problem.status, headers=list(problem.headers)
        )

    def accept(self, decision: Decision, environ: dict[str, Any]) -> Response | None:
        """The denial response, or ``None`` after recording an allowed decision."""
        if not decision.allowed:
            return self.deny(decision, environ)
        environ[PRINCIPAL_KEY] = decision.principal
        if decision.rate is not None or decision.extra_headers:
            environ.setdefault(_HEADERS_KEY, []).extend(decision.headers)
        return None

    def before_request(self) -> Response | None:
        verifier = self.verifier
        if verifier.policy is None:
            return None  # decorator mode: only @require_scopes views are guarded
        environ = _request_environ()
        fast = fast_admit_environ(verifier, environ)
        if type(fast) is tuple:  # the default path: admitted, its headers rendered
            principal, headers = fast  # type: ignore[misc]  # not a Decision: a plain tuple
            environ[PRINCIPAL_KEY] = principal
            if headers:
                environ[_RATE_KEY] = headers  # rate-limit fields only
            return None
        decision: Decision = fast if fast is not None else verify_environ(verifier, environ)  # type: ignore[assignment]
        return self.accept(decision, environ)


class _ResponseHeaders:
    """``app.wsgi_app``, adding the headers the hooks recorded for the request (rate limits,
    key expiry) to the response's start, replacing any field of the same name the app set.

    At the WSGI level rather than in an ``after_request`` hook: appending to a Werkzeug
    ``Headers`` object validates every field in Python, several times the cost of joining two
    lists of pairs, and an ``after_request`` hook pays a context-proxy lookup besides."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            rate = environ.get(_RATE_KEY)
            if rate is not None:
                # The default path's rate-limit fields: one C-level pass over the app's names
                # finds none of them (almost always), and the lists are joined.
                if _RATE_NAMES.isdisjoint(map(_lower, map(_first, headers))):
                    headers = [*headers, *rate]
                else:
                    headers = merged_headers(headers, rate)
            extra = environ.get(_HEADERS_KEY)
            if extra:
                headers = merged_headers(headers, extra)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


class KeyGuard:
    """The Flask extension: ``KeyGuard(app, ...)`` or ``guard = KeyGuard(...)`` then
    ``guard.init_app(app)``.

    Keyword arguments override ``app.config``; ``verifier`` excludes ``store``, ``policy``
    and Verifier options (configure those on the verifier). Configuration errors (a bad
    store URL, an invalid policy) raise :class:`~keyguard.core.errors.ConfigurationError`
    from ``init_app``, at start-up.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        verifier: Verifier | None = None,
        store: KeyStore | str | None = None,
        policy: RoutePolicy | None = None,
        renderer: ProblemRenderer | None = None,
        **options: Any,
    ) -> None:
        if verifier is not None and (store is not None or policy is not None or options):
            raise ConfigurationError("pass either verifier= or store=/policy=/options, not both")
        unknown = sorted(set(options) - set(VERIFIER_OPTIONS.values()))
        if unknown:
            raise ConfigurationError(f"unknown Verifier options {unknown}")
        self._verifier = verifier
        self._store = store
        self._policy = policy
        self._renderer = renderer
        self._options = options
        self._last: _AppState | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build (or take) the app's verifier and register the request hooks."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError("KeyGuard is already initialised on this app")
        state = self._make_state(app.config)
        app.extensions[EXTENSION_KEY] = state
        # First in line: the app's own before_request hooks run only for allowed requests.
        app.before_request_funcs.setdefault(None, []).insert(0, state.before_request)
        if not isinstance(app.wsgi_app, _ResponseHeaders):
            app.wsgi_app = _ResponseHeaders(app.wsgi_app)  # type: ignore[method-assign]
        self._last = state

    def _make_state(self, config: Mapping[str, Any]) -> _AppState:
        found = {
            k[len(CONFIG_PREFIX) :]: v for k, v in config.items() if k.startswith(CONFIG_PREFIX)
        }
        unknown = sorted(k for k in found if k not in OWN_KEYS and k not in VERIFIER_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"unknown config keys {[CONFIG_PREFIX + k for k in unknown]}; known: "
                f"{sorted(CONFIG_PREFIX + k for k in OWN_KEYS | VERIFIER_OPTIONS.keys())}"
            )
        renderer = self._renderer
        if renderer is None:
            raw = found.get("RENDERER")
            renderer = (
                DEFAULT_RENDERER
                if raw is None
                else load_object(raw, ProblemRenderer, "KEYGUARD_RENDERER")
            )
        building = {k for k in found if k not in ("VERIFIER", "RENDERER")}
        verifier = self._verifier
        if verifier is None and found.get("VERIFIER") is not None:
            verifier = load_object(found["VERIFIER"], Verifier, "KEYGUARD_VERIFIER")
            if self._store is not None or self._policy is not None or self._options:
                raise ConfigurationError(
                    "KEYGUARD_VERIFIER excludes store=/policy=/options: configure the verifier"
                )
        if verifier is not None:
            if building:
                raise ConfigurationError(
                    f"a verifier is given, so {sorted(CONFIG_PREFIX + k for k in building)} "
                    "would be ignored: configure them on the verifier instead"
                )
            return _AppState(verifier, renderer)
        policy = self._policy
        if policy is None:
            policy = policy_from_settings(
                found.get("POLICY"),
                found.get("PUBLIC"),
                found.get("POLICY_DEFAULT"),
                prefix=CONFIG_PREFIX,
            )
        elif "POLICY" in found or "PUBLIC" in found or "POLICY_DEFAULT" in found:
            raise ConfigurationError(
                "policy= is given: remove KEYGUARD_POLICY, KEYGUARD_PUBLIC and "
                "KEYGUARD_POLICY_DEFAULT"
            )
        options = {VERIFIER_OPTIONS[k]: v for k, v in found.items() if k in VERIFIER_OPTIONS}
        options.update(self._options)
        store = self._store if self._store is not None else found.get("STORE_URL")
        return _AppState(build_verifier(None, store, policy, options), renderer)

    @property
    def verifier(self) -> Verifier:
        """The current app's verifier (outside an app context: the last app initialised)."""
        state = _state() if has_app_context() else self._last
        if state is None:
            raise ConfigurationError("KeyGuard.init_app(app) has not been called")
        return state.verifier

    def __repr__(self) -> str:
        return f"<KeyGuard verifier={self._verifier!r}>"


def _state() -> _AppState:
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise ConfigurationError("keyguard is not set up on this app: call KeyGuard(app)")
    return cast(_AppState, state)


def current_principal() -> Principal | None:
    """The key that authenticated this request, or ``None`` (public route, or not checked)."""
    return cast("Principal | None", request.environ.get(PRINCIPAL_KEY))


def require_scopes(*requirements: str | Requirement) -> Callable[[View], View]:
    """Require scopes for one view (sync or async), with or without a policy.

    ``@require_scopes("agents:read")``; several arguments must all hold; pass
    :func:`~keyguard.core.scopes.any_of`/``all_of`` trees for anything else. Put it below
    ``@app.route``. When the policy hook already authenticated the key, only the scopes
    are checked; otherwise (no policy, or a public route) the key is verified here.
    """
    requirement = as_requirement(requirements)

    def check_sync() -> Response | None:
        state = _state()
        environ = request.environ
        principal = environ.get(PRINCIPAL_KEY)
        if principal is not None:
            denial = authorize(principal, requirement)
            return None if denial is None else state.deny(denial, environ)
        decision = state.verifier.verify(**environ_facts(environ), required=requirement)
        return state.accept(decision, environ)

    async def check_async() -> Response | None:
        state = _state()
        environ = request.environ
        principal = environ.get(PRINCIPAL_KEY)
        if principal is not None:
            denial = authorize(principal, requirement)
            return None if denial is None else state.deny(denial, environ)
        decision = await state.verifier.averify(**environ_facts(environ), required=requirement)
        return state.accept(decision, environ)

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                denial = await check_async()
                if denial is not None:
                    return denial
                return await view(*args, **kwargs)

            return cast(View, async_wrapper)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            denial = check_sync()
            if denial is not None:
                return denial
            return view(*args, **kwargs)

        return cast(View, wrapper)

    return decorate


# -- the key-management API ----------------------------------------------------------------------
_MANAGEMENT_METHODS: Final = ["GET", "POST", "PATCH", "DELETE", "PUT"]


def mount_management(app: Flask, api: ManagementAPI, *, endpoint: str = "keyguard_keys") -> None:
    """Serve ``api`` (a :class:`~keyguard.management.api.ManagementAPI`) in ``app`` at
    ``api.prefix``: two URL rules (the prefix and everything below it) answered by the API.

    The API authenticates its callers itself: with a ``KEYGUARD_POLICY``, list
    ``api.public_paths()`` in ``KEYGUARD_PUBLIC`` (or requests are verified twice).
    """
    from keyguard.management.api.wsgi import ManagementWSGI

    wsgi = ManagementWSGI(api)

    def view(rest: str = "") -> Response:
        del rest  # routed by the API itself, from the WSGI environ
        answer = wsgi.respond(request.environ)
        return current_app.response_class(
            answer.body, status=answer.status, headers=list(answer.headers)
        )

    base = api.prefix or ""
    app.add_url_rule(base or "/", endpoint, view, methods=_MANAGEMENT_METHODS, strict_slashes=False)
    app.add_url_rule(f"{base}/<path:rest>", f"{endpoint}_path", view, methods=_MANAGEMENT_METHODS)


# -- the dashboard --------------------------------------------------------------------------------
def mount_dashboard(
    app: Flask, dashboard: Dashboard, *, endpoint: str = "keyguard_dashboard"
) -> None:
    """Serve ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) in ``app`` at
    ``dashboard.prefix``: two URL rules answered by the dashboard's WSGI skin.

    The dashboard signs its users in itself (a session cookie, its own CSRF tokens): with a
    ``KEYGUARD_POLICY``, list ``dashboard.public_paths()`` in ``KEYGUARD_PUBLIC``.
    """
    from keyguard.dashboard.skins import DashboardWSGI

    wsgi = DashboardWSGI(dashboard)

    def view(rest: str = "") -> Response:
        del rest  # routed by the dashboard itself, from the WSGI environ
        answer = wsgi.respond(request.environ)
        return current_app.response_class(
            answer.body, status=answer.status, headers=list(answer.headers)
        )

    base = dashboard.prefix or ""
    methods = ["GET", "HEAD", "POST"]
    app.add_url_rule(base or "/", endpoint, view, methods=methods, strict_slashes=False)
    app.add_url_rule(f"{base}/<path:rest>", f"{endpoint}_path", view, methods=methods)
