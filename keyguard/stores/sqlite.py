"""A key store in one SQLite file (``sqlite:///path/keys.db``), safe across threads and processes.

Each thread gets its own connection (opened lazily, so a store built before a ``fork`` holds no
connection the children could inherit). The file runs in WAL mode so readers never wait for
writers; every write is one ``BEGIN IMMEDIATE`` transaction, SQLite's busy timeout absorbs
ordinary contention, and a bounded retry loop with jittered backoff absorbs the ``SQLITE_BUSY``
cases the busy handler does not cover. The schema is versioned: migrations run in order inside
one transaction, and a file written by a newer keyguard is refused rather than misread. Records
are stored column by column (scopes and metadata as canonical JSON); the file never holds
anything but digests, and it and its ``-wal``/``-shm`` files are private to their owner (mode
0600: created so, tightened when found otherwise; see :mod:`keyguard.stores._files`). Every
SQLite failure reaches callers as :class:`~keyguard.core.errors.StoreUnavailable` naming the
file, never with key material.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from keyguard.core.errors import (
    ConfigurationError,
    ConflictError,
    KeyExists,
    KeyguardError,
    KeyNotFound,
    StoreUnavailable,
)
from keyguard.core.incident import Incident
from keyguard.core.records import (
    AuditEvent,
    IdempotencyEntry,
    KeyRecord,
    KeyStatus,
    Page,
)
from keyguard.stores._files import create_private, make_private
from keyguard.stores._idempotency import check_entry, decode_entry
from keyguard.stores.base import KeyStore, check_claim, check_limit, decode_cursor, encode_cursor
from keyguard.stores.sqlite_schema import (
    COLUMNS,
    INSERT,
    INSERT_AUDIT,
    MIGRATIONS,
    SELECT,
    STATUS_SQL,
    UPDATE,
    audit_params,
    claim,
    decode,
    encode,
    remember,
)
from keyguard.stores.sqlite_usage import SQLiteUsage

__all__ = ["COLUMNS", "MEMORY", "MIGRATIONS", "SQLiteStore"]

T = TypeVar("T")

logger = logging.getLogger("keyguard.stores.sqlite")

MEMORY: Final = ":memory:"

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_MIN_BACKOFF: Final = 0.002
_MAX_BACKOFF: Final = 0.1

# Connections inherited across fork() must never be used nor closed by the child (closing would
# drop POSIX locks and shared-memory state of the parent's file); the child parks them here.
_INHERITED: list[sqlite3.Connection] = []


class _Holder:
    """A thread's connection, tagged with the process that opened it and the identity
    (device, inode) of the file it opened."""

    __slots__ = ("__weakref__", "conn", "ident", "pid")

    def __init__(self, conn: sqlite3.Connection, ident: tuple[int, int] | None) -> None:
        self.conn = conn
        self.ident = ident
        self.pid = os.getpid()


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _release(
    conn: sqlite3.Connection,
    pid: int,
    registry: dict[sqlite3.Connection, int],
    lock: threading.Lock,
) -> None:
    """Finaliser of a thread's holder: the thread ended (or the store was dropped)."""
    with lock:
        registry.pop(conn, None)
    _dispose(conn, pid)


