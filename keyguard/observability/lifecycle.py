"""Key-lifecycle events: what the :class:`~keyguard.management.KeyManager` emits after each
change it committed (the audit event's twin, for sinks that watch keys rather than requests).

The event carries the key id, its owner, the actor (escaped) and, for revocations and
suspensions, the operator's reason (escaped); ``detail["action"]`` is the manager's action
name (``expire`` is reported as ``key_updated``), ``detail["changed"]`` lists the fields an
update changed. Never a secret: the audit details given here are the ones written to the audit
log, which never hold one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from keyguard.core.records import KeyRecord
from keyguard.observability.model import Event, EventKind, escape

__all__ = ["lifecycle_event"]

_KINDS: Final = {
    "create": EventKind.KEY_CREATED,
    "rotate": EventKind.KEY_ROTATED,
    "revoke": EventKind.KEY_REVOKED,
    "update": EventKind.KEY_UPDATED,
    "expire": EventKind.KEY_UPDATED,
    "suspend": EventKind.KEY_SUSPENDED,
    "resume": EventKind.KEY_RESUMED,
}


def lifecycle_event(
    action: str, record: KeyRecord, actor: str, details: Mapping[str, Any], at: float
) -> Event | None:
    """The event for a committed ``action`` on ``record`` (``None`` for unknown actions)."""
    kind = _KINDS.get(action)
    if kind is None:
        return None
    detail = {"action": action}
    reason = details.get("reason")
    if action == "update":
        detail["changed"] = ",".join(sorted(details))
        if "suspended_at" in details:
            # enabled=False/True in an update: a suspension or a resumption all the same.
            if record.suspended_at is not None:
                kind = EventKind.KEY_SUSPENDED
                reason = details.get("suspended_reason")
            else:
                kind = EventKind.KEY_RESUMED
    cascade = details.get("cascade_from")
    if isinstance(cascade, str):
        detail["cascade_from"] = cascade
    return Event(
        kind=kind,
        at=at,
        key_id=record.key_id,
        owner=None if record.owner is None else escape(record.owner),
        actor=escape(actor),
        reason=escape(reason) if isinstance(reason, str) else None,
        detail=detail,
    )
