"""``keyguard init``: create a new, empty key store — the only command that creates one.

Every other command refuses a store that does not exist, so a typo in a path, or a database
deleted under a running server, can never turn into a fresh empty store by accident. ``init``
refuses a store that already exists, creates a SQLite file with mode 0600 (no other user may
read the digests), and records the pepper fingerprint this process uses, so that later
processes with another pepper are refused with one clear error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import TYPE_CHECKING

from keyguard.core.errors import KeyguardError
from keyguard.core.hashing import NO_PEPPER, Hasher
from keyguard.core.pepper import PEPPER_SETTING, check_store
from keyguard.core.store import KeyStore
from keyguard.management.cli import output as out
from keyguard.management.cli.context import open_store, refuse_ephemeral, sqlite_path, store_url
from keyguard.stores import STORE_URL_ENV, redact_url

if TYPE_CHECKING:
    from keyguard.management.cli.parser import Subparsers

__all__ = ["register"]


def _create_file(path: str) -> None:
    """Create the empty database file, atomically refusing one that exists."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        what = "a directory" if os.path.isdir(path) else "a key store"
        raise KeyguardError(
            f"{what} already exists at {path!r}; nothing changed (keyguard init only creates "
            "new stores)"
        ) from None
    except FileNotFoundError:
        raise KeyguardError(f"the directory of {path!r} does not exist; create it first") from None
    except OSError as exc:
        raise KeyguardError(f"cannot create {path!r}: {exc.strerror or exc}") from None
    os.close(fd)


def _remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(path + suffix)


def _refuse_used(store: KeyStore, shown: str) -> None:
    # Stores other than SQLite have no file to look for: a recorded pepper or any key means
    # someone has used this store already.
    if store.get_setting(PEPPER_SETTING) is not None or store.list(limit=1).items:
        raise KeyguardError(
            f"the store {shown} is already in use; nothing changed (keyguard init only creates "
            "new stores)"
        )


def _init(args: argparse.Namespace) -> int:
    url = store_url(args)
    shown = redact_url(url)
    refuse_ephemeral(url)
    hasher = Hasher()  # a bad pepper setting fails before anything is created
    path = sqlite_path(url)
    if path is not None:
        _create_file(path)
    try:
        store = open_store(url)
        try:
            if path is None:
                _refuse_used(store, shown)
            check_store(store, hasher, write=True)
        finally:
            store.close()
    except BaseException:
        if path is not None:
            _remove(path)  # leave nothing behind that would block the next attempt
        raise
    pepper = (
        "none"
        if hasher.fingerprint == NO_PEPPER
        else f"set (fingerprint …{hasher.fingerprint[-8:]})"
    )
    if args.json:
        out.emit_json(
            {
                "created": True,
                "store": shown,
                "path": path,
                "pepper_fingerprint": hasher.fingerprint,
            }
        )
    else:
        out.emit(f"created the key store {shown}")
        if path is not None:
            out.emit(f"file      {path} (mode 0600)")
        out.emit(f"pepper    {pepper}")
    if not os.environ.get(STORE_URL_ENV) and not args.store:
        out.note(f"(the default store; set {STORE_URL_ENV} or pass --store to use another)")
    out.note("next: keyguard keys create --name NAME --scope SCOPE (see 'keyguard scopes')")
    return 0


def register(sub: Subparsers) -> None:
    """Add ``keyguard init``."""
    p = out.add_json(
        sub.add_parser(
            "init",
            help="create a new, empty key store (the only command that creates one)",
            description="Create the key store named by --store or $KEYGUARD_STORE_URL and "
            "record the pepper it is used with. Refuses a store that exists already.",
        )
    )
    p.set_defaults(handler=_init)
