"""The overview pages: usage per owner (or per key), and activity — denials and anomalies.

Activity comes from the audit log for now: refused changes (``*.refused``), lifecycle events
(revocations, suspensions, rotations, sign-ins), and the hygiene findings of
:mod:`keyguard.abuse.review` (admin keys, rotation due, no expiry, unused, expiring soon) over
the keys the operator sees. Request-level denials will join when the observability events are
wired.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from keyguard.abuse.review import Review, Severity
from keyguard.dashboard.pages import visible_key
from keyguard.dashboard.usage_view import UsagePanel, usage_panel
from keyguard.management.api.listing import Filters, audit_events, list_page

if TYPE_CHECKING:
    from keyguard.core.records import KeyRecord
    from keyguard.dashboard.app import Context
    from keyguard.management.api.http import ApiResponse

__all__ = ["activity", "usage"]

_AUDIT_WINDOW: Final = 500
_SHOWN: Final = 100
LIFECYCLE: Final = frozenset(
    {"revoke", "suspend", "resume", "rotate", "expire", "dashboard.sign_in"}
)
KINDS: Final = {"denials": "denials", "lifecycle": "lifecycle", "all": "everything"}


def _visible(ctx: Context) -> list[KeyRecord]:
    dash = ctx.dashboard
    out: list[KeyRecord] = []
    cursor: str | None = None
    while len(out) < dash.max_listed:
        page = list_page(
            dash.manager, ctx.operator.caller, Filters(), limit=500, cursor=cursor, now=ctx.now
        )
        out.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return out[: dash.max_listed]


def usage(ctx: Context) -> ApiResponse:
    params = ctx.request.params()
    operator = ctx.operator
    key_id = params.get("key", "").strip()
    if key_id:
        record = visible_key(ctx, key_id)
        return ctx.render(
            "usage.html",
            panel=usage_panel(ctx.dashboard, now=ctx.now, key_id=record.key_id),
            subject=f"key {record.name} ({record.key_id})",
            owners=[],
            owner="",
            record=record,
        )
    visible = _visible(ctx)
    owners = sorted({r.owner for r in visible if r.owner is not None})
    owner = params.get("owner", "").strip() or (operator.record.owner or "")
    if owner and owner not in owners and not operator.admin:
        owner = operator.record.owner or ""
    panel: UsagePanel | None = None
    if owner and operator.admin:
        panel = usage_panel(ctx.dashboard, now=ctx.now, owner=owner)
    elif owner:
        mine = [r.key_id for r in visible if r.owner == owner]
        panel = usage_panel(ctx.dashboard, now=ctx.now, key_ids=mine)
    return ctx.render(
        "usage.html",
        panel=panel,
        subject=f"owner {owner}" if owner else "",
        owners=owners,
        owner=owner,
        record=None,
    )


def activity(ctx: Context) -> ApiResponse:
    dash = ctx.dashboard
    kind = ctx.request.params().get("show", "denials")
    kind = kind if kind in KINDS else "denials"
    events = audit_events(dash.manager, ctx.operator.caller, key_id=None, limit=_AUDIT_WINDOW)
    if kind == "denials":
        events = [e for e in events if e.action.endswith(".refused")]
    elif kind == "lifecycle":
        events = [e for e in events if e.action in LIFECYCLE]
    report = Review(clock=dash.manager.clock).run(_visible(ctx))
    findings = [f for f in report.findings if f.severity >= Severity.MEDIUM][:_SHOWN]
    return ctx.render(
        "activity.html",
        events=events[:_SHOWN],
        kind=kind,
        kinds=KINDS,
        findings=findings,
        findings_total=report.count(Severity.MEDIUM),
    )
