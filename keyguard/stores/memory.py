"""An in-process key store (``memory://``): for tests, demos and single-process apps.

Everything lives in one dict guarded by a lock; nothing survives the process. It implements
the full store contract, so it is also the reference the other stores are tested against.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import replace

from keyguard.core.errors import ConfigurationError, ConflictError, KeyExists, KeyNotFound
from keyguard.core.records import (
    AuditEvent,
    IdempotencyEntry,
    KeyRecord,
    KeyStatus,
    Page,
    dumps_metadata,
)
from keyguard.core.usage import (
    DEFAULT_RETENTION_DAYS,
    UsageBatch,
    UsageTotals,
    cutoff_day,
)
from keyguard.stores._idempotency import already_processed, check_entry
from keyguard.stores.base import (
    KeyStore,
    check_claim,
    check_limit,
    decode_cursor,
    encode_cursor,
    matches,
)


class MemoryStore(KeyStore):
    """Keys in a dict. ``max_audit`` bounds the audit log (oldest events are dropped)."""

    scheme = "memory"
    in_process = True
    keeps_usage = True

    def __init__(self, *, max_audit: int = 100_000) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._audit: deque[AuditEvent] = deque(maxlen=max_audit)
        self._settings: dict[str, str] = {}
        self._idempotency: dict[tuple[str, str], IdempotencyEntry] = {}
        # Usage: key id -> ISO day -> field -> count; key id -> (last used, last client);
        # the ids of recently applied batches (a retried batch is skipped).
        self._usage: dict[str, dict[str, Counter[str]]] = {}
        self._usage_last: dict[str, tuple[float, str | None]] = {}
        self._batches: OrderedDict[str, None] = OrderedDict()
        self._claims: dict[str, float] = {}  # notification marker -> expires at
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        del url
        return cls()

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def touch(self, key_id: str, at: float) -> None:
        with self._lock:
            rec = self._records.get(key_id)
            if rec is not None and (rec.last_used_at is None or rec.last_used_at < at):
                self._records[key_id] = replace(rec, last_used_at=at)

    def create(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        _check_event(audit)
        check_entry(idempotency, record)
        with self._lock:
            self._claim(idempotency)
            if record.key_id in self._records:
                raise KeyExists(f"key {record.key_id} exists already")
            self._records[record.key_id] = record
            if audit is not None:
                self._audit.append(audit)
            self._remember(idempotency)
        self._changed(record.key_id)

    def update(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        _check_event(audit)
        check_entry(idempotency, record)
        with self._lock:
            current = self._records.get(record.key_id)
            if current is None:
                raise KeyNotFound(f"no key {record.key_id}")
            self._claim(idempotency)
            if current.version != record.version - 1:
                raise ConflictError(f"key {record.key_id} was changed concurrently")
            # last_used_at is maintained by touch() outside the version scheme: keep the newer.
            if (current.last_used_at or 0) > (record.last_used_at or 0):
                record = replace(record, last_used_at=current.last_used_at)
            self._records[record.key_id] = record
            if audit is not None:
                self._audit.append(audit)
            self._remember(idempotency)
        self._changed(record.key_id)

    # -- idempotency (callers hold the lock) -------------------------------------------------
    def _claim(self, entry: IdempotencyEntry | None) -> None:
        if entry is None:
            return
        found = self._idempotency.get((entry.key_id, entry.token))
        if found is not None and found.expires_at > entry.at:
            raise already_processed(found)

    def _remember(self, entry: IdempotencyEntry | None) -> None:
        if entry is None:
            return
        # Forget expired entries as new ones arrive, so the table stays bounded by what is live.
        stale = [k for k, e in self._idempotency.items() if e.expires_at <= entry.at]
        for k in stale:
            del self._idempotency[k]
        self._idempotency[(entry.key_id, entry.token)] = entry

    def get_idempotency(self, key_id: str, token: str, *, now: float) -> IdempotencyEntry | None:
        with self._lock:
            found = self._idempotency.get((key_id, token))
        return found if found is not None and found.expires_at > now else None

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
        now = time.time() if now is None else now
        after = decode_cursor(cursor) if cursor else None
        with self._lock:
            records = sorted(self._records.values(), key=lambda r: (r.created_at, r.key_id))
        out: list[KeyRecord] = []
        for rec in records:
            if after is not None and (rec.created_at, rec.key_id) <= after:
                continue
            if matches(rec, owner=owner, status=status, created_by=created_by, now=now):
                out.append(rec)
                if len(out) > limit:
                    break
        more = len(out) > limit
        items = tuple(out[:limit])
        return Page(items=items, next_cursor=encode_cursor(items[-1]) if more else None)

    def add_audit(self, event: AuditEvent) -> None:
        _check_event(event)
        with self._lock:
            self._audit.append(event)

    def audit(self, *, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        check_limit(limit)
        with self._lock:
            events = list(self._audit)
        out = [e for e in reversed(events) if key_id is None or e.key_id == key_id]
        return out[:limit]

    # -- usage ---------------------------------------------------------------------------------
    def add_usage(
        self, batches: Sequence[UsageBatch], *, retention_days: int = DEFAULT_RETENTION_DAYS
    ) -> None:
        oldest = cutoff_day(time.time(), retention_days)
        with self._lock:
            for batch in batches:
                if batch.batch_id:
                    if batch.batch_id in self._batches:
                        continue
                    self._batches[batch.batch_id] = None
                    if len(self._batches) > _REMEMBERED_BATCHES:
                        self._batches.popitem(last=False)
                rec = self._records.get(batch.key_id)
                if rec is None:
                    continue
                days = self._usage.setdefault(batch.key_id, {})
                for day, fields in batch.counts.items():
                    if day >= oldest:
                        days.setdefault(day, Counter()).update(fields)
                at = batch.last_used_at
                if at is not None:
                    last = self._usage_last.get(batch.key_id)
                    if last is None or last[0] < at:
                        self._usage_last[batch.key_id] = (at, batch.last_client)
                    if rec.last_used_at is None or rec.last_used_at < at:
                        self._records[batch.key_id] = replace(rec, last_used_at=at)
            for days in self._usage.values():
                for day in [d for d in days if d < oldest]:
                    del days[day]

    def usage_totals(
        self, *, key_id: str | None = None, owner: str | None = None, since: str
    ) -> UsageTotals:
        if (key_id is None) == (owner is None):
            raise ConfigurationError("give exactly one of key_id and owner")
        with self._lock:
            if key_id is not None:
                ids = [key_id]
            else:
                ids = [k for k, r in self._records.items() if r.owner == owner]
            total: dict[str, Counter[str]] = {}
            last: tuple[float, str | None] | None = None
            for kid in ids:
                for day, fields in self._usage.get(kid, {}).items():
                    if day >= since:
                        total.setdefault(day, Counter()).update(fields)
                seen = self._usage_last.get(kid)
                if seen is not None and (last is None or seen[0] > last[0]):
                    last = seen
        return UsageTotals(
            days={d: dict(c) for d, c in total.items()},
            last_used_at=None if last is None else last[0],
            last_client=None if last is None else last[1],
        )

    def get_setting(self, name: str) -> str | None:
        return self._settings.get(name)

    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        with self._lock:
            if only_if_absent:
                return self._settings.setdefault(name, value)
            self._settings[name] = value
            return value

    def claim_notification(self, name: str, ttl: float, *, now: float | None = None) -> bool:
        check_claim(name, ttl)
        at = time.time() if now is None else now
        with self._lock:
            if len(self._claims) > 10_000:  # expired markers go, so the dict stays bounded
                self._claims = {k: v for k, v in self._claims.items() if v > at}
            until = self._claims.get(name)
            if until is not None and until > at:
                return False
            self._claims[name] = at + ttl
            return True

    def release_notification(self, name: str) -> None:
        with self._lock:
            self._claims.pop(name, None)

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._records)})"


#: How many applied batch ids a memory store remembers (a retry comes within seconds).
_REMEMBERED_BATCHES = 100_000


def _check_event(event: AuditEvent | None) -> None:
    """Refuse what a persistent store could not write, so this reference store agrees."""
    if event is None:
        return
    try:
        dumps_metadata(event.details)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"audit details must be JSON-serialisable ({exc})") from None
