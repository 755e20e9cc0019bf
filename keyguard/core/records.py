"""The stored shapes: an API key (:class:`KeyRecord`), an audit entry (:class:`AuditEvent`) and
a remembered idempotent request (:class:`IdempotencyEntry`).

Records never hold a key, only its tagged digest. They are immutable values: every lifecycle
change produces a new record with ``version`` incremented, which stores use for optimistic
concurrency. Times are epoch seconds (UTC) as floats, cheap to compare on the request path.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from keyguard.core.clock import to_iso


class KeyStatus(enum.StrEnum):
    """Lifecycle state of a key at a given moment."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as a store keeps it.

    ``rate_limit`` is an optional per-key override of the rate-limit windows, written as in
    :func:`keyguard.core.ratelimit.parse_windows` (for example ``"50/10s, 1000/minute"``).
    ``previous_digest`` stays valid until ``previous_expires_at`` after a rotation.
    ``suspended_at`` (with ``suspended_reason``) marks a reversibly disabled key: refused with
    ``suspended_api_key`` until resumed. ``allowed_networks`` restricts where the key may be
    used from: canonical CIDRs (:func:`keyguard.core.networks.parse_networks`); empty means
    anywhere.
    """

    key_id: str
    name: str
    digest: str
    scopes: frozenset[str] = frozenset()
    description: str | None = None
    owner: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    revoked_reason: str | None = None
    created_by: str | None = None
    rate_limit: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    last_used_at: float | None = None
    previous_digest: str | None = None
    previous_expires_at: float | None = None
    rotated_at: float | None = None
    suspended_at: float | None = None
    suspended_reason: str | None = None
    allowed_networks: tuple[str, ...] = ()
    prefix: str = "kg"
    version: int = 1

    def status(self, now: float) -> KeyStatus:
        """Revoked wins over expired, expired over suspended: a revoked key stays revoked
        whatever its expiry, and resuming an expired key does not bring it back."""
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return KeyStatus.EXPIRED
        if self.suspended_at is not None:
            return KeyStatus.SUSPENDED
        return KeyStatus.ACTIVE

    def evolve(self, **changes: Any) -> KeyRecord:
        """A copy with ``changes`` applied and the version bumped."""
        return replace(self, version=self.version + 1, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field, digests included (for stores)."""
        d = asdict(self)
        d["scopes"] = sorted(self.scopes)
        d["metadata"] = dict(self.metadata)
        d["allowed_networks"] = list(self.allowed_networks)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KeyRecord:
        """Inverse of :meth:`to_dict`; unknown fields are ignored for forward compatibility."""
        known = {f: d[f] for f in cls.__dataclass_fields__ if f in d}
        known["scopes"] = frozenset(known.get("scopes") or ())
        known["metadata"] = dict(known.get("metadata") or {})
        known["allowed_networks"] = tuple(known.get("allowed_networks") or ())
        return cls(**known)

    def public_dict(self, now: float) -> dict[str, Any]:
        """What may be shown to an operator: no digests, times as ISO-8601 strings."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "description": self.description,
            "status": self.status(now).value,
            "scopes": sorted(self.scopes),
            "owner": self.owner,
            "created_at": to_iso(self.created_at),
            "expires_at": to_iso(self.expires_at),
            "revoked_at": to_iso(self.revoked_at),
            "revoked_reason": self.revoked_reason,
            "created_by": self.created_by,
            "rate_limit": self.rate_limit,
            "metadata": dict(self.metadata),
            "last_used_at": to_iso(self.last_used_at),
            "rotated_at": to_iso(self.rotated_at),
            "rotation_grace_until": to_iso(self.previous_expires_at),
            "suspended_at": to_iso(self.suspended_at),
            "suspended_reason": self.suspended_reason,
            "allowed_networks": list(self.allowed_networks),
            "prefix": self.prefix,
        }

    def __repr__(self) -> str:
        # Digests are not secrets, but they have no business in logs either.
        return (
            f"KeyRecord(key_id={self.key_id!r}, name={self.name!r}, owner={self.owner!r}, "
            f"scopes={sorted(self.scopes)!r}, version={self.version})"
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited mutation: who did what to which key, when."""

    at: float
    action: str
    key_id: str
    actor: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "time": to_iso(self.at),
            "action": self.action,
            "key_id": self.key_id,
            "actor": self.actor,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class IdempotencyEntry:
    """A request that created or rotated ``key_id`` under an idempotency key, remembered until
    ``expires_at`` so a retry of it is answered instead of run again.

    Stores write it in the same transaction as the change it records (see
    :meth:`keyguard.core.store.KeyStore.create`), so a change and its entry exist together or
    not at all. ``token`` names the idempotency key (a digest of who asked, which operation,
    and the client's ``Idempotency-Key``); ``fingerprint`` is a digest of what was asked, so
    the same idempotency key sent with another request is recognised as a client error.
    ``outcome`` is what a retry is told — never a plaintext key or anything secret.
    """

    key_id: str
    token: str
    fingerprint: str
    at: float
    expires_at: float
    outcome: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "token": self.token,
            "fingerprint": self.fingerprint,
            "at": self.at,
            "expires_at": self.expires_at,
            "outcome": dict(self.outcome),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IdempotencyEntry:
        return cls(
            key_id=str(d["key_id"]),
            token=str(d["token"]),
            fingerprint=str(d["fingerprint"]),
            at=float(d["at"]),
            expires_at=float(d["expires_at"]),
            outcome=dict(d.get("outcome") or {}),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; pass ``next_cursor`` back to get the next page."""

    items: tuple[KeyRecord, ...]
    next_cursor: str | None = None


def dumps_metadata(metadata: Mapping[str, Any]) -> str:
    """Canonical JSON for metadata (sorted keys), refusing what JSON cannot represent."""
    return json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"), allow_nan=False)
