"""What every adapter needs and nothing framework-specific: building a Verifier (and its
rate-limit backend) from keyword arguments, settings and environment variables, and turning a
denial into status, header bytes and body."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any, Final, TypeVar, cast

from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.ratelimit import DEFAULT_WINDOWS
from keyguard.core.ratelimit.settings import LimiterSettings
from keyguard.core.store import KeyStore
from keyguard.core.verifier import Verifier
from keyguard.stores import DEFAULT_STORE_URL, STORE_URL_ENV, from_url
from keyguard.stores.ratelimit_url import limiter_from_settings

#: Keyword arguments (and, upper-cased, settings keys) that describe the rate-limit backend;
#: each overrides its ``KEYGUARD_RATELIMIT_*`` environment variable (see
#: :mod:`keyguard.core.ratelimit.settings`).
LIMITER_OPTIONS: Final = {
    "ratelimit_url": "url",
    "ratelimit_mode": "mode",
    "ratelimit_timeout": "timeout",
    "ratelimit_budget": "budget",
    "ratelimit_failures": "failures",
    "ratelimit_cooldown": "cooldown",
}


def build_verifier(
    verifier: Verifier | None,
    store: KeyStore | str | None,
    policy: RoutePolicy | None,
    options: dict[str, Any],
) -> Verifier:
    """The adapter's Verifier: the one given, or one built from ``store``/``policy``/options.

    With neither a verifier nor a store, the store URL comes from ``KEYGUARD_STORE_URL`` (or the
    SQLite default), so ``app.add_middleware(KeyGuardMiddleware)`` works out of the box.

    The rate-limit backend, unless ``limiter=`` is given: ``ratelimit_url`` (else
    ``KEYGUARD_RATELIMIT_URL``) names Redis to share counts between processes, and
    ``ratelimit_mode``, ``ratelimit_timeout``, ``ratelimit_budget``, ``ratelimit_failures`` and
    ``ratelimit_cooldown`` (else their ``KEYGUARD_RATELIMIT_*`` variables) say how it rides out
    an outage. What each mode admits while Redis is out: ``local`` (default) limits each
    process on its own (about N times the quota with N worker processes), ``allow`` admits
    everything, ``deny`` admits nothing and answers 503 ``auth_unavailable`` (exact, at the
    cost of availability). No URL: the in-process limiter. With ``rate_limits=None`` the
    variables are ignored.

    Observability (:mod:`keyguard.observability`): ``events`` (``True`` to log every event on
    ``keyguard.events``, an ``Emitter``, a sink or a list of sinks) and ``usage`` (``True`` to
    count requests per key into the key store, or a ``UsageCounter``) build the verifier's
    observer; both are off by default (the request path then pays one attribute check).
    """
    if verifier is not None:
        if store is not None or policy is not None or options:
            raise ConfigurationError("pass either verifier= or store=/policy=/options, not both")
        return verifier
    options = dict(options)
    limiter_options = {
        setting: options.pop(name) for name, setting in LIMITER_OPTIONS.items() if name in options
    }
    limited = options.get("rate_limits", DEFAULT_WINDOWS) is not None
    if "limiter" in options or not limited:
        given = sorted(f"ratelimit_{k}" for k, v in limiter_options.items() if v is not None)
        if given:
            raise ConfigurationError(
                f"{given} describe a rate-limit backend, which "
                + ("limiter= already is" if limited else "rate_limits=None turns off")
            )
    else:
        limiter = limiter_from_settings(LimiterSettings.from_env(**limiter_options))
        if limiter is not None:
            options["limiter"] = limiter
    events = options.pop("events", None)
    usage = options.pop("usage", None)
    if store is None:
        store = os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    if isinstance(store, str):
        store = from_url(store)
    if events not in (None, False) or usage not in (None, False):
        if options.get("observer") is not None:
            raise ConfigurationError("pass observer= or events=/usage=, not both")
        from keyguard.observability.setup import make_observer

        options["observer"] = make_observer(store, events=events, usage=usage)
    return Verifier(store, policy=policy, **options)


class AnonymousUser:
    """Starlette-compatible user for requests on public routes."""

    __slots__ = ()
    is_authenticated = False
    display_name = ""
    identity = ""

    def __repr__(self) -> str:
        return "AnonymousUser()"


ANONYMOUS = AnonymousUser()


# -- configuration from framework settings (Flask app.config, Django settings) ---------------
_T = TypeVar("_T")

#: Settings keys the adapters interpret themselves; every other key names a Verifier option.
OWN_KEYS: Final = frozenset(
    {"STORE_URL", "POLICY", "PUBLIC", "POLICY_DEFAULT", "VERIFIER", "RENDERER"}
)
#: Keyword arguments (and, upper-cased, settings keys) that build the verifier's observer.
OBSERVABILITY_OPTIONS: Final = ("events", "usage")
#: Upper-case setting name → keyword argument of :func:`build_verifier`: every Verifier option
#: (``CACHE_TTL`` → ``cache_ttl``) and the rate-limit backend's (``RATELIMIT_MODE`` →
#: ``ratelimit_mode``).
VERIFIER_OPTIONS: Final = {
    **{
        name.upper(): name
        for name in inspect.signature(Verifier.__init__).parameters
        if name not in ("self", "store", "policy")
    },
    **{name.upper(): name for name in LIMITER_OPTIONS},
    **{name.upper(): name for name in OBSERVABILITY_OPTIONS},
}


def import_string(path: str) -> object:
    """The object a dotted path names (``"pkg.module.attr"`` or ``"pkg.module:attr"``)."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"{path!r} is not a dotted path to an object")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {path!r}: {exc}") from exc


def load_object(value: object, kind: type[_T], what: str) -> _T:
    """An object of ``kind``: given, or behind a dotted path, or returned by a factory."""
    if isinstance(value, str):
        value = import_string(value)
    if not isinstance(value, kind) and callable(value):
        value = value()
    if not isinstance(value, kind):
        raise ConfigurationError(f"{what} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def policy_from_settings(
    value: object, public: object, default: object, *, prefix: str = ""
) -> RoutePolicy | None:
    """A RoutePolicy from settings: a ``{"METHOD /path": scope}`` dict (with ``PUBLIC`` and
    ``POLICY_DEFAULT``), a RoutePolicy, a dotted path or factory, or nothing."""
    if isinstance(value, Mapping):
        return RoutePolicy(
            value,
            public=cast(Any, () if public is None else public),
            default=cast(Any, "deny" if default is None else default),
        )
    if public is not None or default is not None:
        raise ConfigurationError(
            f"{prefix}PUBLIC and {prefix}POLICY_DEFAULT apply to a dict {prefix}POLICY; "
            "with a RoutePolicy (or none) set them on the RoutePolicy"
        )
    return None if value is None else load_object(value, RoutePolicy, f"{prefix}POLICY")
