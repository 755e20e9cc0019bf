"""Notifications: tell operators about a key before a customer does.

Four conditions, each a :class:`NotificationKind`:

* ``expiring`` — an active key expires within ``expiring_within`` (default 7 days);
* ``rotation_due`` — an active key's secret is older than ``rotation_after`` (default 90
  days, the platform's rotation period), counted from its creation or last rotation;
* ``daily_limit`` — a key was refused by a window of one day or more (a ``RATE_LIMITED``
  event whose window is a day);
* ``suspended`` — a key was suspended (a ``KEY_SUSPENDED`` event).

The first two are found by :meth:`Notifier.check`, which scans the store's active keys: run it
from cron (``keyguard notify --check``) or every ``interval`` seconds in a thread
(:meth:`Notifier.start`). The last two arrive as events: a :class:`Notifier` is an event sink
(``notifier(event)``), cheap and non-blocking on the request path — it only queues, and a
worker thread delivers.

**Once per condition.** Each notification has a name naming the condition *instance* —
``expiring:<key id>:<expiry>``, ``rotation_due:<key id>:<issued at>``,
``daily_limit:<key id>:<UTC day>``, ``suspended:<key id>:<time>`` — and, per delivery target
(each callback, each webhook), it is claimed in the shared store
(:meth:`~keyguard.core.store.KeyStore.claim_notification`) before it is sent: of all the
processes and cron runs sharing the store, one sends it. A target that fails (a callback that
raises, a webhook not delivered after its retries) gives its claim back, so the next check tries
again; the others are not sent twice. A new expiry (a key extended) or a new day is a new
instance, and notifies again. Each process also remembers what it already claimed, so a key
refused all day costs the store one claim per process, not one per request.

**No secrets.** A notification carries the key's id, name, owner and times, never its secret or
digest; webhooks are signed (:mod:`keyguard.observability.webhooks`) with a secret that never
travels.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.observability.model import Event, EventKind

__all__ = [
    "DEFAULT_EXPIRING_WITHIN",
    "DEFAULT_ROTATION_AFTER",
    "Notification",
    "NotificationKind",
    "conditions",
    "from_event",
    "is_daily_window",
]

DAY: Final = 86400.0
DEFAULT_EXPIRING_WITHIN: Final = 7 * DAY
DEFAULT_ROTATION_AFTER: Final = 90 * DAY
#: How long a marker outlives its condition: long enough that no later check repeats it.
_ROTATION_MARKER_TTL: Final = 400 * DAY
_EVENT_MARKER_TTL: Final = 2 * DAY
_SUSPENDED_MARKER_TTL: Final = 30 * DAY

#: Window names (and ``RateLimit`` policy names) that mean "per day".
_DAY_NAMES: Final = frozenset({"day", "1d", "24h", "1440m", "86400s", "daily"})


class NotificationKind(enum.StrEnum):
    EXPIRING = "expiring"
    ROTATION_DUE = "rotation_due"
    DAILY_LIMIT = "daily_limit"
    SUSPENDED = "suspended"


_MESSAGES: Final = {
    NotificationKind.EXPIRING: "expires soon",
    NotificationKind.ROTATION_DUE: "is due for rotation",
    NotificationKind.DAILY_LIMIT: "hit its daily rate limit",
    NotificationKind.SUSPENDED: "was suspended",
}


def is_daily_window(detail: Mapping[str, str]) -> bool:
    """Whether a ``RATE_LIMITED`` event's ``detail`` names a window of a day or more: by its
    ``period`` (seconds) when given, else by its name (``day``, ``1d``, ``24h``…)."""
    period = detail.get("period")
    if period is not None:
        try:
            return float(period) >= DAY
        except ValueError:
            return False
    name = detail.get("window", "").lower()
    if name.endswith("d") and name[:-1].isdigit():
        return int(name[:-1]) >= 1
    return name in _DAY_NAMES


@dataclass(frozen=True, slots=True)
class Notification:
    """One condition instance about one key. ``name`` is its once-only marker."""

    kind: NotificationKind
    key_id: str
    name: str
    at: float
    owner: str | None = None
    key_name: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    detail: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """A stable id (the same in every process and on every retry): for receivers that
        drop duplicates."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:32]

    @property
    def type(self) -> str:
        return f"keyguard.key.{self.kind.value}"

    @property
    def message(self) -> str:
        label = f"key {self.key_id}" + (f" ({self.key_name})" if self.key_name else "")
        text = f"{label} {_MESSAGES[self.kind]}"
        if self.kind is NotificationKind.EXPIRING and self.expires_at is not None:
            text += f": it expires at {to_iso(self.expires_at)}"
        elif self.kind is NotificationKind.ROTATION_DUE and self.issued_at is not None:
            text += f": its secret was issued at {to_iso(self.issued_at)}"
        elif self.kind is NotificationKind.DAILY_LIMIT and "limit" in self.detail:
            text += f" ({self.detail['limit']} per {self.detail.get('window', 'day')})"
        return text

    def payload(self) -> dict[str, Any]:
        """The JSON body of a webhook: public facts about the key, never its secret."""
        key: dict[str, Any] = {"key_id": self.key_id, "name": self.key_name, "owner": self.owner}
        if self.expires_at is not None:
            key["expires_at"] = to_iso(self.expires_at)
        if self.issued_at is not None:
            key["issued_at"] = to_iso(self.issued_at)
        return {
            "id": self.id,
            "type": self.type,
            "notification": self.kind.value,
            "created_at": to_iso(self.at),
            "message": self.message,
            "key": key,
            "detail": dict(self.detail),
        }

    def event(self) -> Event:
        """The ``NOTIFICATION`` event for the event pipeline."""
        return Event(
            EventKind.NOTIFICATION,
            self.at,
            key_id=self.key_id,
            owner=self.owner,
            detail={"notification": self.kind.value, **self.detail},
        )


