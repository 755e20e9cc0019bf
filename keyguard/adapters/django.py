"""Django: one middleware for sync and async stacks, a view decorator, and settings.

Configuration lives in ``settings.KEYGUARD`` (a dict) and is turned into one
:class:`~keyguard.core.verifier.Verifier` per process, built on first use (the middleware asks
for it at start-up, so a bad setting fails the server's start, not every request) and rebuilt
only when the setting object changes (``override_settings`` in tests)::

    KEYGUARD = {
        "STORE_URL": "sqlite:////var/lib/app/keys.db",        # or a KeyStore; default: env/SQLite
        "POLICY": {"GET /agents": "agents:read", "POST /agents": "agents:write"},
        "PUBLIC": ["/health"],                                 # only with a dict POLICY
        "POLICY_DEFAULT": "deny",                              # unlisted routes (dict POLICY)
        "CACHE_TTL": 1.0,                                      # any Verifier option, upper-case
        # or instead of all of the above: "VERIFIER": "myproject.auth.verifier"
        "RENDERER": "myproject.auth.renderer",                 # optional ProblemRenderer
    }
    MIDDLEWARE = ["keyguard.adapters.django.KeyGuardMiddleware", ...]

``POLICY`` may be a :class:`~keyguard.core.policy.RoutePolicy`, a dict of ``"METHOD /path"``
rules, or a dotted path to a RoutePolicy; ``VERIFIER`` and ``RENDERER`` may be objects or
dotted paths (to the object or a zero-argument factory). Unknown keys are errors, so a typo
such as ``"POLCY"`` cannot silently switch the policy off.

Security notes:

* The middleware checks ``request.method`` and ``request.path_info`` — the path Django's URL
  resolver routes on — against the policy; unlisted routes are denied by default, and without
  a ``POLICY`` every request needs a valid key.
* Django joins repeated header fields with commas (WSGI servers, and its own ASGI handler),
  so a comma in ``HTTP_AUTHORIZATION`` is read as two ``Authorization`` headers and refused.
* Nothing reaches the view on a denial; the principal is ``request.keyguard_principal``
  (``None`` on public routes). ``request.user`` is left to Django's auth machinery.
* Under ASGI the check is awaited (store I/O never blocks the event loop); under WSGI it runs
  in the worker thread. No thread hop either way.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from keyguard.adapters._extras import require_extra

require_extra(__name__, "django", "django", "asgiref")

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

from keyguard.adapters._shared import (
    OWN_KEYS,
    VERIFIER_OPTIONS,
    build_verifier,
    load_object,
    policy_from_settings,
)
from keyguard.adapters.wsgi import authorization_from_environ
from keyguard.core.decision import Decision
from keyguard.core.errors import ConfigurationError
from keyguard.core.render import DEFAULT_RENDERER, ProblemRenderer, request_id_from
from keyguard.core.scopes import Requirement, as_requirement
from keyguard.core.store import KeyStore
from keyguard.core.verifier import AuthorizationValue, Verifier, authorize

if TYPE_CHECKING:
    from keyguard.dashboard import Dashboard
    from keyguard.management.api import ManagementAPI

__all__ = [
    "PRINCIPAL_ATTR",
    "SETTING",
    "KeyGuardConfig",
    "KeyGuardImproperlyConfigured",
    "KeyGuardMiddleware",
    "dashboard_urls",
    "denial_response",
    "get_config",
    "management_urls",
    "require_scopes",
]

#: The name of the Django setting keyguard reads.
SETTING: Final = "KEYGUARD"
#: The request attribute carrying the authenticated :class:`~keyguard.core.decision.Principal`.
PRINCIPAL_ATTR: Final = "keyguard_principal"


View = TypeVar("View", bound=Callable[..., Any])


class KeyGuardImproperlyConfigured(ImproperlyConfigured, ConfigurationError):  # type: ignore[misc]  # Django is untyped
    """``settings.KEYGUARD`` is wrong. Both a Django ``ImproperlyConfigured`` and a keyguard
    ``ConfigurationError``, so either ``except`` catches it."""


@dataclass(frozen=True, slots=True)
class KeyGuardConfig:
    """What ``settings.KEYGUARD`` resolved to: the process's verifier and renderer."""

    verifier: Verifier
    renderer: ProblemRenderer
    owns_store: bool = False


