"""The anomaly detectors' counters in a SQLite file, shared by every process that opens it.

:class:`SQLiteDetectorCounters` implements
:class:`~keyguard.core.detector_counters.DetectorCounters` with one table,
``keyguard_detector_counters`` — a row per counter and bucket, with the time after which it may
be deleted — in any SQLite file: the key store's own (``sqlite:///./keyguard.db``; the table
sits beside the store's, outside its schema versions) or a file of its own. Each
:meth:`~SQLiteDetectorCounters.add` is one ``BEGIN IMMEDIATE`` transaction (the increment and
the read-back), so processes counting at once each see a distinct total. Expired rows are
deleted in passing, at most once a minute per process. The connection is opened lazily and
reopened after a ``fork``; failures are :class:`~keyguard.core.errors.StoreUnavailable`.
Disk I/O: run detectors with these counters in the background (the default).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sqlite3
import threading
import time
from typing import Final
from urllib.parse import unquote

from keyguard.core.detector_counters import Window, check_name
from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.stores._files import create_private, make_private
from keyguard.stores.sqlite import _MAX_BACKOFF, _MIN_BACKOFF, _is_busy

__all__ = ["SQLiteDetectorCounters"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS keyguard_detector_counters ("
    " name TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,"
    " expires_at REAL NOT NULL, PRIMARY KEY (name, bucket)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS keyguard_detector_counters_expiry"
    " ON keyguard_detector_counters (expires_at)",
)
_UPSERT: Final = (
    "INSERT INTO keyguard_detector_counters (name, bucket, count, expires_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (name, bucket) DO UPDATE"
    " SET count = count + excluded.count, expires_at = excluded.expires_at"
)
_SUM: Final = (
    "SELECT COALESCE(SUM(count), 0) FROM keyguard_detector_counters"
    " WHERE name = ? AND bucket BETWEEN ? AND ?"
)
_PURGE: Final = "DELETE FROM keyguard_detector_counters WHERE expires_at < ?"
_PURGE_EVERY: Final = 60.0


class SQLiteDetectorCounters:
    """Detector counters in the SQLite file at ``path`` (created, private, if missing)."""

    shared = True

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        raw = os.fspath(path)
        if not isinstance(raw, str) or not raw or raw == ":memory:":
            raise ConfigurationError(
                "SQLite detector counters need a file path (an in-memory database would be "
                "private to one connection: use MemoryDetectorCounters)"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise ConfigurationError("timeout must be a positive number of seconds")
        self.path = os.path.abspath(raw)
        if not os.path.isdir(os.path.dirname(self.path)):
            raise ConfigurationError(f"the directory of {self.path!r} does not exist")
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._purged = -math.inf

    @classmethod
    def from_url(cls, url: str) -> SQLiteDetectorCounters:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (the store URL's form)."""
        scheme, sep, rest = url.partition("://")
        rest = rest.partition("?")[0].partition("#")[0]
        if not sep or scheme.lower() != "sqlite" or not rest.startswith("/") or len(rest) < 2:
            raise ConfigurationError(
                "SQLite detector counters need sqlite:///relative.db or sqlite:////absolute.db"
            )
        return cls(unquote(rest[1:]))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited across fork() is left alone (closing it would disturb the
        # parent's locks); the child opens its own.
        create_private(self.path)
        make_private(self.path)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        # Switching a new file to WAL takes an exclusive lock, and SQLite answers "database
        # is locked" at once (no busy handler) to a process doing it while another one does:
        # retried with jittered backoff until the timeout, as the key store does.
        deadline = time.monotonic() + self.timeout
        backoff = _MIN_BACKOFF
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL").fetchone()
                for statement in _SCHEMA:
                    conn.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + backoff > deadline:
                    conn.close()
                    raise
            except sqlite3.Error:
                conn.close()
                raise
            time.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - not security
            backoff = min(backoff * 2, _MAX_BACKOFF)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(
            f"the detector counters in {self.path!r} failed ({type(exc).__name__}: {exc})"
        )

    def add(self, name: str, window: Window, now: float, amount: int = 1) -> int:
        key = f"{check_name(name)}|{window.tag}"
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ConfigurationError("amount must be an integer >= 0")
        first, last = window.span(now)
        expires = (last + 1) * window.width + window.ttl
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if amount:
                        conn.execute(_UPSERT, (key, last, amount, expires))
                    (total,) = conn.execute(_SUM, (key, first, last)).fetchone()
                    if now - self._purged >= _PURGE_EVERY:
                        conn.execute(_PURGE, (now,))
                        self._purged = now
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
        return int(total)

    def count(self, name: str, window: Window, now: float) -> int:
        key = f"{check_name(name)}|{window.tag}"
        first, last = window.span(now)
        with self._lock:
            try:
                (total,) = self._connection().execute(_SUM, (key, first, last)).fetchone()
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
        return int(total)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def __enter__(self) -> SQLiteDetectorCounters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteDetectorCounters({self.path!r})"
