"""What a caller of the management API may see: keys and audit events within its authority.

An ``admin`` key sees every key; any other managing key sees exactly the keys it could act on
(:meth:`~keyguard.management.mutations.KeyMutator.within_authority`: itself and the keys it
created, directly or not, of its owner, within its powers) — the same rule as for changes, so
a listing never shows a key the caller could not touch, nor hides one it could. Listings are
ordered like the stores order them (``created_at``, then key id) and paged with the stores'
cursors; the filters a store cannot apply (scope, expiring within) are applied here, page by
page, so a page is always full unless it is the last.
"""

from __future__ import annotations

import builtins
import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus, Page
from keyguard.management.manager import KeyManager
from keyguard.stores.base import MAX_PAGE_SIZE, decode_cursor, encode_cursor

__all__ = ["Caller", "Filters", "audit_events", "list_page", "sees"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The acting key of a request, freshly read from the store."""

    record: KeyRecord
    admin: bool

    @property
    def key_id(self) -> str:
        return self.record.key_id

    @property
    def actor(self) -> str:
        return f"key:{self.record.key_id}"


@dataclass(frozen=True, slots=True)
class Filters:
    """A listing's filters (``None``: not filtered)."""

    owner: str | None = None
    status: KeyStatus | None = None
    scope: str | None = None
    expiring_within: float | None = None


def sees(manager: KeyManager, caller: Caller, record: KeyRecord) -> bool:
    """Whether ``caller`` may see (and so act on) ``record``."""
    return caller.admin or manager.within_authority(caller.record, record).allowed


def _visible(manager: KeyManager, caller: Caller) -> list[KeyRecord]:
    """Every key a non-admin caller sees, in listing order: itself and its descendants."""
    found = [caller.record] if sees(manager, caller, caller.record) else []
    seen = {caller.key_id}
    frontier = [caller.key_id]
    while frontier:
        creator = frontier.pop()
        for child in manager.iter_all(created_by=creator):
            if child.key_id in seen:
                continue
            seen.add(child.key_id)
            frontier.append(child.key_id)
            if sees(manager, caller, child):
                found.append(child)
    return sorted(found, key=lambda r: (r.created_at, r.key_id))


def _candidates(
    manager: KeyManager, caller: Caller, filters: Filters, cursor: str | None
) -> Iterator[KeyRecord]:
    """Records after ``cursor`` in listing order, the store's filters already applied."""
    if caller.admin:
        while True:
            page = manager.list(
                owner=filters.owner, status=filters.status, limit=MAX_PAGE_SIZE, cursor=cursor
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    after = decode_cursor(cursor) if cursor else None
    for record in _visible(manager, caller):
        if after is None or (record.created_at, record.key_id) > after:
            yield record


def _matches(manager: KeyManager, record: KeyRecord, filters: Filters, now: float) -> bool:
    status = record.status(now)
    if filters.owner is not None and record.owner != filters.owner:
        return False
    if filters.status is not None and status is not filters.status:
        return False
    if filters.scope is not None and not manager.catalog.grants(record.scopes).satisfies(
        filters.scope
    ):
        return False
    if filters.expiring_within is not None:
        return (
            status is KeyStatus.ACTIVE
            and record.expires_at is not None
            and record.expires_at <= now + filters.expiring_within
        )
    return True


def list_page(
    manager: KeyManager,
    caller: Caller,
    filters: Filters,
    *,
    limit: int,
    cursor: str | None,
    now: float,
) -> Page:
    """One page of the keys ``caller`` sees, filtered."""
    out: builtins.list[KeyRecord] = []
    for record in _candidates(manager, caller, filters, cursor):
        if _matches(manager, record, filters, now):
            out.append(record)
            if len(out) > limit:
                break
    more = len(out) > limit
    items = tuple(out[:limit])
    return Page(items=items, next_cursor=encode_cursor(items[-1]) if more else None)


def audit_events(
    manager: KeyManager, caller: Caller, *, key_id: str | None, limit: int
) -> builtins.list[AuditEvent]:
    """The newest audit events the caller may see: of one key, or of every key it sees."""
    if key_id is not None:
        return manager.audit(key_id, limit=limit)
    if caller.admin:
        return manager.audit(None, limit=limit)
    trails = [manager.audit(r.key_id, limit=limit) for r in _visible(manager, caller)]
    merged = heapq.merge(*trails, key=lambda e: e.at, reverse=True)
    return [e for _, e in zip(range(limit), merged, strict=False)]
