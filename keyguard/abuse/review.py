"""``keyguard review``: a least-privilege and hygiene report over every active key.

The platform's advice — grant minimal scopes, rotate regularly, let keys expire, retire what
is not used — becomes findings, each naming a key, what is wrong and what to do:

============== ======== =====================================================================
kind           severity when
============== ======== =====================================================================
admin_scope    high     the key holds ``admin`` (every scope, key management included)
rotation_due   medium   its secret was issued (created or last rotated) more than
                        ``rotate_after`` ago (default 90 days)
no_expiry      medium   it never expires
unused         medium   not used for ``unused_for`` (default 30 days; from ``last_used_at``),
                        or never used since it was created that long ago
many_children  medium   more than ``max_descendants`` active keys descend from it (default 10)
unused_scopes  medium   with a :class:`~keyguard.abuse.usage.UsageSource`: it holds scopes no
                        request needed in the last ``usage_window`` (default 30 days; since
                        its creation for a younger key), or wildcards broader than what was
                        needed; the narrower set is suggested
expiring_soon  low      it expires within ``expiring_within`` (default 7 days)
============== ======== =====================================================================

A check is a function ``(context, record) -> findings`` (:data:`Check`); :class:`Review` runs
its list of checks over the records and the usage check joins the list when a usage source is
given, so another finding type plugs in the same way. The review only reads: it never writes
to the store (the CLI opens it read-only).
"""

from __future__ import annotations

import enum
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from keyguard.abuse.usage import UsageSource
from keyguard.core.clock import Clock, to_iso
from keyguard.core.errors import ConfigurationError
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.core.scopes import ADMIN, DEFAULT_PRIVILEGED, grant_satisfies

__all__ = [
    "DAY",
    "DEFAULT_CHECKS",
    "Check",
    "Review",
    "ReviewContext",
    "ReviewFinding",
    "ReviewPolicy",
    "ReviewReport",
    "Severity",
    "usage_check",
]

DAY: Final = 86400.0


