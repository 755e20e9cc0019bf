"""Django REST framework: an authentication class, a scope permission, and the problem renderer.

Settings (with ``settings.KEYGUARD`` as for :mod:`keyguard.adapters.django`)::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["keyguard.adapters.drf.KeyGuardAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["keyguard.adapters.drf.HasScopes"],
        "EXCEPTION_HANDLER": "keyguard.adapters.drf.exception_handler",
        "UNAUTHENTICATED_USER": None,  # no django.contrib.auth needed
    }

    class AgentList(APIView):
        required_scopes = {"GET": "agents:read", "POST": "agents:write"}  # or one scope/list

    class Execute(APIView):
        permission_classes = [HasScopes.require("tasks:execute")]

:class:`KeyGuardAuthentication` authenticates (``request.auth`` is the
:class:`~keyguard.core.decision.Principal`, ``request.user`` a :class:`KeyUser`); route
policies are the middleware's job, scopes are :class:`HasScopes`'s. A request without a
``UserKey`` credential is left to the next authentication class (DRF's convention); a bad key
is refused at once. :class:`HasScopes` denies by default: a view that declares no
``required_scopes`` (or a method its mapping does not list) is refused to every key.

Denials raise :class:`KeyGuardDenied`, carrying the :class:`~keyguard.core.decision.Decision`.
With :func:`exception_handler` configured they are rendered exactly like the middleware's
(problem+json, code, ``WWW-Authenticate``, ``Cache-Control: no-store``, request id,
``Retry-After``); without it DRF's own handler still sends the right status, the code (as the
``ErrorDetail`` code), ``WWW-Authenticate`` and ``Retry-After``. Behind
:class:`~keyguard.adapters.django.KeyGuardMiddleware` the principal it verified is reused:
one verification (and one rate-limit charge) per request. Without it, a failed key is counted
by the verifier's brute-force guard here, for the same client address the middleware would
use (``REMOTE_ADDR``, ``X-Forwarded-For`` with ``trusted_proxies``).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, ClassVar, Final, cast

from keyguard.adapters._extras import require_extra

require_extra(__name__, "django", "django", "rest_framework")

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException, NotAuthenticated
from rest_framework.permissions import BasePermission

from keyguard.adapters.django import PRINCIPAL_ATTR, denial_response, get_config
from keyguard.adapters.wsgi import authorization_from_environ
from keyguard.core import decision as d
from keyguard.core.decision import Decision, Principal
from keyguard.core.errors import ConfigurationError, ErrorCode
from keyguard.core.scopes import DENY, Requirement, as_requirement
from keyguard.core.verifier import authorize

__all__ = [
    "HasScopes",
    "KeyGuardAuthentication",
    "KeyGuardDenied",
    "KeyUser",
    "exception_handler",
    "problem_response",
]


class KeyUser:
    """``request.user`` for a request authenticated by an API key (no database row).

    Enough of Django's user protocol for DRF and common code (``is_authenticated``, ``pk``,
    ``get_username()``); it holds no Django permissions — use scopes.
    """

    __slots__ = ("principal",)

    is_authenticated: Final = True
    is_anonymous: Final = False
    is_active: Final = True
    is_staff: Final = False
    is_superuser: Final = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def pk(self) -> str:
        return self.principal.key_id

    id = pk

    @property
    def username(self) -> str:
        return self.principal.key_id

    def get_username(self) -> str:
        return self.principal.key_id

    @property
    def scopes(self) -> frozenset[str]:
        return self.principal.scopes

    def has_scope(self, scope: str) -> bool:
        return self.principal.has_scope(scope)

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perms: object, obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeyUser):
            return self.principal.key_id == other.principal.key_id
        return NotImplemented

    def __hash__(self) -> int:
        return hash((KeyUser, self.principal.key_id))

    def __str__(self) -> str:
        return self.principal.name

    def __repr__(self) -> str:
        return f"KeyUser({self.principal!r})"


class KeyGuardDenied(APIException):  # type: ignore[misc]  # DRF is untyped
    """A keyguard denial as a DRF exception; ``decision`` is the denial it carries.

    ``status_code``, ``detail`` (with the keyguard code as its ``ErrorDetail`` code),
    ``auth_header`` and ``wait`` are set so DRF's default handler answers correctly too.
    """

    status_code = 401
    default_detail = d.MISSING.detail
    default_code = ErrorCode.MISSING_API_KEY.value

    def __init__(self, decision: Decision) -> None:
        code = decision.code
        if decision.allowed or code is None:
            raise ConfigurationError("KeyGuardDenied needs a denial, not an allowed Decision")
        super().__init__(detail=decision.detail, code=code.value)
        self.decision = decision
        self.status_code = decision.status
        self.wait = decision.retry_after
        # The challenge the shared renderer would send (realm, error attribute).
        headers = dict(get_config().renderer.render(decision, "-").headers)
        self.auth_header = headers.get("www-authenticate")


def _django_request(request: Any) -> Any:
    return getattr(request, "_request", request)


class KeyGuardAuthentication(BaseAuthentication):  # type: ignore[misc]  # DRF is untyped
    """``Authorization: UserKey <key>`` → ``(KeyUser, Principal)``.

    No ``UserKey`` credential → ``None`` (the next authenticator may try); any other
    problem (malformed, unknown, expired, revoked key, two headers, store down) →
    :class:`KeyGuardDenied`.
    """

    def authenticate(self, request: Any) -> tuple[KeyUser, Principal] | None:
        django_request = _django_request(request)
        principal = getattr(django_request, PRINCIPAL_ATTR, None)
        if principal is None:
            verifier = get_config().verifier
            meta = request.META
            # What the middleware's verify() does: a guess counts against its address, and a
            # blocked address causes no store reads.
            decision = verifier.authenticate(
                authorization_from_environ(meta),
                peer=meta.get("REMOTE_ADDR") or None,
                forwarded_for=meta.get("HTTP_X_FORWARDED_FOR"),
            )
            if decision.code is ErrorCode.MISSING_API_KEY:
                return None
            # Without the middleware, DRF views are rate-limited here, once per request.
            decision = verifier.rate_limit(decision)
            if not decision.allowed:
                raise KeyGuardDenied(decision)
            principal = decision.principal
            assert principal is not None
            setattr(django_request, PRINCIPAL_ATTR, principal)
            extra = decision.headers
            if extra:
                _add_view_headers(request, extra)
        return KeyUser(principal), principal

    def authenticate_header(self, request: Any) -> str:
        # Makes DRF answer 401 (not 403) to unauthenticated requests.
        return f'UserKey realm="{get_config().renderer.realm}"'


def _add_view_headers(request: Any, headers: tuple[tuple[str, str], ...]) -> None:
    """Rate-limit headers on the successful response: DRF copies ``view.headers`` onto it."""
    context = getattr(request, "parser_context", None) or {}
    view = context.get("view")
    if view is not None and isinstance(getattr(view, "headers", None), dict):
        view.headers.update(headers)


# Views declare required_scopes once (class attribute or as_view() argument), so the parsed
# requirement is cached by the identity of that object (kept alive in the entry, so the id
# cannot be reused). A plain dict: single operations are atomic across request threads.
_REQUIREMENTS: dict[int, tuple[object, Requirement]] = {}
_REQUIREMENTS_MAX: Final = 1024


def _coerce(raw: object) -> Requirement:
    hit = _REQUIREMENTS.get(id(raw))
    if hit is not None and hit[0] is raw:
        return hit[1]
    requirement = as_requirement(cast(Any, raw))
    if len(_REQUIREMENTS) >= _REQUIREMENTS_MAX:  # views computing a new object per request
        _REQUIREMENTS.clear()
    _REQUIREMENTS[id(raw)] = (raw, requirement)
    return requirement


def _view_requirement(view: Any, method: str) -> Requirement:
    raw = getattr(view, "required_scopes", None)
    if isinstance(raw, Mapping):
        method = method.upper()
        if method in raw:
            raw = raw[method]
        elif method == "HEAD" and "GET" in raw:
            raw = raw["GET"]
        else:
            raw = raw.get("*")
    if raw is None:
        return DENY  # deny by default: undeclared means nobody
    return _coerce(raw)


class HasScopes(BasePermission):  # type: ignore[misc]  # DRF is untyped
    """The key must hold the view's scopes.

    The requirement comes from :meth:`require` (``HasScopes.require("agents:read")``) or from
    the view's ``required_scopes``: a scope, a list (all of them), a
    :class:`~keyguard.core.scopes.Requirement`, or a mapping of HTTP method (``"*"`` for the
    rest; ``HEAD`` falls back to ``GET``) to one of those. Nothing declared → denied.
    """

    requirement: ClassVar[Requirement | None] = None

    @classmethod
    def require(cls, *requirements: str | Requirement) -> type[HasScopes]:
        """A permission class requiring all of ``requirements`` (scopes or any_of/all_of)."""
        requirement = as_requirement(requirements)

        def body(ns: dict[str, Any]) -> None:
            ns["requirement"] = requirement
            ns["__module__"] = cls.__module__

        return cast(
            "type[HasScopes]",
            types.new_class(f"HasScopes[{requirement.describe()}]", (cls,), exec_body=body),
        )

    def has_permission(self, request: Any, view: Any) -> bool:
        requirement = self.requirement
        if requirement is None:
            requirement = _view_requirement(view, request.method)
        principal = request.auth
        if not isinstance(principal, Principal):
            # Another authenticator won, or none did: a key the middleware verified counts.
            principal = getattr(_django_request(request), PRINCIPAL_ATTR, None)
        denial = authorize(principal, requirement)  # no principal: missing_api_key
        if denial is not None:
            raise KeyGuardDenied(denial)
        return True


def _decision_for(exc: Exception, context: Mapping[str, Any]) -> Decision | None:
    if isinstance(exc, KeyGuardDenied):
        return exc.decision
    if isinstance(exc, NotAuthenticated):
        # DRF's generic "no credentials" (e.g. IsAuthenticated): ours when our scheme is the
        # one DRF challenges with, i.e. KeyGuardAuthentication comes first.
        authenticators = getattr(context.get("request"), "authenticators", None) or ()
        if authenticators and isinstance(authenticators[0], KeyGuardAuthentication):
            return d.MISSING
    return None


def problem_response(exc: Exception, context: Mapping[str, Any]) -> Any:
    """The shared problem response for a keyguard denial, or ``None`` for other exceptions.

    For applications with their own ``EXCEPTION_HANDLER``: call this first.
    """
    decision = _decision_for(exc, context)
    if decision is None:
        return None
    from rest_framework.views import set_rollback  # reads DRF settings on import

    set_rollback()
    return denial_response(get_config().renderer, decision, context.get("request"))


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Any:
    """DRF ``EXCEPTION_HANDLER``: keyguard denials as problem+json, the rest as DRF does."""
    response = problem_response(exc, context)
    if response is not None:
        return response
    from rest_framework.views import exception_handler as drf_exception_handler

    return drf_exception_handler(exc, context)
