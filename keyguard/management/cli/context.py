"""Which store, key prefix and actor a command works with, and opening that store safely.

Three rules protect a deployment from its own command line:

* **No store appears by accident.** Only ``keyguard init`` creates a store; every other
  command refuses a SQLite file that does not exist (a typo, or a database deleted under a
  running server, must not silently become a new empty store whose keys the server rejects).
* **No store that dies with the command.** ``memory://`` (and ``sqlite:///:memory:``) live
  inside one process, so every CLI call would start empty: they are refused with the reason.
* **Read-only commands never write.** :func:`open_manager` with ``write=False`` checks the
  pepper without recording it (:func:`keyguard.core.pepper.check_store`), and ``keys verify``
  uses a read-only verifier (no re-hash, no ``last_used_at``), so running a diagnostic with
  another pepper cannot change what a running service sees. A pepper mismatch is one error.

With ``--url`` (or ``$KEYGUARD_API_URL``) the commands talk to a management API instead of a
store (:mod:`keyguard.management.cli.remote`), acting with the key in ``$KEYGUARD_API_KEY``.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import inspect
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import unquote

from keyguard.core.errors import KeyguardError
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_PREFIX, KeyFormat
from keyguard.core.pepper import check_store
from keyguard.core.store import KeyStore
from keyguard.management.cli.errors import UsageError
from keyguard.management.manager import KeyManager
from keyguard.stores import DEFAULT_STORE_URL, STORE_URL_ENV, from_url, redact_url

__all__ = [
    "ACTOR_ENV",
    "PREFIX_ENV",
    "Manager",
    "actor",
    "ephemeral",
    "key_format",
    "open_manager",
    "open_store",
    "refuse_ephemeral",
    "remote_url",
    "require_existing",
    "sqlite_path",
    "store_url",
]

PREFIX_ENV: Final = "KEYGUARD_KEY_PREFIX"
ACTOR_ENV: Final = "KEYGUARD_ACTOR"

# KeyManager(read_only=True) (no writes at all, not even on open) is arriving separately;
# use it as soon as it exists, and until then rely on opening the store ourselves.
_MANAGER_HAS_READ_ONLY: Final = "read_only" in inspect.signature(KeyManager).parameters


def store_url(args: argparse.Namespace) -> str:
    """``--store``, else ``$KEYGUARD_STORE_URL``, else the default SQLite file."""
    url: str = getattr(args, "store", None) or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    return url


def sqlite_path(url: str) -> str | None:
    """The absolute file path a ``sqlite://`` URL names, ``":memory:"``, or ``None`` for
    other schemes and URLs that name no file (the store reports those itself)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        return None
    rest = rest.partition("?")[0].partition("#")[0]
    if not rest.startswith("/") or len(rest) < 2:
        return None
    path = unquote(rest[1:])
    return path if path == ":memory:" else os.path.abspath(path)


def ephemeral(url: str) -> bool:
    """Whether the store lives only inside this process."""
    return url.partition("://")[0].lower() == "memory" or sqlite_path(url) == ":memory:"


def refuse_ephemeral(url: str) -> None:
    if ephemeral(url):
        raise KeyguardError(
            f"the store {redact_url(url)} lives only inside one process, so every keyguard "
            "command would start with an empty store (and keys created now would vanish when it "
            "exits); use a file, e.g. --store sqlite:///./keyguard.db, created once with "
            "'keyguard init'"
        )


def require_existing(url: str) -> None:
    """Refuse a SQLite store whose file is missing (or is a directory)."""
    path = sqlite_path(url)
    if path is None or path == ":memory:":
        return
    if os.path.isdir(path):
        raise KeyguardError(
            f"{path!r} is a directory, not a key store; point --store or {STORE_URL_ENV} "
            "at the database file"
        )
    if not os.path.exists(path):
        raise KeyguardError(
            f"no key store at {path!r} (the file does not exist); create one with "
            f"'keyguard init', or point --store or {STORE_URL_ENV} at an existing store"
        )


def open_store(url: str) -> KeyStore:
    """The store ``url`` names; errors name the store (with any password redacted)."""
    try:
        return from_url(url)
    except KeyguardError as exc:
        shown = redact_url(url)
        if shown in str(exc):
            raise
        raise KeyguardError(f"{exc} (store {shown})") from exc


def key_format(args: argparse.Namespace) -> KeyFormat:
    prefix = getattr(args, "prefix", None) or os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX
    return KeyFormat(prefix)


if TYPE_CHECKING:
    from keyguard.management.cli.remote import RemoteManager

Manager: TypeAlias = "KeyManager | RemoteManager"


def remote_url(args: argparse.Namespace) -> str | None:
    """``keyguard --url``, else ``$KEYGUARD_API_URL`` unless ``--store`` is given; ``None``:
    work on a store."""
    from keyguard.management.cli.remote import API_URL_ENV

    url: str | None = getattr(args, "api_url", None)
    if url and getattr(args, "store", None):
        raise UsageError("give --store or --url, not both")
    if url or getattr(args, "store", None):
        return url
    return os.environ.get(API_URL_ENV) or None


@contextlib.contextmanager
def _open_remote(url: str) -> Iterator[Manager]:
    from keyguard.management.cli.remote import API_KEY_ENV, RemoteManager

    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise UsageError(
            f"--url needs the acting key in ${API_KEY_ENV} (never on the command line)"
        )
    try:
        import httpx  # noqa: F401 - checked here for one clear message
    except ImportError:
        raise KeyguardError("--url needs httpx: pip install 'keyguard[client]'") from None
    with RemoteManager(url, key) as manager:
        yield manager


@contextlib.contextmanager
def open_manager(
    args: argparse.Namespace, *, write: bool, remote: bool = False
) -> Iterator[Manager]:
    """A manager for the store the command line (or environment) selects, closed on exit —
    or, for a command that works remotely (``remote=True``) given ``keyguard --url``, for the
    remote management API.

    The store must exist and be persistent. ``write=False`` is for commands that only read:
    the pepper is checked but never recorded. ``write=True`` records this process's pepper
    fingerprint in a store that has none yet.
    """
    if remote:
        api = remote_url(args)
        if api is not None:
            with _open_remote(api) as manager:
                yield manager
            return
    elif getattr(args, "api_url", None):
        command = " ".join(
            str(part)
            for part in (getattr(args, "command", None), getattr(args, "action", None))
            if part
        )
        raise UsageError(f"{command or 'this command'} does not work with keyguard --url")
    url = store_url(args)
    refuse_ephemeral(url)
    require_existing(url)
    fmt = key_format(args)
    hasher = Hasher()  # before opening: a bad pepper setting is reported with nothing open
    store = open_store(url)
    try:
        check_store(store, hasher, write=write)
        options: dict[str, Any] = {"key_format": fmt, "hasher": hasher}
        if _MANAGER_HAS_READ_ONLY:
            options["read_only"] = not write
        with KeyManager(store, **options) as manager:
            yield manager
    finally:
        store.close()


def actor(args: argparse.Namespace) -> str:
    """Who the audit log names: ``--actor``, ``$KEYGUARD_ACTOR``, else ``cli:<login>``."""
    if getattr(args, "actor", None):
        return str(args.actor)
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        user = "unknown"
    return f"cli:{user}"