class Severity(enum.IntEnum):
    """How much a finding matters; ``str(severity)`` is its lower-case name."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(str(s) for s in cls)
            raise ConfigurationError(f"unknown severity {text!r} (one of: {names})") from None


@dataclass(frozen=True, slots=True)
class ReviewFinding:
    """One thing to fix about one key."""

    kind: str
    severity: Severity
    key_id: str
    name: str
    owner: str | None
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": str(self.severity),
            "key_id": self.key_id,
            "name": self.name,
            "owner": self.owner,
            "message": self.message,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    """The thresholds, in seconds (``max_descendants`` in keys)."""

    rotate_after: float = 90 * DAY
    expiring_within: float = 7 * DAY
    unused_for: float = 30 * DAY
    max_descendants: int = 10
    usage_window: float = 30 * DAY

    def __post_init__(self) -> None:
        for name in ("rotate_after", "expiring_within", "unused_for", "usage_window"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.max_descendants < 0:
            raise ConfigurationError("max_descendants must be >= 0")

    def to_dict(self) -> dict[str, float | int]:
        return {
            "rotate_after_days": self.rotate_after / DAY,
            "expiring_within_days": self.expiring_within / DAY,
            "unused_for_days": self.unused_for / DAY,
            "max_descendants": self.max_descendants,
            "usage_window_days": self.usage_window / DAY,
        }


@dataclass(frozen=True, slots=True)
class ReviewContext:
    """What every check may consult besides the record itself."""

    now: float
    policy: ReviewPolicy
    descendants: Mapping[str, int]  # active keys descending from each key id
    usage: UsageSource | None = None
    privileged: frozenset[str] = DEFAULT_PRIVILEGED


Check = Callable[[ReviewContext, KeyRecord], Iterable[ReviewFinding]]


def _days(seconds: float) -> str:
    days = seconds / DAY
    return f"{days:.0f} day{'s' if round(days) != 1 else ''}" if days >= 1 else "less than a day"


def _finding(
    record: KeyRecord, kind: str, severity: Severity, message: str, **details: Any
) -> ReviewFinding:
    return ReviewFinding(kind, severity, record.key_id, record.name, record.owner, message, details)


# -- the checks ---------------------------------------------------------------------------------
def admin_check(ctx: ReviewContext, record: KeyRecord) -> Iterable[ReviewFinding]:
    if ADMIN in record.scopes:
        yield _finding(
            record,
            "admin_scope",
            Severity.HIGH,
            "holds admin (every scope, key management included): grant only the scopes it uses",
        )


def rotation_check(ctx: ReviewContext, record: KeyRecord) -> Iterable[ReviewFinding]:
    issued = record.rotated_at if record.rotated_at is not None else record.created_at
    age = ctx.now - issued
    if age > ctx.policy.rotate_after:
        yield _finding(
            record,
            "rotation_due",
            Severity.MEDIUM,
            f"secret issued {_days(age)} ago, past the {_days(ctx.policy.rotate_after)} "
            f"rotation policy: rotate it (keyguard keys rotate {record.key_id})",
            issued_at=to_iso(issued),
            age_days=round(age / DAY, 1),
        )


def expiry_check(ctx: ReviewContext, record: KeyRecord) -> Iterable[ReviewFinding]:
    if record.expires_at is None:
        yield _finding(
            record,
            "no_expiry",
            Severity.MEDIUM,
            f"never expires: give it one (keyguard keys expire {record.key_id} --at TIME)",
        )
    elif record.expires_at - ctx.now <= ctx.policy.expiring_within:
        yield _finding(
            record,
            "expiring_soon",
            Severity.LOW,
            f"expires in {_days(record.expires_at - ctx.now)}: rotate or replace it before "
            "its clients break",
            expires_at=to_iso(record.expires_at),
        )


def unused_check(ctx: ReviewContext, record: KeyRecord) -> Iterable[ReviewFinding]:
    limit = ctx.policy.unused_for
    if record.last_used_at is None:
        if ctx.now - record.created_at > limit:
            yield _finding(
                record,
                "unused",
                Severity.MEDIUM,
                f"never used since it was created {_days(ctx.now - record.created_at)} ago: "
                "revoke it if nothing needs it",
                last_used_at=None,
            )
    elif ctx.now - record.last_used_at > limit:
        yield _finding(
            record,
            "unused",
            Severity.MEDIUM,
            f"not used for {_days(ctx.now - record.last_used_at)}: revoke it if nothing needs it",
            last_used_at=to_iso(record.last_used_at),
        )


def descendants_check(ctx: ReviewContext, record: KeyRecord) -> Iterable[ReviewFinding]:
    count = ctx.descendants.get(record.key_id, 0)
    if count > ctx.policy.max_descendants:
        yield _finding(
            record,
            "many_children",
            Severity.MEDIUM,
            f"{count} active keys descend from it (threshold {ctx.policy.max_descendants}): "
            "revoking it would revoke them all; check they are all still needed",
            descendants=count,
        )


def usage_check(ctx: ReviewContext, record: KeyRecord) -> Iterable[ReviewFinding]:
    """Scopes held but not needed by any request in the usage window (needs ``ctx.usage``)."""
    if ctx.usage is None or not record.scopes:
        return
    window = ctx.policy.usage_window
    # A key younger than the window is judged over its whole life: every request it ever
    # made is known, so a scope it never needed is a fact, not a guess (the message says
    # how long that life has been).
    since = max(ctx.now - window, record.created_at)
    used = ctx.usage.scope_usage(record.key_id, since)
    if used is None or not any(used.values()):
        return  # no data for the whole period, or no requests at all (that is "unused")
    needed = sorted(s for s, n in used.items() if n > 0)
    kept = [s for s in needed if any(grant_satisfies(g, s, ctx.privileged) for g in record.scopes)]
    unused: list[str] = []
    broader: list[str] = []
    for grant in sorted(record.scopes):
        covered = [s for s in kept if grant_satisfies(grant, s, ctx.privileged)]
        if not covered:
            unused.append(grant)
        elif covered != [grant]:
            broader.append(grant)  # a wildcard or admin where named scopes would do
    if not unused and not broader:
        return
    parts = []
    if unused:
        parts.append(f"holds {', '.join(unused)} but no request needed it")
    if broader:
        parts.append(f"{', '.join(broader)} is broader than what was needed")
    suggestion = ", ".join(kept) if kept else "no scopes (only authentication was needed)"
    period = (
        f"in the last {_days(window)}"
        if since > record.created_at
        else f"since it was created ({_days(ctx.now - record.created_at)} ago)"
    )
    yield _finding(
        record,
        "unused_scopes",
        Severity.MEDIUM,
        f"{'; '.join(parts)} {period}: narrow it to {suggestion}",
        unused=unused,
        broader=broader,
        used=kept,
        suggested=kept,
        window_days=round((ctx.now - since) / DAY, 1),
    )


DEFAULT_CHECKS: Final[tuple[Check, ...]] = (
    admin_check,
    rotation_check,
    expiry_check,
    unused_check,
    descendants_check,
)


@dataclass(frozen=True, slots=True)
class ReviewReport:
    """The findings (most severe first), and what was reviewed under which policy."""

    generated_at: float
    policy: ReviewPolicy
    keys_reviewed: int
    findings: tuple[ReviewFinding, ...]
    usage_checked: bool

    def count(self, at_least: Severity = Severity.LOW) -> int:
        return sum(1 for f in self.findings if f.severity >= at_least)

    def by_severity(self) -> dict[str, int]:
        return {str(s): sum(1 for f in self.findings if f.severity is s) for s in Severity}

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": to_iso(self.generated_at),
            "policy": self.policy.to_dict(),
            "keys_reviewed": self.keys_reviewed,
            "keys_with_findings": len({f.key_id for f in self.findings}),
            "usage_checked": self.usage_checked,
            "summary": self.by_severity(),
            "findings": [f.to_dict() for f in self.findings],
        }


def _descendant_counts(records: Sequence[KeyRecord], now: float) -> dict[str, int]:
    children: dict[str, list[KeyRecord]] = defaultdict(list)
    for r in records:
        if r.created_by is not None:
            children[r.created_by].append(r)
    counts: dict[str, int] = {}
    for r in records:
        seen = {r.key_id}
        frontier = [r.key_id]
        active = 0
        while frontier:
            for child in children.get(frontier.pop(), ()):
                if child.key_id not in seen:
                    seen.add(child.key_id)
                    frontier.append(child.key_id)
                    active += child.status(now) is KeyStatus.ACTIVE
        counts[r.key_id] = active
    return counts


class Review:
    """Runs checks over key records. ``usage`` adds :func:`usage_check`; ``checks`` replaces
    the default list; ``ignore`` drops finding kinds (e.g. ``{"no_expiry"}``)."""

    def __init__(
        self,
        policy: ReviewPolicy | None = None,
        *,
        usage: UsageSource | None = None,
        checks: Sequence[Check] = DEFAULT_CHECKS,
        ignore: Iterable[str] = (),
        privileged: frozenset[str] = DEFAULT_PRIVILEGED,
        clock: Clock = time.time,
    ) -> None:
        self.policy = policy if policy is not None else ReviewPolicy()
        self.usage = usage
        self.checks: list[Check] = list(checks)
        if usage is not None and usage_check not in self.checks:
            self.checks.append(usage_check)
        self.ignore = frozenset(ignore)
        self.privileged = privileged
        self._clock = clock

    def run(self, records: Iterable[KeyRecord]) -> ReviewReport:
        """Review every active key among ``records`` (which should be all of a store's keys,
        so descendants are counted right)."""
        now = self._clock()
        everything = list(records)
        ctx = ReviewContext(
            now=now,
            policy=self.policy,
            descendants=_descendant_counts(everything, now),
            usage=self.usage,
            privileged=self.privileged,
        )
        active = [r for r in everything if r.status(now) is KeyStatus.ACTIVE]
        findings = [
            f
            for r in active
            for check in self.checks
            for f in check(ctx, r)
            if f.kind not in self.ignore
        ]
        findings.sort(key=lambda f: (-f.severity, f.kind, f.name, f.key_id))
        return ReviewReport(
            generated_at=now,
            policy=self.policy,
            keys_reviewed=len(active),
            findings=tuple(findings),
            usage_checked=self.usage is not None,
        )