# (the settings object the config was built from, the config). Compared by identity on every
# request, so a changed setting (override_settings) is picked up without a per-request build.
_cache: tuple[object, KeyGuardConfig] | None = None
_lock = threading.Lock()


def get_config() -> KeyGuardConfig:
    """The verifier and renderer ``settings.KEYGUARD`` describes, built once and cached.

    Raises :class:`KeyGuardImproperlyConfigured` for a bad setting.
    """
    raw = getattr(settings, SETTING, None)
    cached = _cache
    if cached is not None and cached[0] is raw:
        return cached[1]
    with _lock:  # one build even when the first requests arrive together
        cached = _cache
        if cached is not None and cached[0] is raw:
            return cached[1]
        config = _build(raw)
        _install((raw, config))
        return config


def _install(entry: tuple[object, KeyGuardConfig] | None) -> None:
    global _cache
    old, _cache = _cache, entry
    if old is not None and old[1].owns_store:
        old[1].verifier.store.close()


def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        with _lock:
            _install(None)


setting_changed.connect(_reset_on_change, dispatch_uid="keyguard.adapters.django.reset")


def _build(raw: object) -> KeyGuardConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise KeyGuardImproperlyConfigured(
            f"settings.{SETTING} must be a dict, not {type(raw).__name__}"
        )
    unknown = sorted(str(k) for k in raw if k not in OWN_KEYS and k not in VERIFIER_OPTIONS)
    if unknown:
        known = ", ".join(sorted(OWN_KEYS | VERIFIER_OPTIONS.keys()))
        raise KeyGuardImproperlyConfigured(
            f"settings.{SETTING} has unknown keys {unknown} (known: {known})"
        )
    try:
        renderer = _renderer(raw.get("RENDERER"))
        if raw.get("VERIFIER") is not None:
            extra = sorted(k for k in raw if k not in ("VERIFIER", "RENDERER"))
            if extra:
                raise ConfigurationError(
                    f"VERIFIER excludes {extra}: configure those on the Verifier itself"
                )
            return KeyGuardConfig(load_object(raw["VERIFIER"], Verifier, "VERIFIER"), renderer)
        policy = policy_from_settings(
            raw.get("POLICY"), raw.get("PUBLIC"), raw.get("POLICY_DEFAULT")
        )
        options = {VERIFIER_OPTIONS[k]: v for k, v in raw.items() if k in VERIFIER_OPTIONS}
        store = raw.get("STORE_URL")
        verifier = build_verifier(None, store, policy, options)
        return KeyGuardConfig(verifier, renderer, owns_store=not isinstance(store, KeyStore))
    except KeyGuardImproperlyConfigured:
        raise
    except (ConfigurationError, ImportError, ImproperlyConfigured, TypeError, ValueError) as exc:
        raise KeyGuardImproperlyConfigured(f"settings.{SETTING}: {exc}") from exc


def _renderer(value: object) -> ProblemRenderer:
    return DEFAULT_RENDERER if value is None else load_object(value, ProblemRenderer, "RENDERER")


# -- responses ---------------------------------------------------------------------------------
def denial_response(renderer: ProblemRenderer, decision: Decision, request: HttpRequest) -> Any:
    """The shared problem+json rendering of a denial, as a Django ``HttpResponse``."""
    meta = getattr(request, "META", None) or {}
    problem = renderer.render(decision, request_id_from(meta.get("HTTP_X_REQUEST_ID")))
    return HttpResponse(problem.body, status=problem.status, headers=problem.headers)