def _issued(record: KeyRecord) -> float:
    return record.rotated_at if record.rotated_at is not None else record.created_at


def conditions(
    record: KeyRecord,
    now: float,
    *,
    expiring_within: float | None = DEFAULT_EXPIRING_WITHIN,
    rotation_after: float | None = DEFAULT_ROTATION_AFTER,
) -> list[tuple[Notification, float]]:
    """The periodic conditions ``record`` meets at ``now``, each with its marker's ttl."""
    if record.status(now) is not KeyStatus.ACTIVE:
        return []
    found: list[tuple[Notification, float]] = []
    common = {"owner": record.owner, "key_name": record.name, "at": now}
    expires = record.expires_at
    if expiring_within is not None and expires is not None and expires - now <= expiring_within:
        left = max(0, int(expires - now))
        found.append(
            (
                Notification(
                    NotificationKind.EXPIRING,
                    record.key_id,
                    f"expiring:{record.key_id}:{int(expires)}",
                    expires_at=expires,
                    detail={"expires_in_seconds": str(left)},
                    **common,  # type: ignore[arg-type]
                ),
                expires - now + DAY,
            )
        )
    issued = _issued(record)
    if rotation_after is not None and now - issued >= rotation_after:
        found.append(
            (
                Notification(
                    NotificationKind.ROTATION_DUE,
                    record.key_id,
                    f"rotation_due:{record.key_id}:{int(issued)}",
                    issued_at=issued,
                    expires_at=expires,
                    detail={"age_days": str(int((now - issued) // DAY))},
                    **common,  # type: ignore[arg-type]
                ),
                _ROTATION_MARKER_TTL,
            )
        )
    return found


def from_event(event: Event) -> tuple[Notification, float] | None:
    """The notification an event calls for (``daily_limit``, ``suspended``), or ``None``."""
    if event.key_id is None:
        return None
    if event.kind is EventKind.RATE_LIMITED and is_daily_window(event.detail):
        day = datetime.fromtimestamp(event.at, UTC).date().isoformat()
        detail = {k: event.detail[k] for k in ("window", "limit") if k in event.detail}
        return (
            Notification(
                NotificationKind.DAILY_LIMIT,
                event.key_id,
                f"daily_limit:{event.key_id}:{day}",
                event.at,
                owner=event.owner,
                detail={"day": day, **detail},
            ),
            _EVENT_MARKER_TTL,
        )
    if event.kind is EventKind.KEY_SUSPENDED:
        detail = {"reason": event.reason} if event.reason else {}
        return (
            Notification(
                NotificationKind.SUSPENDED,
                event.key_id,
                f"suspended:{event.key_id}:{int(event.at)}",
                event.at,
                owner=event.owner,
                detail=detail,
            ),
            _SUSPENDED_MARKER_TTL,
        )
    return None
