"""The key pages: the listing (search, filters, sorting, badges) and one key's detail.

Both read through the management API's listing rules (:mod:`keyguard.management.api.listing`):
an ``admin`` key sees every key, any other managing key exactly the keys it could act on, so
the dashboard never shows a key the operator could not touch. Records are shown through
:meth:`~keyguard.core.records.KeyRecord.public_dict` fields only: never a digest, never a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.errors import KeyNotFound, ScopeError
from keyguard.core.keys import is_key_id
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.core.scopes import parse_required
from keyguard.dashboard.usage_view import usage_panel
from keyguard.management.api.listing import Caller, Filters, audit_events, list_page, sees
from keyguard.management.lifecycle import DEFAULT_GRACE
from keyguard.management.manager import KeyManager
from keyguard.stores.base import MAX_PAGE_SIZE

if TYPE_CHECKING:
    from keyguard.dashboard.app import Context
    from keyguard.management.api.http import ApiResponse

__all__ = ["list_keys", "show_key", "visible_key"]

PAGE_SIZE: Final = 50
SORTS: Final = {
    "created": "newest first",
    "last_used": "last used",
    "expires": "expiring first",
    "name": "name",
}
FLAGS: Final = {"expiring": "expiring soon", "never_used": "never used"}
#: Rotation grace choices offered on a key's page (seconds → label).
GRACE_CHOICES: Final = (
    (0.0, "none"),
    (3600.0, "1 hour"),
    (DEFAULT_GRACE, "24 hours"),
    (7 * 86400.0, "7 days"),
)
DONE: Final = {
    "suspended": "The key is suspended: it is refused until resumed.",
    "resumed": "The key is active again.",
    "revoked": "The key is revoked (and so are the keys it created, if you chose so).",
}


@dataclass(frozen=True, slots=True)
class Row:
    record: KeyRecord
    status: KeyStatus
    expiring: bool
    never_used: bool


def _row(manager: KeyManager, record: KeyRecord, now: float) -> Row:
    status = record.status(now)
    expiring = (
        status is KeyStatus.ACTIVE
        and record.expires_at is not None
        and record.expires_at <= now + manager.expiring_soon
    )
    return Row(record, status, expiring, record.last_used_at is None)


def _load(
    manager: KeyManager, caller: Caller, filters: Filters, now: float, most: int
) -> tuple[list[KeyRecord], bool]:
    """Up to ``most`` keys the caller sees, filtered; and whether there were more."""
    found: list[KeyRecord] = []
    cursor: str | None = None
    while len(found) <= most:
        page = list_page(
            manager, caller, filters, limit=min(MAX_PAGE_SIZE, most + 1), cursor=cursor, now=now
        )
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return found[:most], len(found) > most


def _matches(record: KeyRecord, text: str) -> bool:
    text = text.lower()
    return any(
        text in (value or "").lower()
        for value in (record.key_id, record.name, record.description, record.owner)
    )


def _sort_key(sort: str) -> Callable[[Row], tuple[Any, ...]]:
    far = float("inf")
    if sort == "last_used":
        return lambda r: (r.record.last_used_at is None, -(r.record.last_used_at or 0.0))
    if sort == "expires":
        return lambda r: (r.status is not KeyStatus.ACTIVE, r.record.expires_at or far)
    if sort == "name":
        return lambda r: (r.record.name.lower(), r.record.key_id)
    return lambda r: (-r.record.created_at, r.record.key_id)


def list_keys(ctx: Context) -> ApiResponse:
    params = ctx.request.params()
    manager = ctx.dashboard.manager
    errors: list[str] = []
    query = params.get("q", "").strip()[:200]
    owner = params.get("owner", "").strip()[:200] or None
    status: KeyStatus | None = None
    if params.get("status"):
        try:
            status = KeyStatus(params["status"])
        except ValueError:
            errors.append("Unknown status: choose one from the list.")
    scope = params.get("scope", "").strip() or None
    if scope is not None:
        try:
            scope = parse_required(scope)
        except ScopeError:
            errors.append("Unknown scope: choose one from the list.")
            scope = None
    sort = params.get("sort", "created")
    sort = sort if sort in SORTS else "created"
    flag = params.get("flag", "")
    flag = flag if flag in FLAGS else ""
    try:
        page_no = max(1, min(int(params.get("page", "1")), 10_000))
    except ValueError:
        page_no = 1

    records, truncated = _load(
        manager,
        ctx.operator.caller,
        Filters(owner=owner, status=status, scope=scope),
        ctx.now,
        ctx.dashboard.max_listed,
    )
    rows = [_row(manager, r, ctx.now) for r in records if not query or _matches(r, query)]
    if flag == "expiring":
        rows = [r for r in rows if r.expiring]
    elif flag == "never_used":
        rows = [r for r in rows if r.never_used]
    rows.sort(key=_sort_key(sort))
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page_no = min(page_no, pages)
    shown = rows[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
    filters = {
        "q": query,
        "owner": owner or "",
        "status": status.value if status else "",
        "scope": scope or "",
        "sort": sort,
        "flag": flag,
    }
    return ctx.render(
        "keys.html",
        status=400 if errors else 200,
        rows=shown,
        count=len(rows),
        page_no=page_no,
        pages=pages,
        truncated=truncated,
        filters=filters,
        errors=errors,
        sorts=SORTS,
        flags=FLAGS,
        statuses=[s.value for s in KeyStatus],
        scopes=sorted(manager.catalog),
    )


def visible_key(ctx: Context, key_id: str) -> KeyRecord:
    """The key a page names, if the operator may see it (else the 404/403 page)."""
    from keyguard.dashboard.app import PageError

    manager = ctx.dashboard.manager
    try:
        record = manager.get(key_id)
    except KeyNotFound:
        raise PageError(404, f"There is no key {key_id}.") from None
    if not sees(manager, ctx.operator.caller, record):
        raise PageError(
            403, f"Key {record.key_id} is outside the authority of the key you signed in with."
        )
    return record


def show_key(ctx: Context, key_id: str) -> ApiResponse:
    record = visible_key(ctx, key_id)
    dash = ctx.dashboard
    manager = dash.manager
    caller = ctx.operator.caller
    parent = None
    parent_visible = False
    if record.created_by is not None and is_key_id(record.created_by):
        parent = manager.store.get(record.created_by)
        parent_visible = parent is not None and sees(manager, caller, parent)
    children = [
        _row(manager, c, ctx.now)
        for c in manager.iter_all(created_by=record.key_id)
        if sees(manager, caller, c)
    ]
    events = audit_events(manager, caller, key_id=record.key_id, limit=50)
    scopes = []
    for s in sorted(record.scopes):
        try:
            scopes.append((s, manager.catalog.describe(s)))
        except ScopeError:
            scopes.append((s, "not in this deployment's catalog"))
    done = DONE.get(ctx.request.params().get("done", ""))
    return ctx.render(
        "key.html",
        row=_row(manager, record, ctx.now),
        record=record,
        scopes=scopes,
        parent=parent,
        parent_visible=parent_visible,
        children=children,
        events=events,
        usage=usage_panel(dash, key_id=record.key_id, now=ctx.now),
        grace_choices=GRACE_CHOICES,
        default_grace=DEFAULT_GRACE,
        done=done,
        new_request_id=_request_id(),
        is_self=record.key_id == ctx.operator.key_id,
    )


def _request_id() -> str:
    """A fresh idempotency key for a form that issues a secret (a resubmission is answered,
    not run twice)."""
    import secrets

    return secrets.token_urlsafe(18)