def _with_headers(response: Any, headers: tuple[tuple[str, str], ...]) -> Any:
    """``response`` with keyguard's headers set (replacing the view's fields of the same name).

    Django checks every header it is given in Python (charset, line breaks): some 1 µs a
    field, 5 µs for the five rate-limit fields of every response. These values are keyguard's
    own (numbers, the configured window names, a date), never request data, and ASCII without
    line breaks (asserted here, once per value, at C speed), so they go straight into the
    response's header store, keyed as Django keys it (``name.lower() -> (name, value)``). A
    response without that store (another Django, another response class) gets them the
    public way."""
    store = getattr(getattr(response, "headers", None), "_store", None)
    if type(store) is dict:
        for name, value in headers:
            if value.isascii() and value.isprintable():
                store[name.lower()] = (name, value)
            else:
                response[name] = value
    else:
        for name, value in headers:
            response[name] = value
    return response


def _with_rate_headers(response: Any, headers: tuple[tuple[str, str], ...]) -> Any:
    """:func:`_with_headers` for the default path's rate-limit fields, which need no check at
    all: the plan's renderer builds them from integers and the window names, which the window
    grammar keeps to ASCII letters, digits and ``_.-``."""
    store = getattr(getattr(response, "headers", None), "_store", None)
    if type(store) is not dict:
        return _with_headers(response, headers)
    for name, value in headers:
        store[name.lower()] = (name, value)
    return response


def _request_values(
    request: HttpRequest,
) -> tuple[AuthorizationValue, str, str, str | None, str | None]:
    """The middleware's facts of a request, positionally (no dict to build and unpack on every
    request): authorization, method, path, peer, forwarded_for."""
    meta = request.META
    return (
        authorization_from_environ(meta),
        request.method or "GET",
        request.path_info,
        meta.get("REMOTE_ADDR"),
        meta.get("HTTP_X_FORWARDED_FOR"),
    )


def _request_facts(request: HttpRequest) -> dict[str, Any]:
    """What the verifier needs from a Django request (the same for every entry point)."""
    meta = request.META
    return {
        "authorization": authorization_from_environ(meta),
        "method": request.method,
        "path": request.path_info,
        "peer": meta.get("REMOTE_ADDR"),
        "forwarded_for": meta.get("HTTP_X_FORWARDED_FOR"),
    }


