"""The SQLite store's usage counts (see :mod:`keyguard.core.usage`): tables ``keyguard_usage``
(one row per key, UTC day and field, only ever incremented with an upsert) and
``keyguard_usage_last`` (each key's latest use), created by the schema's fourth migration.

A flush is one ``BEGIN IMMEDIATE`` transaction: every batch's increments, the latest uses, the
records' ``last_used_at`` and the retention sweep commit together or not at all, so a failed
flush can be retried whole without counting anything twice; ``keyguard_usage_batches``
remembers the batch ids applied in the last day, so that even a batch resent after a commit
whose success was not seen is skipped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from keyguard.core.errors import ConfigurationError
from keyguard.core.usage import DEFAULT_RETENTION_DAYS, UsageBatch, UsageTotals, cutoff_day

__all__ = ["SQLiteUsage"]

T = TypeVar("T")

#: Seconds an applied batch id is remembered: long past any retry of that batch.
_MARKER_TTL = 86_400.0

_INCREMENT = (
    "INSERT INTO keyguard_usage (key_id, day, field, count)"
    " SELECT :key_id, :day, :field, :count WHERE EXISTS"
    " (SELECT 1 FROM keyguard_keys WHERE key_id = :key_id)"
    " ON CONFLICT (key_id, day, field) DO UPDATE SET count = count + excluded.count"
)
_LAST = (
    "INSERT INTO keyguard_usage_last (key_id, at, client)"
    " SELECT :key_id, :at, :client WHERE EXISTS"
    " (SELECT 1 FROM keyguard_keys WHERE key_id = :key_id)"
    " ON CONFLICT (key_id) DO UPDATE SET at = excluded.at, client = excluded.client"
    " WHERE excluded.at > keyguard_usage_last.at"
)
_TOUCH = (
    "UPDATE keyguard_keys SET last_used_at = :at WHERE key_id = :key_id"
    " AND (last_used_at IS NULL OR last_used_at < :at)"
)
_OWNED = "SELECT key_id FROM keyguard_keys WHERE owner = :owner"


class SQLiteUsage:
    """Usage methods of :class:`~keyguard.stores.sqlite.SQLiteStore` (a mixin: it uses the
    store's ``_run``)."""

    keeps_usage = True

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        raise NotImplementedError  # provided by SQLiteStore

    def add_usage(
        self, batches: Sequence[UsageBatch], *, retention_days: int = DEFAULT_RETENTION_DAYS
    ) -> None:
        oldest = cutoff_day(time.time(), retention_days)
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM keyguard_usage_batches WHERE at < ?", (now - _MARKER_TTL,))
            increments: list[dict[str, Any]] = []
            lasts: list[dict[str, Any]] = []
            for batch in batches:
                if (
                    batch.batch_id
                    and not conn.execute(
                        "INSERT INTO keyguard_usage_batches (batch_id, at) VALUES (?, ?)"
                        " ON CONFLICT (batch_id) DO NOTHING",
                        (batch.batch_id, now),
                    ).rowcount
                ):
                    continue  # applied before
                for day, fields in batch.counts.items():
                    if day >= oldest:
                        increments += [
                            {"key_id": batch.key_id, "day": day, "field": f, "count": n}
                            for f, n in fields.items()
                            if n
                        ]
                if batch.last_used_at is not None:
                    lasts.append(
                        {
                            "key_id": batch.key_id,
                            "at": batch.last_used_at,
                            "client": batch.last_client,
                        }
                    )
            conn.executemany(_INCREMENT, increments)
            conn.executemany(_LAST, lasts)
            conn.executemany(_TOUCH, lasts)
            conn.execute("DELETE FROM keyguard_usage WHERE day < ?", (oldest,))

        self._run(op, write=True)

    def usage_totals(
        self, *, key_id: str | None = None, owner: str | None = None, since: str
    ) -> UsageTotals:
        if (key_id is None) == (owner is None):
            raise ConfigurationError("give exactly one of key_id and owner")
        params: dict[str, str | None] = {"key_id": key_id, "owner": owner, "since": since}
        which = "key_id = :key_id" if key_id is not None else f"key_id IN ({_OWNED})"

        def op(conn: sqlite3.Connection) -> tuple[list[Any], Any]:
            rows = conn.execute(
                "SELECT day, field, SUM(count) FROM keyguard_usage"  # noqa: S608 - constant
                f" WHERE {which} AND day >= :since GROUP BY day, field",
                params,
            ).fetchall()
            last = conn.execute(
                "SELECT at, client FROM keyguard_usage_last"  # noqa: S608 - constant
                f" WHERE {which} ORDER BY at DESC LIMIT 1",
                params,
            ).fetchone()
            return rows, last

        rows, last = self._run(op)
        days: dict[str, dict[str, int]] = {}
        for day, name, count in rows:
            days.setdefault(str(day), {})[str(name)] = int(count)
        return UsageTotals(
            days=days,
            last_used_at=None if last is None else float(last[0]),
            last_client=None if last is None or last[1] is None else str(last[1]),
        )
