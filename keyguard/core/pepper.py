"""Pepper consistency between a process and the store it serves.

A store whose keys were hashed with a pepper is useless to a process that has no pepper (or
another one): every key would answer ``invalid_api_key``, and a management command run with the
wrong pepper would re-hash keys so that the running service rejects them. The store therefore
keeps the pepper's fingerprint (:attr:`keyguard.core.hashing.Hasher.fingerprint`, never the
pepper) as the setting ``pepper_fingerprint``, and every process checks it when it starts:
:func:`check_store` raises one clear :class:`~keyguard.core.errors.ConfigurationError` on a
mismatch. The first process to use a store records the fingerprint, unless it is read-only.
"""

from __future__ import annotations

from typing import Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.hashing import ACCEPT_UNPEPPERED_ENV, NO_PEPPER, PEPPER_ENV, Hasher
from keyguard.core.store import KeyStore

__all__ = ["PEPPER_SETTING", "check_store"]

PEPPER_SETTING: Final = "pepper_fingerprint"


def _describe(fingerprint: str) -> str:
    return "no pepper" if fingerprint == NO_PEPPER else f"a pepper (fingerprint {fingerprint[-8:]})"


def check_store(store: KeyStore, hasher: Hasher, *, write: bool = True) -> None:
    """Refuse to use ``store`` with ``hasher`` when their peppers differ.

    When the store has no fingerprint yet, ``write`` records this hasher's (the first of
    several racing processes wins, and the others are checked against it). A store recorded
    without a pepper may be taken over by a peppered hasher that accepts unpeppered digests
    (``KEYGUARD_ACCEPT_UNPEPPERED=1``, the documented migration); nothing else is let through.
    Raises :class:`~keyguard.core.errors.StoreUnavailable` when the store cannot be read.
    """
    mine = hasher.fingerprint
    stored = store.get_setting(PEPPER_SETTING)
    if stored is None:
        if not write:
            return
        stored = store.set_setting(PEPPER_SETTING, mine, only_if_absent=True)
    if stored == mine:
        return
    if stored == NO_PEPPER and hasher.accept_unpeppered:
        if write:
            store.set_setting(PEPPER_SETTING, mine)
        return
    hint = (
        f"set {PEPPER_ENV} to the pepper this store was created with"
        if stored != NO_PEPPER
        else f"unset {PEPPER_ENV}, or migrate with {ACCEPT_UNPEPPERED_ENV}=1 (see the README)"
    )
    raise ConfigurationError(
        f"pepper mismatch: the key store {store!r} was set up with {_describe(stored)}, "
        f"but this process has {_describe(mine)}; {hint}"
    )