# -- middleware --------------------------------------------------------------------------------
class KeyGuardMiddleware:
    """Authenticate, authorize and rate-limit every request against ``settings.KEYGUARD``.

    Sync- and async-capable: Django hands it the kind of ``get_response`` its stack runs
    (WSGI → sync, ASGI → async) and it answers in kind, so no request pays for a thread switch.
    Put it early in ``MIDDLEWARE``: requests it refuses never reach later middleware or views.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        if get_response is None:
            raise ValueError("get_response must be provided.")
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            # As django's MiddlewareMixin: flag the instance, switch inside __call__.
            markcoroutinefunction(self)
        get_config()  # a bad setting fails start-up, not every request

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        config = get_config()
        verifier = config.verifier
        authorization, method, path, peer, forwarded = _request_values(request)
        decision: Decision | None = None
        if type(authorization) is str and verifier.limiter is not None:
            # The default path, when it applies: a recently verified key admitted by an
            # in-process limiter, its rate-limit headers rendered with the decision.
            fast = verifier.fast_admit(authorization.encode(), method, path, None, True)
            if type(fast) is tuple:
                principal, headers = fast  # type: ignore[misc]  # not a Decision
                setattr(request, PRINCIPAL_ATTR, principal)
                response = self.get_response(request)
                return _with_rate_headers(response, headers) if headers else response
            decision = fast  # type: ignore[assignment]  # a Decision or None: not a tuple
        # The no-I/O answer first (a recently verified key, a cached denial), then verify().
        if decision is None:
            decision = verifier.verify_nowait(
                authorization, method, path, peer=peer, forwarded_for=forwarded
            )
        if decision is None:
            decision = verifier.verify(
                authorization, method, path, peer=peer, forwarded_for=forwarded
            )
        if not decision.allowed:
            return denial_response(config.renderer, decision, request)
        setattr(request, PRINCIPAL_ATTR, decision.principal)
        response = self.get_response(request)
        if decision.rate is None and not decision.extra_headers:
            return response
        return _with_headers(response, decision.headers)

    async def __acall__(self, request: HttpRequest) -> Any:
        config = get_config()
        verifier = config.verifier
        authorization, method, path, peer, forwarded = _request_values(request)
        decision: Decision | None = None
        if type(authorization) is str and verifier.limiter is not None:
            fast = verifier.fast_admit(authorization.encode(), method, path, None, True)
            if type(fast) is tuple:
                principal, headers = fast  # type: ignore[misc]  # not a Decision
                setattr(request, PRINCIPAL_ATTR, principal)
                response = await self.get_response(request)
                return _with_rate_headers(response, headers) if headers else response
            decision = fast  # type: ignore[assignment]  # a Decision or None: not a tuple
        # No await on the common paths (a recently verified key, a cached denial).
        if decision is None:
            decision = verifier.verify_nowait(
                authorization, method, path, peer=peer, forwarded_for=forwarded
            )
        if decision is None:
            decision = await verifier.averify(
                authorization, method, path, peer=peer, forwarded_for=forwarded
            )
        if not decision.allowed:
            return denial_response(config.renderer, decision, request)
        setattr(request, PRINCIPAL_ATTR, decision.principal)
        response = await self.get_response(request)
        if decision.rate is None and not decision.extra_headers:
            return response
        return _with_headers(response, decision.headers)

    def __repr__(self) -> str:
        mode = "async" if self.async_mode else "sync"
        return f"<KeyGuardMiddleware {mode}>"


# -- view decorator ----------------------------------------------------------------------------
def require_scopes(*requirements: str | Requirement) -> Callable[[View], View]:
    """Require scopes for one view (function or ``as_view()``, sync or async).

    ``@require_scopes("agents:read")``; several arguments must all hold; pass
    :func:`~keyguard.core.scopes.any_of`/``all_of`` trees for anything else. With the
    middleware in front, the principal it found is checked (no second verification); on a
    route the policy made public, or without the middleware, the key is verified here.
    """
    requirement = as_requirement(requirements)

    def decorate(view: View) -> View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                principal = getattr(request, PRINCIPAL_ATTR, None)
                if principal is not None:
                    denial = authorize(principal, requirement)
                    if denial is not None:
                        return denial_response(get_config().renderer, denial, request)
                    return await view(request, *args, **kwargs)
                config = get_config()
                decision = await config.verifier.averify(
                    **_request_facts(request), required=requirement
                )
                if not decision.allowed:
                    return denial_response(config.renderer, decision, request)
                setattr(request, PRINCIPAL_ATTR, decision.principal)
                return _with_headers(await view(request, *args, **kwargs), decision.headers)

            return cast(View, async_wrapper)

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            principal = getattr(request, PRINCIPAL_ATTR, None)
            if principal is not None:
                denial = authorize(principal, requirement)
                if denial is not None:
                    return denial_response(get_config().renderer, denial, request)
                return view(request, *args, **kwargs)
            config = get_config()
            decision = config.verifier.verify(**_request_facts(request), required=requirement)
            if not decision.allowed:
                return denial_response(config.renderer, decision, request)
            setattr(request, PRINCIPAL_ATTR, decision.principal)
            return _with_headers(view(request, *args, **kwargs), decision.headers)

        return cast(View, wrapper)

    return decorate


# -- the key-management API ----------------------------------------------------------------------
def management_urls(api: ManagementAPI) -> list[Any]:
    """URL patterns serving ``api`` (a :class:`~keyguard.management.api.ManagementAPI`) at
    ``api.prefix``: ``urlpatterns += management_urls(api)``. CSRF-exempt (callers authenticate
    with an API key, not a cookie). With the keyguard middleware and a ``POLICY``, list
    ``api.public_paths()`` in ``PUBLIC`` (the API authenticates its callers itself).
    """
    import re

    from django.urls import re_path
    from django.views.decorators.csrf import csrf_exempt

    from keyguard.management.api.wsgi import request_from_environ

    def view(request: HttpRequest, rest: str | None = None) -> HttpResponse:
        del rest  # routed by the API itself
        environ = dict(request.META)
        environ["PATH_INFO"] = request.path_info
        environ["SCRIPT_NAME"] = ""
        environ["wsgi.input"] = request  # Django's request reads the body stream
        built, inside = request_from_environ(environ, api)
        answer = api.handle(built) if inside else api.outside(built)
        response = HttpResponse(answer.body, status=answer.status)
        for name, value in answer.headers:
            response[name] = value
        return response

    base = re.escape((api.prefix or "").lstrip("/"))
    pattern = rf"^{base}(?:/(?P<rest>.*))?$" if base else r"^(?P<rest>.*)$"
    return [re_path(pattern, csrf_exempt(view), name="keyguard_keys")]


# -- the dashboard --------------------------------------------------------------------------------
def dashboard_urls(dashboard: Dashboard) -> list[Any]:
    """URL patterns serving ``dashboard`` (a :class:`~keyguard.dashboard.Dashboard`) at
    ``dashboard.prefix``: ``urlpatterns += dashboard_urls(dashboard)``.

    Exempt from Django's CSRF middleware because the dashboard checks its own synchronizer
    token on every form (Django's token is not in its forms). With the keyguard middleware and
    a ``POLICY``, list ``dashboard.public_paths()`` in ``PUBLIC``.
    """
    import re

    from django.urls import re_path
    from django.views.decorators.csrf import csrf_exempt

    from keyguard.dashboard.skins import request_from_environ

    def view(request: HttpRequest, rest: str | None = None) -> HttpResponse:
        del rest  # routed by the dashboard itself
        environ = dict(request.META)
        environ["PATH_INFO"] = request.path_info
        environ["SCRIPT_NAME"] = request.META.get("SCRIPT_NAME", "") or ""
        environ["wsgi.url_scheme"] = request.scheme
        environ["wsgi.input"] = request  # Django's request reads the body stream
        built, inside = request_from_environ(environ, dashboard)
        answer = dashboard.handle(built) if inside else dashboard.outside(built)
        response = HttpResponse(answer.body, status=answer.status)
        for name, value in answer.headers:
            if name == "set-cookie":
                continue
            response[name] = value
        for name, value in answer.headers:
            if name == "set-cookie":
                # HttpResponse keeps one value per header name: cookies go through its jar.
                _set_cookie(response, value)
        return response

    base = re.escape((dashboard.prefix or "").lstrip("/"))
    pattern = rf"^{base}(?:/(?P<rest>.*))?$" if base else r"^(?P<rest>.*)$"
    return [re_path(pattern, csrf_exempt(view), name="keyguard_dashboard")]


def _set_cookie(response: HttpResponse, header: str) -> None:
    """Copy one ``Set-Cookie`` value built by the dashboard onto a Django response."""
    first, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    options: dict[str, Any] = {"httponly": False, "secure": False}
    for attribute in attributes:
        key, _, arg = attribute.partition("=")
        key = key.lower()
        if key == "path":
            options["path"] = arg
        elif key == "max-age":
            options["max_age"] = int(arg)
        elif key == "samesite":
            options["samesite"] = arg
        elif key == "httponly":
            options["httponly"] = True
        elif key == "secure":
            options["secure"] = True
    response.set_cookie(name, value, **options)
