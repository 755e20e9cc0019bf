"""Is a leaked string really one of our keys, and revoking it if so.

A key found by a scan, or reported by a secret scanner, is acted on only when its **whole
secret** matches the digest the store holds: a key id is public (listings, logs), and anyone
can compute a checksum, so an id with a made-up secret must not let anyone revoke someone
else's key. :func:`match_secret` does the same work whether the id is known or not (two digest
comparisons, against a dummy digest for an unknown id), so its timing does not tell which ids
exist either.

:func:`revoke_found` is ``keyguard scan --revoke``: each distinct key found is checked and,
when it is live, revoked with the reason ``found by keyguard scan at <location>``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.clock import Clock
from keyguard.core.errors import KeyguardError
from keyguard.core.hashing import Hasher
from keyguard.core.keys import ParsedKey
from keyguard.core.records import KeyRecord

if TYPE_CHECKING:
    from keyguard.abuse.findings import Finding
    from keyguard.management.manager import KeyManager

__all__ = [
    "Outcome",
    "RevocationResult",
    "SecretMatch",
    "clean_text",
    "match_secret",
    "revoke_found",
]

#: Audit reasons are at most this long (the manager's limit is 500).
_MAX_REASON: Final = 480


class SecretMatch(enum.Enum):
    """How a presented secret relates to a key record."""

    NONE = "none"  # unknown id, or a secret that is not the key's
    CURRENT = "current"  # the key's current secret
    PREVIOUS = "previous"  # the secret it was rotated from, still inside its grace period
    ROTATED_OUT = "rotated_out"  # the previous secret, whose grace period is over (dead)

    @property
    def live(self) -> bool:
        """Whether the secret still authenticates (barring revocation or expiry)."""
        return self in (SecretMatch.CURRENT, SecretMatch.PREVIOUS)


def match_secret(
    hasher: Hasher, record: KeyRecord | None, plaintext: str, now: float
) -> SecretMatch:
    """Compare ``plaintext`` with the record's current and previous digests, always both
    (against dummies when there is no record or no previous digest): constant work."""
    current = record.digest if record is not None else hasher.dummy_digest
    previous = record.previous_digest if record is not None else None
    is_current = hasher.verify(plaintext, current)
    is_previous = hasher.verify(plaintext, previous or hasher.dummy_digest)
    if record is None:
        return SecretMatch.NONE
    if is_current:
        return SecretMatch.CURRENT
    if is_previous and previous is not None:
        until = record.previous_expires_at
        return (
            SecretMatch.PREVIOUS if until is not None and now < until else SecretMatch.ROTATED_OUT
        )
    return SecretMatch.NONE


def clean_text(text: str, limit: int = _MAX_REASON) -> str:
    """``text`` made safe for an audit reason: printable, one line, at most ``limit`` long."""
    flat = "".join(ch if ch.isprintable() else "?" for ch in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Outcome(enum.StrEnum):
    """What ``--revoke`` did with one key."""

    REVOKED = "revoked"
    ALREADY_REVOKED = "already_revoked"
    UNKNOWN = "unknown"  # no key with this id in the store
    NOT_MATCHING = "not_matching"  # the id exists, the secret is not its secret
    ROTATED_OUT = "rotated_out"  # an old secret of the key, no longer accepted: nothing to do
    FAILED = "failed"


_EXPLAINED: Final = {
    Outcome.REVOKED: "revoked",
    Outcome.ALREADY_REVOKED: "already revoked",
    Outcome.UNKNOWN: "unknown to this store (another deployment's key?)",
    Outcome.NOT_MATCHING: "the secret is not this key's: not revoked",
    Outcome.ROTATED_OUT: "an old secret, rotated out and no longer accepted: nothing to revoke",
    Outcome.FAILED: "could not be revoked",
}


@dataclass(frozen=True, slots=True)
class RevocationResult:
    """One distinct key found, and what revoking it did."""

    key_id: str
    masked: str
    location: str
    outcome: Outcome
    revoked: tuple[str, ...] = ()  # the key and any keys it created (cascade)
    error: str | None = field(default=None)

    def explain(self) -> str:
        text = _EXPLAINED[self.outcome]
        if self.outcome is Outcome.REVOKED and len(self.revoked) > 1:
            text += f", with {len(self.revoked) - 1} key(s) it created"
        if self.error:
            text += f": {self.error}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "masked": self.masked,
            "location": self.location,
            "result": self.outcome.value,
            "revoked": list(self.revoked),
            "error": self.error,
        }


def _distinct(findings: Iterable[Finding]) -> list[tuple[ParsedKey, Finding]]:
    seen: dict[str, tuple[ParsedKey, Finding]] = {}
    for f in findings:
        seen.setdefault(f.key.full, (f.key, f))
    return list(seen.values())


def revoke_found(
    manager: KeyManager,
    findings: Iterable[Finding],
    *,
    actor: str,
    clock: Clock = time.time,
) -> list[RevocationResult]:
    """Revoke every live key among ``findings`` (each distinct key once, at its first
    location). Keys not in the store are reported as unknown, not as errors."""
    results: list[RevocationResult] = []
    for key, where in _distinct(findings):
        masked, location = where.masked, where.location
        try:
            record = manager.store.get(key.key_id)
            match = match_secret(manager.hasher, record, key.full, clock())
            if record is None:
                outcome = Outcome.UNKNOWN
            elif match is SecretMatch.NONE:
                outcome = Outcome.NOT_MATCHING
            elif match is SecretMatch.ROTATED_OUT:
                outcome = Outcome.ROTATED_OUT
            elif record.revoked_at is not None:
                outcome = Outcome.ALREADY_REVOKED
            else:
                revoked = manager.revoke(
                    key.key_id,
                    reason=clean_text(f"found by keyguard scan at {location}"),
                    actor=actor,
                )
                results.append(
                    RevocationResult(key.key_id, masked, location, Outcome.REVOKED, tuple(revoked))
                )
                continue
        except KeyguardError as exc:
            results.append(
                RevocationResult(key.key_id, masked, location, Outcome.FAILED, error=str(exc))
            )
            continue
        results.append(RevocationResult(key.key_id, masked, location, outcome))
    return results
