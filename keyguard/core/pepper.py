"""Pepper consistency between a process and the store it serves.

A store whose keys were hashed with a pepper is useless to a process that has no pepper (or
another one): every key would answer ``invalid_api_key``, and a management command run with the
wrong pepper would re-hash keys so that the running service rejects them. The store therefore
keeps the pepper's fingerprint (:attr:`keyguard.core.hashing.Hasher.fingerprint`, never the
pepper) as the setting ``pepper_fingerprint``, and every process checks it when it starts:
:func:`check_store` raises one clear :class:`~keyguard.core.errors.ConfigurationError` on a
mismatch. The first process to use a store records the fingerprint, unless it is read-only.
A verifier runs the check through :class:`StoreCheck`, which defers it while the store is
unreachable instead of failing the app's import.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Final

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.hashing import ACCEPT_UNPEPPERED_ENV, NO_PEPPER, PEPPER_ENV, Hasher
from keyguard.core.store import KeyStore

__all__ = ["PEPPER_SETTING", "StoreCheck", "check_store"]

logger = logging.getLogger("keyguard.pepper")

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


class StoreCheck:
    """:func:`check_store` when a verifier starts — or, when the store is unreachable then, before
    its first key lookup, so that an app does not crash at import while its Redis or database
    is briefly down.

    A mismatch at startup raises (the process refuses to start). A mismatch found later makes
    :meth:`run` return ``False`` from then on (the caller answers 503), logged once at ERROR.
    """

    __slots__ = ("_lock", "hasher", "pending", "refused", "store", "write")

    def __init__(self, store: KeyStore, hasher: Hasher, *, write: bool) -> None:
        self.store = store
        self.hasher = hasher
        self.write = write
        self.refused = False
        self._lock = threading.Lock()
        #: Whether the check still has to run (read without a lock on every store lookup).
        self.pending = True
        try:
            check_store(store, hasher, write=write)
        except StoreUnavailable as exc:
            logger.warning(
                "the key store is unreachable (%s); its pepper fingerprint will be checked "
                "before the first key lookup",
                exc,
            )
        else:
            self.pending = False

    def run(self) -> bool:
        """Run the deferred check: ``True`` once it passed, ``False`` while the store is
        unreachable or after a mismatch."""
        if self.refused:
            return False
        try:
            check_store(self.store, self.hasher, write=self.write)
        except ConfigurationError as exc:
            return self._mismatch(exc)
        except Exception:
            logger.warning("the key store is unreachable; failing closed", exc_info=True)
            return False
        return self._passed()

    async def arun(self) -> bool:
        """:meth:`run` for async callers: a remote store is checked in a worker thread."""
        if self.refused:
            return False
        try:
            if self.store.in_process:
                check_store(self.store, self.hasher, write=self.write)
            else:
                await asyncio.to_thread(check_store, self.store, self.hasher, write=self.write)
        except ConfigurationError as exc:
            return self._mismatch(exc)
        except Exception:
            logger.warning("the key store is unreachable; failing closed", exc_info=True)
            return False
        return self._passed()

    def _passed(self) -> bool:
        self.pending = False
        logger.info("the key store is reachable; its pepper fingerprint matches")
        return True

    def _mismatch(self, exc: ConfigurationError) -> bool:
        with self._lock:
            first = not self.refused
            self.refused = True
        if first:
            logger.error("%s. Every request that needs the key store is refused (503).", exc)
        return False
