"""What every adapter needs and nothing framework-specific: building a Verifier from keyword
arguments, and turning a denial into status, header bytes and body."""

from __future__ import annotations

import os
from typing import Any

from keyguard.core.errors import ConfigurationError
from keyguard.core.policy import RoutePolicy
from keyguard.core.verifier import Verifier
from keyguard.stores import DEFAULT_STORE_URL, STORE_URL_ENV, from_url
from keyguard.stores.base import KeyStore


def build_verifier(
    verifier: Verifier | None,
    store: KeyStore | str | None,
    policy: RoutePolicy | None,
    options: dict[str, Any],
) -> Verifier:
    """The adapter's Verifier: the one given, or one built from ``store``/``policy``/options.

    With neither a verifier nor a store, the store URL comes from ``KEYGUARD_STORE_URL`` (or the
    SQLite default), so ``app.add_middleware(KeyGuardMiddleware)`` works out of the box.
    """
    if verifier is not None:
        if store is not None or policy is not None or options:
            raise ConfigurationError("pass either verifier= or store=/policy=/options, not both")
        return verifier
    if store is None:
        store = os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    if isinstance(store, str):
        store = from_url(store)
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
