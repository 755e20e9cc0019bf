"""The SQLite store's schema and row formats: migrations, column list, SQL, and the
conversions between rows and records (kept apart from :mod:`keyguard.stores.sqlite`, which owns
connections, transactions and the store protocol).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import AuditEvent, IdempotencyEntry, KeyRecord, KeyStatus, dumps_metadata
from keyguard.stores._idempotency import already_processed, decode_entry, encode_entry

__all__ = [
    "COLUMNS",
    "INSERT",
    "INSERT_AUDIT",
    "MIGRATIONS",
    "SELECT",
    "STATUS_SQL",
    "UPDATE",
    "audit_params",
    "claim",
    "decode",
    "encode",
    "remember",
]

#: Schema migrations. ``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``; they
#: run in order inside one transaction. Append new steps, never edit released ones.
MIGRATIONS: Final[list[tuple[str, ...]]] = [
    (
        """
        CREATE TABLE keyguard_keys (
            key_id TEXT NOT NULL PRIMARY KEY,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            scopes TEXT NOT NULL DEFAULT '[]',
            owner TEXT,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            revoked_reason TEXT,
            created_by TEXT,
            rate_limit TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            last_used_at REAL,
            previous_digest TEXT,
            previous_expires_at REAL,
            rotated_at REAL,
            prefix TEXT NOT NULL,
            version INTEGER NOT NULL
        )
        """,
        "CREATE INDEX keyguard_keys_owner ON keyguard_keys (owner)",
        "CREATE INDEX keyguard_keys_created_by ON keyguard_keys (created_by)",
        "CREATE INDEX keyguard_keys_created ON keyguard_keys (created_at, key_id)",
        """
        CREATE TABLE keyguard_audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            action TEXT NOT NULL,
            key_id TEXT NOT NULL,
            actor TEXT NOT NULL,
            details TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX keyguard_audit_key ON keyguard_audit (key_id, at)",
        "CREATE INDEX keyguard_audit_at ON keyguard_audit (at)",
    ),
    (
        """
        CREATE TABLE keyguard_settings (
            name TEXT NOT NULL PRIMARY KEY,
            value TEXT NOT NULL
        )
        """,
    ),
    (
        # Descriptions, suspension and network restrictions, and the idempotency entries
        # written in the same transaction as the change they record.
        "ALTER TABLE keyguard_keys ADD COLUMN description TEXT",
        "ALTER TABLE keyguard_keys ADD COLUMN suspended_at REAL",
        "ALTER TABLE keyguard_keys ADD COLUMN suspended_reason TEXT",
        "ALTER TABLE keyguard_keys ADD COLUMN allowed_networks TEXT NOT NULL DEFAULT '[]'",
        """
        CREATE TABLE keyguard_idempotency (
            key_id TEXT NOT NULL,
            token TEXT NOT NULL,
            expires_at REAL NOT NULL,
            entry TEXT NOT NULL,
            PRIMARY KEY (key_id, token)
        )
        """,
        "CREATE INDEX keyguard_idempotency_expires ON keyguard_idempotency (expires_at)",
    ),
    (
        # Once-only notification markers (KeyStore.claim_notification).
        """
        CREATE TABLE keyguard_notifications (
            name TEXT NOT NULL PRIMARY KEY,
            expires_at REAL NOT NULL
        )
        """,
        "CREATE INDEX keyguard_notifications_expires ON keyguard_notifications (expires_at)",
    ),
    (
        # Usage counts (keyguard.stores.sqlite_usage): one row per key, UTC day and field
        # (``s:2xx``, ``r:GET /agents``), only ever incremented; the latest use of each key.
        """
        CREATE TABLE keyguard_usage (
            key_id TEXT NOT NULL,
            day TEXT NOT NULL,
            field TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (key_id, day, field)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX keyguard_usage_day ON keyguard_usage (day)",
        """
        CREATE TABLE keyguard_usage_last (
            key_id TEXT NOT NULL PRIMARY KEY,
            at REAL NOT NULL,
            client TEXT
        )
        """,
        # Ids of the batches applied in the last day: a batch is never applied twice.
        """
        CREATE TABLE keyguard_usage_batches (
            batch_id TEXT NOT NULL PRIMARY KEY,
            at REAL NOT NULL
        )
        """,
        "CREATE INDEX keyguard_usage_batches_at ON keyguard_usage_batches (at)",
    ),
]

#: The columns of ``keyguard_keys``, one per KeyRecord field, in field order.
COLUMNS: Final = (
    "key_id",
    "name",
    "digest",
    "scopes",
    "description",
    "owner",
    "created_at",
    "expires_at",
    "revoked_at",
    "revoked_reason",
    "created_by",
    "rate_limit",
    "metadata",
    "last_used_at",
    "previous_digest",
    "previous_expires_at",
    "rotated_at",
    "suspended_at",
    "suspended_reason",
    "allowed_networks",
    "prefix",
    "version",
)

SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM keyguard_keys"  # noqa: S608 - constant
INSERT: Final = (
    f"INSERT INTO keyguard_keys ({', '.join(COLUMNS)}) "  # noqa: S608 - constant column list
    f"VALUES ({', '.join(':' + c for c in COLUMNS)}) ON CONFLICT (key_id) DO NOTHING"
)
# last_used_at is maintained by touch() outside the version scheme, so an update never moves it
# backwards (the same rule as MemoryStore.update).
UPDATE: Final = (
    "UPDATE keyguard_keys SET "  # noqa: S608 - constant column list
    + ", ".join(f"{c} = :{c}" for c in COLUMNS if c not in ("key_id", "last_used_at"))
    + ", last_used_at = CASE WHEN COALESCE(last_used_at, 0) > COALESCE(:last_used_at, 0)"
    " THEN last_used_at ELSE :last_used_at END"
    " WHERE key_id = :key_id AND version = :expected_version"
)
INSERT_AUDIT: Final = (
    "INSERT INTO keyguard_audit (at, action, key_id, actor, details) VALUES (?, ?, ?, ?, ?)"
)
STATUS_SQL: Final = {
    KeyStatus.ACTIVE: "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)"
    " AND suspended_at IS NULL",
    KeyStatus.SUSPENDED: "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now)"
    " AND suspended_at IS NOT NULL",
    KeyStatus.EXPIRED: "revoked_at IS NULL AND expires_at <= :now",
    KeyStatus.REVOKED: "revoked_at IS NOT NULL",
}


def encode(record: KeyRecord) -> dict[str, Any]:
    params = {c: getattr(record, c) for c in COLUMNS}
    try:
        params["scopes"] = json.dumps(sorted(record.scopes), separators=(",", ":"))
        params["metadata"] = dumps_metadata(record.metadata)
        params["allowed_networks"] = json.dumps(list(record.allowed_networks))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"key {record.key_id}: scopes and metadata must be JSON-serialisable ({exc})"
        ) from None
    return params


def audit_params(event: AuditEvent) -> tuple[Any, ...]:
    try:
        details = dumps_metadata(event.details)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"audit details must be JSON-serialisable ({exc})") from None
    return (event.at, event.action, event.key_id, event.actor, details)


def decode(row: tuple[Any, ...]) -> KeyRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    values["scopes"] = frozenset(json.loads(values["scopes"]))
    values["metadata"] = json.loads(values["metadata"])
    values["allowed_networks"] = tuple(json.loads(values["allowed_networks"]))
    return KeyRecord(**values)


def claim(conn: sqlite3.Connection, entry: IdempotencyEntry | None) -> None:
    """Inside a write transaction: refuse the write if a live entry has this request's token."""
    if entry is None:
        return
    row = conn.execute(
        "SELECT entry FROM keyguard_idempotency WHERE key_id = ? AND token = ? AND expires_at > ?",
        (entry.key_id, entry.token, entry.at),
    ).fetchone()
    if row is not None:
        raise already_processed(decode_entry(row[0]))


def remember(conn: sqlite3.Connection, entry: IdempotencyEntry | None) -> None:
    if entry is None:
        return
    # Expired entries go as new ones arrive (indexed), so the table holds only live ones.
    conn.execute("DELETE FROM keyguard_idempotency WHERE expires_at <= ?", (entry.at,))
    conn.execute(
        "INSERT OR REPLACE INTO keyguard_idempotency (key_id, token, expires_at, entry)"
        " VALUES (?, ?, ?, ?)",
        (entry.key_id, entry.token, entry.expires_at, encode_entry(entry)),
    )