def _dispose(conn: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    else:
        _INHERITED.append(conn)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


class SQLiteStore(SQLiteUsage, KeyStore):
    """Keys in a SQLite file.

    ``path`` is the database file (its directory must exist) or ``":memory:"`` for a private
    in-memory database shared by the store's threads. ``timeout`` bounds, in seconds, how long
    an operation waits for other writers before it fails with
    :class:`~keyguard.core.errors.StoreUnavailable`.
    """

    scheme = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        raw = os.fspath(path)
        if not isinstance(raw, str) or not raw:
            raise ConfigurationError("the SQLite store needs a file path or ':memory:'")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ConfigurationError("timeout must be a positive number of seconds")
        self._timeout = float(timeout)
        self._memory = raw == MEMORY
        self._path = raw if self._memory else os.path.abspath(raw)
        self._closed = False
        self._local = threading.local()
        # Every per-thread connection, with the pid that opened it, so that close() reaches them.
        self._conns: dict[sqlite3.Connection, int] = {}
        self._conns_lock = threading.Lock()
        # An in-memory database lives as long as its one connection, which threads share in turn.
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.Lock()
        self._incident = Incident(f"the SQLite store {self._path!r}", logger)
        if self._memory:
            self._shared = self._connect()
        else:
            parent = os.path.dirname(self._path)
            if not os.path.isdir(parent):
                raise ConfigurationError(
                    f"the directory of the SQLite store {self._path!r} does not exist"
                )
            create_private(self._path)
            make_private(self._path)
        self._initialise()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Open ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``sqlite:///:memory:``.

        The query string may set ``timeout`` (seconds).
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "sqlite":
            raise ConfigurationError("a SQLite store URL starts with sqlite://")
        rest, _, query = rest.partition("?")
        rest = rest.partition("#")[0]
        if not rest.startswith("/") or len(rest) < 2:
            raise ConfigurationError(
                "a SQLite store URL names a file: sqlite:///relative/keys.db, "
                "sqlite:////absolute/keys.db or sqlite:///:memory: (no host)"
            )
        options: dict[str, Any] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if name != "timeout":
                raise ConfigurationError(f"unknown SQLite store URL option {name!r}")
            try:
                options["timeout"] = float(value)
            except ValueError:
                raise ConfigurationError("the timeout option must be a number") from None
        return cls(unquote(rest[1:]), **options)

    @property
    def path(self) -> str:
        """The absolute path of the database file, or ``":memory:"``."""
        return self._path

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # A file store opens its file read-write but never creates it: the file is created
        # once, by the constructor. A database deleted under a running process must not
        # silently come back empty.
        target = self._path if self._memory else "file:" + quote(self._path) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                target,
                timeout=self._timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # close() may run on another thread
                uri=not self._memory,
            )
        except sqlite3.Error as exc:
            if not self._memory and _identity(self._path) is None:
                raise self._missing() from exc
            raise self._unavailable(exc) from exc
        return conn

    def _missing(self) -> StoreUnavailable:
        error = StoreUnavailable(
            f"the SQLite store {self._path!r} is gone (deleted or moved while in use); "
            "failing closed until it is restored"
        )
        self._incident.failed(error)
        return error

    def _thread_connection(self) -> sqlite3.Connection:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None and holder.pid == os.getpid():
            # Is the file at the path still the one this connection has open? A deleted
            # database keeps being readable through an open handle (a ghost); a restored or
            # replaced one has another inode. One stat() per store operation (cache misses and
            # management only) keeps us honest about both.
            ident = _identity(self._path)
            if ident is not None and ident == holder.ident:
                return holder.conn
            self._drop_thread_connection(holder)
            if ident is None:
                raise self._missing()
            logger.warning("the SQLite store %r was replaced; reopening it", self._path)
        ident = _identity(self._path)
        if ident is None:
            raise self._missing()
        conn = self._connect()
        holder = _Holder(conn, ident)
        with self._conns_lock:
            if self._closed:
                _close_quietly(conn)
                raise self._closed_error()
            self._conns[conn] = holder.pid
        weakref.finalize(holder, _release, conn, holder.pid, self._conns, self._conns_lock)
        self._local.holder = holder
        return conn

    def _forget_connection(self, conn: sqlite3.Connection) -> None:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None and holder.conn is conn:
            self._drop_thread_connection(holder)

    def _drop_thread_connection(self, holder: _Holder) -> None:
        with self._conns_lock:
            self._conns.pop(holder.conn, None)
        _dispose(holder.conn, holder.pid)
        with contextlib.suppress(AttributeError):
            del self._local.holder

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise self._closed_error()
        if self._shared is not None:
            with self._shared_lock:
                yield self._shared
        else:
            yield self._thread_connection()

    def _closed_error(self) -> StoreUnavailable:
        return StoreUnavailable(f"the SQLite store {self._path!r} is closed")

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        # SQLite's messages name the failure, never the bound values (which could be digests).
        return StoreUnavailable(f"the SQLite store {self._path!r} is unavailable: {exc}")

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``fn`` on this thread's connection, in a write transaction if ``write``.

        ``fn`` may run several times: on ``SQLITE_BUSY``/``SQLITE_LOCKED`` the transaction is
        rolled back and retried with jittered exponential backoff until ``timeout`` elapses.
        """
        deadline = time.monotonic() + self._timeout
        backoff = _MIN_BACKOFF
        while True:
            with self._connection() as conn:
                try:
                    if write:
                        conn.execute("BEGIN IMMEDIATE")
                    result = fn(conn)
                    if write:
                        conn.execute("COMMIT")
                except BaseException as exc:
                    # Whatever went wrong, leave the connection outside any transaction.
                    with contextlib.suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    if isinstance(exc, KeyguardError):
                        raise
                    if not isinstance(exc, sqlite3.Error):
                        raise
                    if not (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
                        # Corrupt, unreadable, replaced...: start afresh on the next call
                        # (a repaired file is picked up without a restart).
                        self._forget_connection(conn)
                        self._incident.failed(exc)
                        raise self._unavailable(exc) from exc
                    if time.monotonic() + backoff > deadline:
                        raise StoreUnavailable(
                            f"the SQLite store {self._path!r} stayed locked by other writers "
                            f"for more than {self._timeout:g} s"
                        ) from exc
                else:
                    self._incident.succeeded()
                    return result
            # Jitter spreads out writers that collided, so they do not collide again.
            time.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - not security
            backoff = min(backoff * 2, _MAX_BACKOFF)

    # -- schema --------------------------------------------------------------------------
    def _initialise(self) -> None:
        try:
            if not self._memory:
                self._run(self._enable_wal)
            if self._run(self._schema_version) != len(MIGRATIONS):
                self._run(self._migrate, write=True)
        finally:
            if not self._memory:
                # Keep no connection from construction: a store built before fork() (a
                # pre-forking server) must hand its children nothing inherited.
                self._close_connections()

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> None:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL").fetchone()

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keyguard_schema'"
        ).fetchone()
        if exists is None:
            return 0
        row = conn.execute("SELECT version FROM keyguard_schema WHERE id = 1").fetchone()
        version = 0 if row is None else int(row[0])
        if version > len(MIGRATIONS):
            raise ConfigurationError(
                f"the SQLite store {self._path!r} has schema version {version}, newer than the "
                f"{len(MIGRATIONS)} this keyguard understands; upgrade keyguard"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS keyguard_schema ("
            " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
        )
        # Re-read inside the write transaction: another process may have migrated meanwhile.
        version = self._schema_version(conn)
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO keyguard_schema (id, version) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (len(MIGRATIONS),),
        )

    # -- request path --------------------------------------------------------------------
    def get(self, key_id: str) -> KeyRecord | None:
        def op(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                SELECT + " WHERE key_id = ?", (key_id,)
            ).fetchone()
            return row

        row = self._run(op)
        return None if row is None else decode(row)

    def touch(self, key_id: str, at: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE keyguard_keys SET last_used_at = :at WHERE key_id = :key_id"
                " AND (last_used_at IS NULL OR last_used_at < :at)",
                {"at": at, "key_id": key_id},
            )

        self._run(op, write=True)

    # -- management ----------------------------------------------------------------------
    def create(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        params = encode(record)
        event = None if audit is None else audit_params(audit)
        check_entry(idempotency, record)

        def op(conn: sqlite3.Connection) -> None:
            claim(conn, idempotency)
            try:
                inserted = conn.execute(INSERT, params).rowcount
            except sqlite3.IntegrityError as exc:
                raise ConfigurationError(f"key {record.key_id}: invalid record ({exc})") from None
            if not inserted:
                raise KeyExists(f"key {record.key_id} exists already")
            if event is not None:
                conn.execute(INSERT_AUDIT, event)
            remember(conn, idempotency)

        self._run(op, write=True)
        self._changed(record.key_id)

    def update(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        params = encode(record)
        params["expected_version"] = record.version - 1
        event = None if audit is None else audit_params(audit)
        check_entry(idempotency, record)

        def op(conn: sqlite3.Connection) -> None:
            claim(conn, idempotency)
            try:
                changed = conn.execute(UPDATE, params).rowcount
            except sqlite3.IntegrityError as exc:
                raise ConfigurationError(f"key {record.key_id}: invalid record ({exc})") from None
            if changed:
                # Same transaction: the change, its audit event and its idempotency entry
                # commit together or not at all.
                if event is not None:
                    conn.execute(INSERT_AUDIT, event)
                remember(conn, idempotency)
                return
            exists = conn.execute(
                "SELECT 1 FROM keyguard_keys WHERE key_id = ?", (record.key_id,)
            ).fetchone()
            if exists is None:
                raise KeyNotFound(f"no key {record.key_id}")
            raise ConflictError(f"key {record.key_id} was changed concurrently")

        self._run(op, write=True)
        self._changed(record.key_id)

    def list(
        self,
        *,
        owner: str | None = None,
        status: KeyStatus | None = None,
        created_by: str | None = None,
        now: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        check_limit(limit)
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if owner is not None:
            where.append("owner = :owner")
            params["owner"] = owner
        if created_by is not None:
            where.append("created_by = :created_by")
            params["created_by"] = created_by
        if status is not None:
            try:
                where.append(STATUS_SQL[KeyStatus(status)])
            except ValueError:
                raise ConfigurationError(f"unknown key status {status!r}") from None
            params["now"] = time.time() if now is None else now
        if cursor:
            params["after_created"], params["after_key"] = decode_cursor(cursor)
            where.append("(created_at, key_id) > (:after_created, :after_key)")
        sql = (
            SELECT
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at, key_id LIMIT :limit"
        )

        def op(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        records = [decode(row) for row in self._run(op)]
        more = len(records) > limit
        items = tuple(records[:limit])
        return Page(items=items, next_cursor=encode_cursor(items[-1]) if more else None)

    def add_audit(self, event: AuditEvent) -> None:
        params = audit_params(event)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(INSERT_AUDIT, params)

        self._run(op, write=True)

    def audit(self, *, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        """The newest events first (by ``at``; events at the same time, last appended first)."""
        check_limit(limit)
        sql = "SELECT at, action, key_id, actor, details FROM keyguard_audit"
        params: tuple[Any, ...] = (limit,)
        if key_id is not None:
            sql += " WHERE key_id = ?"
            params = (key_id, limit)
        sql += " ORDER BY at DESC, id DESC LIMIT ?"

        def op(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return [
            AuditEvent(at=at, action=action, key_id=kid, actor=actor, details=json.loads(details))
            for at, action, kid, actor, details in self._run(op)
        ]

    def get_idempotency(self, key_id: str, token: str, *, now: float) -> IdempotencyEntry | None:
        def op(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                "SELECT entry FROM keyguard_idempotency"
                " WHERE key_id = ? AND token = ? AND expires_at > ?",
                (key_id, token, now),
            ).fetchone()
            return row

        row = self._run(op)
        return None if row is None else decode_entry(row[0])

    # -- deployment settings ---------------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        def op(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            row: tuple[Any, ...] | None = conn.execute(
                "SELECT value FROM keyguard_settings WHERE name = ?", (name,)
            ).fetchone()
            return row

        row = self._run(op)
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        def op(conn: sqlite3.Connection) -> str:
            if only_if_absent:
                conn.execute(
                    "INSERT INTO keyguard_settings (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name, value),
                )
            else:
                conn.execute(
                    "INSERT INTO keyguard_settings (name, value) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )
            (stored,) = conn.execute(
                "SELECT value FROM keyguard_settings WHERE name = ?", (name,)
            ).fetchone()
            return str(stored)

        return self._run(op, write=True)

    # -- once-only markers -----------------------------------------------------------------
    def claim_notification(self, name: str, ttl: float, *, now: float | None = None) -> bool:
        check_claim(name, ttl)
        at = time.time() if now is None else now

        def op(conn: sqlite3.Connection) -> bool:
            # One write transaction (BEGIN IMMEDIATE): of racing processes exactly one inserts.
            conn.execute("DELETE FROM keyguard_notifications WHERE expires_at <= ?", (at,))
            cursor = conn.execute(
                "INSERT INTO keyguard_notifications (name, expires_at) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (name, at + ttl),
            )
            return cursor.rowcount == 1

        return self._run(op, write=True)

    def release_notification(self, name: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM keyguard_notifications WHERE name = ?", (name,))

        self._run(op, write=True)

    # -- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        """Read the schema version: this proves the file can be opened and read."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT version FROM keyguard_schema").fetchone()

        self._run(op)

    def _close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns.items())
            self._conns.clear()
        for conn, pid in conns:
            _dispose(conn, pid)
        # Threads' holders now point at closed connections: a new local forgets them all.
        self._local = threading.local()

    def close(self) -> None:
        """Close every connection of this process. Idempotent."""
        with self._conns_lock:
            self._closed = True
        self._close_connections()
        if self._shared is not None:
            with self._shared_lock:
                _close_quietly(self._shared)

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"
