"""Private database files: a key store's files are readable by their owner only (mode 0600).

Digests are not keys, but they are what an offline guesser needs, and the audit log names who
did what: neither belongs to other local users. A new database file is created 0600 before
SQLite touches it (never world-readable, even for a moment), and SQLite gives the ``-wal`` and
``-shm`` files it creates later the database file's mode. An existing database with group or
other permission bits — copied in, restored from a backup, created by another tool under a lax
umask — is tightened to 0600 together with any ``-wal``/``-shm``/``-journal`` beside it, with a
warning; when that is impossible (the file belongs to another user), the store refuses to open
with a :class:`~keyguard.core.errors.ConfigurationError` that says what to run.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Final

from keyguard.core.errors import ConfigurationError, StoreUnavailable

__all__ = ["SIDE_FILES", "create_private", "make_private"]

logger = logging.getLogger("keyguard.stores")

#: The files SQLite keeps beside a database, which hold the same data.
SIDE_FILES: Final = ("-wal", "-shm", "-journal")
_OTHERS: Final = 0o077


def create_private(path: str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists already."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the SQLite store {path!r}: {exc.strerror}") from exc
    os.close(fd)


def make_private(path: str) -> None:
    """Remove group and other permissions from ``path`` and its side files, where present."""
    for name in (path, *(path + suffix for suffix in SIDE_FILES)):
        try:
            info = os.stat(name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot inspect the SQLite store {name!r}: {exc.strerror}"
            ) from exc
        if not stat.S_ISREG(info.st_mode):
            continue  # not a file: opening it fails later with a clear error
        mode = stat.S_IMODE(info.st_mode)
        if not mode & _OTHERS:
            continue
        private = mode & 0o600  # never adds a permission (a read-only 0444 stays read-only)
        try:
            os.chmod(name, private)
        except OSError as exc:
            raise ConfigurationError(
                f"the SQLite store file {name!r} is accessible to other users (mode "
                f"{mode:04o}) and cannot be made private ({exc.strerror}); as its owner, run: "
                f"chmod 600 {name}"
            ) from None
        logger.warning(
            "the SQLite store file %r was accessible to other users (mode %04o); now %04o",
            name,
            mode,
            private,
        )
