"""The values the observability layer passes around: one typed event per outcome, and usage.

Everything here is plain data, importable without any driver or framework, so that sinks,
metrics, notifications and anomaly detectors written by different people agree on one shape.

An :class:`Event` never holds a key, a secret or any piece of one: only the key *id* (public
by design: it is the lookup handle printed in listings) and facts about the request. Text that
came from a request (the method, the client address when it came from a header, a route the
policy did not know) goes through :func:`escape` first, so that a log line stays one line and a
terminal is never sent control characters.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Final

__all__ = [
    "DENIAL_KINDS",
    "STATUS_CLASSES",
    "Event",
    "EventKind",
    "UsageDay",
    "UsageReport",
    "escape",
    "status_class",
]


class EventKind(enum.StrEnum):
    """What happened. Request outcomes first, then key lifecycle, then infrastructure."""

    #: A request was admitted (key valid, scopes sufficient, within its rate limits).
    AUTHENTICATED = "authenticated"
    #: Authentication refused; :attr:`Event.code` is the error code (``missing_api_key``,
    #: ``invalid_api_key_format``, ``invalid_api_key``, ``network_not_allowed``,
    #: ``auth_unavailable``). For ``invalid_api_key`` :attr:`Event.reason` says
    #: ``"unknown_key"`` (no such key id) or ``"wrong_secret"`` (a real key id, wrong secret:
    #: :attr:`Event.key_id` and :attr:`Event.owner` are then set).
    DENIED = "denied"
    #: A valid key without the scopes the route needs (``insufficient_scope``).
    SCOPE_DENIED = "scope_denied"
    #: A valid key over one of its windows (``rate_limited``); ``detail["window"]`` names the
    #: window that refused (``"1d"`` for a daily limit), ``detail["limit"]`` its limit.
    RATE_LIMITED = "rate_limited"
    #: A real key presented with the right secret, refused for its state; ``code`` is
    #: ``revoked_api_key``, ``expired_api_key`` or ``suspended_api_key``.
    KEY_REFUSED = "key_refused"
    KEY_CREATED = "key_created"
    KEY_ROTATED = "key_rotated"
    KEY_REVOKED = "key_revoked"
    KEY_UPDATED = "key_updated"
    KEY_SUSPENDED = "key_suspended"
    KEY_RESUMED = "key_resumed"
    #: The key store failed (the request failed closed: ``auth_unavailable``).
    STORE_UNAVAILABLE = "store_unavailable"
    #: The rate limiter's backend failed and the configured fallback decided instead.
    LIMITER_FALLBACK = "limiter_fallback"
    #: An anomaly detector fired; ``detail["detector"]`` names it, ``reason`` says why.
    ANOMALY = "anomaly"
    #: A notification condition was met (``detail["notification"]``: ``expiring``,
    #: ``rotation_due``, ``daily_limit``, ``suspended``).
    NOTIFICATION = "notification"


#: Request outcomes that refuse the request.
DENIAL_KINDS: Final = frozenset(
    {EventKind.DENIED, EventKind.SCOPE_DENIED, EventKind.RATE_LIMITED, EventKind.KEY_REFUSED}
)

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Event:
    """One outcome. Every field but :attr:`kind` and :attr:`at` may be ``None``.

    - ``at``: wall-clock time (epoch seconds) from keyguard's clock.
    - ``code``: the error code of a refusal (see :class:`~keyguard.core.errors.ErrorCode`).
    - ``key_id``/``owner``: the key concerned, when known (never for an unknown key id).
    - ``route``: the route *template* (``/agents/{agent_id}``), never a raw path; ``None``
      when no policy rule matched.
    - ``method``, ``status``, ``client``: the request's method, the response status keyguard
      decided (``None`` when the application answers), the client address.
    - ``elapsed``: keyguard's own time for this request, in seconds.
    - ``reason``: a short machine-readable reason (``wrong_secret``, ``unknown_key``…) or, for
      lifecycle events, the operator's reason, escaped.
    - ``actor``: for lifecycle events, the key id (or ``"cli"``) that performed the change.
    - ``detail``: further string facts (``window``, ``limit``, ``detector``…).
    """

    kind: EventKind
    at: float
    code: str | None = None
    key_id: str | None = None
    owner: str | None = None
    route: str | None = None
    method: str | None = None
    status: int | None = None
    client: str | None = None
    elapsed: float | None = None
    reason: str | None = None
    actor: str | None = None
    detail: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def fields(self) -> dict[str, object]:
        """The non-empty fields as a flat dict (``kind`` as its string), for structured logs."""
        out: dict[str, object] = {"kind": str(self.kind), "at": self.at}
        for name in (
            "code",
            "key_id",
            "owner",
            "route",
            "method",
            "status",
            "client",
            "elapsed",
            "reason",
            "actor",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.detail:
            out.update(self.detail)
        return out


_ESCAPES: Final = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord("\\"): "\\\\",
}


def escape(text: str, limit: int = 200) -> str:
    """``text`` made safe for one log line: control characters (CR and LF included) and
    backslashes escaped, C1 controls escaped, cut to ``limit`` characters (``…`` marks a cut)."""
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable() and "\\" not in text:
        return text
    out = text.translate(_ESCAPES)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in out)


#: The status classes usage is split into; ``4xx`` excludes ``429`` (they are disjoint, so a
#: day's classes add up to its total).
STATUS_CLASSES: Final = ("2xx", "3xx", "4xx", "429", "5xx")


def status_class(status: int) -> str:
    """``"429"`` for 429, else ``"2xx"``, ``"3xx"``, ``"4xx"`` or ``"5xx"`` (1xx counts as 2xx)."""
    if status == 429:
        return "429"
    if status < 300:
        return "2xx"
    if status < 400:
        return "3xx"
    if status < 500:
        return "4xx"
    return "5xx"


@dataclass(frozen=True, slots=True)
class UsageDay:
    """One UTC day of one key's (or one owner's) requests."""

    day: date
    #: Requests per status class (every class of :data:`STATUS_CLASSES` present, zeros included).
    by_status: Mapping[str, int]
    #: Requests per route template (``"(other)"`` for requests no template matched).
    by_route: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage of one key (``key_id`` set) or one owner (``owner`` set, keys summed) over
    ``days``, oldest first, one entry per day (days without requests included, all zeros)."""

    days: tuple[UsageDay, ...]
    key_id: str | None = None
    owner: str | None = None
    last_used_at: float | None = None
    last_client: str | None = None

    @property
    def total(self) -> int:
        return sum(d.total for d in self.days)
