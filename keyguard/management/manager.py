"""The key-lifecycle service: create, list, show, update, revoke, rotate and expire API keys.

:class:`KeyManager` is the one place where lifecycle rules live, so the CLI, the HTTP
management API and application code all enforce the same ones: inputs are validated against
the scope catalog and the rate-limit grammar; a maximum-lifetime policy bounds how long any
secret may live; a key acting as ``parent`` (a key creating or changing keys) can never hand
out more than it holds (scopes, expiry, rate limits, owner); revocation is one-way and
cascades to every key the revoked key created; rotation issues a new secret under the same
key id and keeps the old one valid for a bounded grace period. Every mutation appends an
:class:`~keyguard.core.records.AuditEvent`. The plaintext of a key exists only in the
:class:`CreatedKey` returned by :meth:`KeyManager.create` and :meth:`KeyManager.rotate`; the
store receives its digest, and audit events, logs, reprs and exceptions never see either.
"""

from __future__ import annotations

import builtins
import enum
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from keyguard.core.clock import Clock, to_iso
from keyguard.core.decision import Principal
from keyguard.core.errors import (
    ConfigurationError,
    ConflictError,
    InvalidOperation,
    KeyExists,
    KeyNotFound,
    PermissionDenied,
)
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat, is_key_id
from keyguard.core.ratelimit import DEFAULT_WINDOWS, Window, format_windows, parse_windows
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus, Page, dumps_metadata
from keyguard.core.scopes import MANAGE_SCOPE, ScopeCatalog
from keyguard.stores import from_url
from keyguard.stores.base import MAX_PAGE_SIZE, KeyStore

if TYPE_CHECKING:
    from keyguard.core.decision import Decision
    from keyguard.core.verifier import Verifier

__all__ = [
    "DEFAULT_EXPIRING_SOON",
    "DEFAULT_GRACE",
    "MAX_GRACE",
    "UNSET",
    "CreatedKey",
    "KeyManager",
]

logger = logging.getLogger("keyguard.management")

T = TypeVar("T")

DEFAULT_GRACE: Final = 24 * 3600.0
MAX_GRACE: Final = 30 * 86400.0
DEFAULT_EXPIRING_SOON: Final = 7 * 86400.0
MAX_NAME_LENGTH: Final = 200
MAX_OWNER_LENGTH: Final = 200
MAX_ACTOR_LENGTH: Final = 200
MAX_REASON_LENGTH: Final = 500
MAX_METADATA_BYTES: Final = 16 * 1024
#: 9999-12-31T23:59:59Z: later times cannot be rendered as ISO-8601 by ``datetime``.
MAX_TIMESTAMP: Final = 253_402_300_799.0

_CREATE_ATTEMPTS: Final = 5
_UPDATE_ATTEMPTS: Final = 5


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Leave this field alone" for :meth:`KeyManager.update` fields where ``None`` means "clear".
UNSET: Final = _Unset.UNSET

Timestamp = float | int | datetime
Duration = float | int | timedelta
Parent = KeyRecord | Principal


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created or rotated: its record, and the plaintext, shown this once.

    ``repr``/``str`` never show the plaintext, so a stray ``print`` or log line cannot leak it.
    """

    record: KeyRecord
    plaintext: str

    @property
    def key_id(self) -> str:
        return self.record.key_id

    def __repr__(self) -> str:
        return f"CreatedKey(record={self.record!r}, plaintext=<redacted>)"

    __str__ = __repr__


# -- input validation (pure) -----------------------------------------------------------------
def _text(value: object, what: str, max_length: int) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError(f"{what} must not be empty")
    if len(value) > max_length:
        raise ConfigurationError(f"{what} is longer than {max_length} characters")
    if not value.isprintable():
        raise ConfigurationError(f"{what} must not contain control characters or line breaks")
    return value


def _owner(value: object) -> str | None:
    return None if value is None else _text(value, "owner", MAX_OWNER_LENGTH)


def _timestamp(value: object, what: str) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                f"{what} must be a timezone-aware datetime (naive times are ambiguous)"
            )
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be epoch seconds or an aware datetime, not {type(value).__name__}"
        )
    ts = float(value)
    if not math.isfinite(ts) or not 0 <= ts <= MAX_TIMESTAMP:
        raise ConfigurationError(f"{what} is out of range")
    return ts


def _seconds(value: object, what: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{what} must be seconds or a timedelta, not {type(value).__name__}"
        )
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ConfigurationError(f"{what} must be finite")
    return seconds


def _metadata(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, not {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise ConfigurationError("metadata keys must be strings")
    try:
        encoded = dumps_metadata(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(f"metadata must be JSON-serialisable: {exc}") from None
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ConfigurationError(f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB")
    # Store a deep copy decoupled from the caller's (possibly mutable) objects.
    result: dict[str, Any] = json.loads(encoded)
    return result


def _rate_limit(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"rate_limit must be a string, not {type(value).__name__}")
    return format_windows(parse_windows(value))


def _reason(value: object) -> str:
    return _text(value, "reason", MAX_REASON_LENGTH)


def _bound(windows: Iterable[Window], period: float) -> float:
    """The most requests ``windows`` can admit in any interval of length ``period``.

    A window of ``limit`` per ``p`` admits at most ``limit * ceil(period / p)`` requests in an
    interval of length ``period`` (the interval is covered by that many windows), and every
    window applies at once, so the tightest one wins.
    """
    best = math.inf
    for w in windows:
        best = min(best, w.limit * math.ceil(period / w.period - 1e-9))
    return best


def _no_looser(child: Iterable[Window], parent: Iterable[Window]) -> bool:
    """Whether the ``child`` windows admit no more than the ``parent`` windows, at every
    period the parent limits."""
    child = tuple(child)
    return all(_bound(child, p.period) <= p.limit for p in parent)


class KeyManager:
    """Key lifecycle operations over one store. Thread-safe as far as the store is.

    Security-relevant keyword arguments:

    * ``catalog`` — the scopes keys may hold (default: the platform's 14 plus ``keys:manage``);
      unknown scopes are refused so a typo cannot mint a key nobody can reason about.
    * ``max_lifetime`` — the longest a secret may live, in seconds, counted from its issue
      (creation or last rotation). Keys cannot be created or extended beyond it, and without an
      explicit expiry they get ``default_lifetime`` (or ``max_lifetime``). Forces rotation.
    * ``manage_scope`` — the scope (besides ``admin``) a key needs to act on other keys.
    * ``default_rate_limit`` — the deployment's default windows (default: DESIGN.md's 20/10s,
      100/minute, 5000/day). A key without an override is held to them, so a child key's
      override may not be looser than them when its parent has no override of its own.
    * ``hasher`` — the digest algorithm; must match the one the verifiers use.

    ``store`` is a :class:`~keyguard.stores.base.KeyStore` or a store URL; a store opened from a
    URL is owned (and closed) by the manager. The manager is a context manager.
    """

    def __init__(
        self,
        store: KeyStore | str,
        *,
        catalog: ScopeCatalog | None = None,
        key_format: KeyFormat = DEFAULT_FORMAT,
        hasher: Hasher | None = None,
        max_lifetime: float | None = None,
        default_lifetime: float | None = None,
        expiring_soon: float = DEFAULT_EXPIRING_SOON,
        manage_scope: str = MANAGE_SCOPE,
        default_rate_limit: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        for what, value in (("max_lifetime", max_lifetime), ("default_lifetime", default_lifetime)):
            if value is not None and (_seconds(value, what) <= 0):
                raise ConfigurationError(f"{what} must be positive")
        if (
            max_lifetime is not None
            and default_lifetime is not None
            and default_lifetime > max_lifetime
        ):
            raise ConfigurationError("default_lifetime must not exceed max_lifetime")
        if _seconds(expiring_soon, "expiring_soon") < 0:
            raise ConfigurationError("expiring_soon must be >= 0")
        if catalog is None:
            catalog = ScopeCatalog.platform(manage_scope=manage_scope)
        self._owns_store = isinstance(store, str)
        self.store: KeyStore = from_url(store) if isinstance(store, str) else store
        self.catalog = catalog
        self.key_format = key_format
        self.hasher = hasher if hasher is not None else Hasher()
        self.max_lifetime = None if max_lifetime is None else float(max_lifetime)
        self.default_lifetime = (
            float(default_lifetime) if default_lifetime is not None else self.max_lifetime
        )
        self.expiring_soon = float(expiring_soon)
        self.manage_scope = manage_scope
        self._default_windows = (
            parse_windows(default_rate_limit) if default_rate_limit is not None else DEFAULT_WINDOWS
        )
        self._clock = clock
        self._verifier: Verifier | None = None

    # -- resources -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the store if the manager opened it from a URL."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> KeyManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyManager(store={self.store!r}, max_lifetime={self.max_lifetime})"

    # -- reading -------------------------------------------------------------------------------
    def get(self, key_id: str) -> KeyRecord:
        """The record of ``key_id``; :class:`~keyguard.core.errors.KeyNotFound` if none."""
        record = self.store.get(key_id) if isinstance(key_id, str) and is_key_id(key_id) else None
        if record is None:
            shown = key_id if isinstance(key_id, str) and len(key_id) <= 40 else "<invalid id>"
            raise KeyNotFound(f"no key with id {shown!r}")
        return record

    def list(
        self,
        *,
        owner: str | None = None,
        status: KeyStatus | str | None = None,
        created_by: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """One page of records (no secrets), oldest first; pass ``next_cursor`` back for more."""
        return self.store.list(
            owner=owner,
            status=self._status(status),
            created_by=created_by,
            now=self._clock(),
            limit=limit,
            cursor=cursor,
        )

    def iter_all(
        self,
        *,
        owner: str | None = None,
        status: KeyStatus | str | None = None,
        created_by: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[KeyRecord]:
        """Every matching record, fetched page by page."""
        cursor: str | None = None
        while True:
            page = self.list(
                owner=owner, status=status, created_by=created_by, limit=page_size, cursor=cursor
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def expiring(self, within: float | timedelta | None = None) -> builtins.list[KeyRecord]:
        """Active keys that expire within ``within`` seconds (default ``expiring_soon``),
        soonest first: the "expiring soon" signal."""
        window = self.expiring_soon if within is None else _seconds(within, "within")
        if window < 0:
            raise ConfigurationError("within must be >= 0")
        horizon = self._clock() + window
        found = [
            r
            for r in self.iter_all(status=KeyStatus.ACTIVE)
            if r.expires_at is not None and r.expires_at <= horizon
        ]
        return sorted(found, key=lambda r: (r.expires_at or 0.0, r.key_id))

    def audit(self, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        """Audit events, newest first, optionally for one key."""
        return self.store.audit(key_id=key_id, limit=limit)

    def verify(self, plaintext: str) -> Decision:
        """Authenticate a plaintext key exactly as a protected request would (no cache)."""
        verifier = self._verifier
        if verifier is None:
            # Imported here: the verifier pulls in the route-policy machinery that key
            # management does not otherwise need.
            from keyguard.core.verifier import Verifier

            verifier = self._verifier = Verifier(
                self.store,
                catalog=self.catalog,
                key_format=self.key_format,
                hasher=self.hasher,
                cache_ttl=0,
                negative_cache_ttl=0,
                clock=self._clock,
            )
        return verifier.authenticate(f"UserKey {plaintext}")

    # -- create --------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        scopes: Iterable[str] = (),
        *,
        owner: str | None = None,
        expires_at: Timestamp | None = None,
        expires_in: Duration | None = None,
        rate_limit: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> CreatedKey:
        """Create a key and return it with its plaintext (the only time it is available).

        With ``parent`` (the key making this request), the new key may not exceed it: the
        parent must be active and hold ``admin`` or the management scope; the child's scopes
        must be covered by the parent's, its expiry may not be later (it defaults to the
        parent's), its rate limits may not be looser (they default to the parent's override),
        and it belongs to the parent's owner. ``created_by`` records the parent, which is what
        revocation cascades along. ``actor`` defaults to ``"key:<parent id>"`` or ``"system"``.
        """
        now = self._clock()
        parent_rec = self._acting(parent, now)
        actor = self._actor(actor, parent_rec)
        name = _text(name, "name", MAX_NAME_LENGTH)
        granted = self.catalog.validate(scopes)
        owner = _owner(owner)
        expiry = self._requested_expiry(expires_at, expires_in, now)
        limit = _rate_limit(rate_limit)
        meta = _metadata(metadata) if metadata is not None else {}

        if expiry is None:
            # The default: the earliest of the default lifetime and the parent's own expiry.
            defaults = [
                t
                for t in (
                    None
                    if self.default_lifetime is None
                    else min(now + self.default_lifetime, MAX_TIMESTAMP),
                    None if parent_rec is None else parent_rec.expires_at,
                )
                if t is not None
            ]
            expiry = min(defaults, default=None)
        if parent_rec is not None:
            if owner is None:
                owner = parent_rec.owner
            if limit is None:
                limit = parent_rec.rate_limit
            self._check_owner(parent_rec, owner)
            self._check_scopes(parent_rec, granted)
            self._check_expiry(parent_rec, expiry)
            self._check_rate_limit(parent_rec, limit)
        self._check_lifetime(expiry, issued_at=now)

        for attempt in range(_CREATE_ATTEMPTS):
            generated = self.key_format.generate()
            record = KeyRecord(
                key_id=generated.key_id,
                name=name,
                digest=self.hasher.digest(generated.plaintext),
                scopes=granted,
                owner=owner,
                created_at=now,
                expires_at=expiry,
                created_by=parent_rec.key_id if parent_rec is not None else None,
                rate_limit=limit,
                metadata=meta,
                prefix=self.key_format.prefix,
            )
            try:
                self.store.create(record)
            except KeyExists:
                # 62**12 ids make this all but impossible; a retry costs nothing.
                logger.warning("key id collision on create (attempt %d); retrying", attempt + 1)
                continue
            self._audit(
                "create",
                record,
                actor,
                now,
                name=name,
                scopes=sorted(granted),
                owner=owner,
                expires_at=to_iso(expiry),
                rate_limit=limit,
                created_by=record.created_by,
                metadata_keys=sorted(meta),
            )
            return CreatedKey(record, generated.plaintext)
        raise KeyExists(f"could not allocate a fresh key id in {_CREATE_ATTEMPTS} attempts")

    # -- update --------------------------------------------------------------------------------
    def update(
        self,
        key_id: str,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        scopes: Iterable[str] | None = None,
        rate_limit: str | _Unset | None = UNSET,
        expires_at: Timestamp | _Unset | None = UNSET,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> KeyRecord:
        """Change a key's name, metadata, scopes, rate limit or expiry.

        ``rate_limit=None`` removes the override and ``expires_at=None`` removes the expiry;
        leave them out to keep the current values. Narrowing a field is always allowed; with
        a ``parent``, widening one is subject to the same no-escalation rules as
        :meth:`create`. Revoked keys cannot be changed. Concurrent writers are handled by
        re-reading and re-applying (optimistic concurrency).
        """
        now = self._clock()
        parent_rec = self._acting(parent, now)
        actor = self._actor(actor, parent_rec)
        new_name = None if name is None else _text(name, "name", MAX_NAME_LENGTH)
        new_meta = None if metadata is None else _metadata(metadata)
        new_scopes = None if scopes is None else self.catalog.validate(scopes)
        new_limit = rate_limit if isinstance(rate_limit, _Unset) else _rate_limit(rate_limit)
        new_expiry: float | _Unset | None = None if expires_at is None else UNSET
        if expires_at is not None and not isinstance(expires_at, _Unset):
            new_expiry = _timestamp(expires_at, "expires_at")
            if new_expiry <= now:
                raise ConfigurationError(
                    "expires_at must be in the future (use expire() to end a key now)"
                )

        def apply(current: KeyRecord) -> tuple[KeyRecord, dict[str, Any]] | None:
            if current.revoked_at is not None:
                raise InvalidOperation(f"key {current.key_id} is revoked and cannot be changed")
            if parent_rec is not None:
                self._check_owner(parent_rec, current.owner)
            changes: dict[str, Any] = {}
            if new_name is not None and new_name != current.name:
                changes["name"] = new_name
            if new_meta is not None and new_meta != dict(current.metadata):
                changes["metadata"] = new_meta
            if new_scopes is not None and new_scopes != current.scopes:
                if parent_rec is not None:
                    # Scopes the key holds already may stay; only additions need the parent.
                    added = frozenset(
                        s for s in new_scopes if not self.catalog.covers(current.scopes, {s})
                    )
                    self._check_scopes(parent_rec, added)
                changes["scopes"] = new_scopes
            if not isinstance(new_limit, _Unset) and new_limit != current.rate_limit:
                if parent_rec is not None and not self._limit_no_looser(
                    new_limit, current.rate_limit
                ):
                    self._check_rate_limit(parent_rec, new_limit)
                changes["rate_limit"] = new_limit
            if not isinstance(new_expiry, _Unset) and new_expiry != current.expires_at:
                later = current.expires_at is not None and (
                    new_expiry is None or new_expiry > current.expires_at
                )
                if later:
                    self._check_lifetime(new_expiry, issued_at=_issued(current))
                if later and parent_rec is not None:
                    self._check_expiry(parent_rec, new_expiry)
                changes["expires_at"] = new_expiry
            if not changes:
                return None
            details = {k: _shown(k, v) for k, v in changes.items()}
            return current.evolve(**changes), details

        return self._mutate(key_id, apply, "update", actor, now)[0]

    # -- revoke --------------------------------------------------------------------------------
    def revoke(
        self,
        key_id: str,
        *,
        reason: str,
        actor: str | None = None,
        cascade: bool = True,
        parent: Parent | None = None,
    ) -> builtins.list[str]:
        """Revoke a key for good, and (``cascade``) every key it created, transitively.

        Returns the ids revoked by this call, the key itself first. Revocation is one-way and
        idempotent: revoking a revoked key changes nothing and raises nothing; with
        ``cascade`` it still revokes any descendants that are not revoked yet (so a revocation
        made with ``cascade=False`` can be extended later).
        """
        now = self._clock()
        parent_rec = self._acting(parent, now)
        actor = self._actor(actor, parent_rec)
        reason = _reason(reason)
        root = self.get(key_id)
        if parent_rec is not None:
            self._check_owner(parent_rec, root.owner)
        revoked: builtins.list[str] = []
        if self._revoke_one(root.key_id, reason, actor, now, cascade_from=None):
            revoked.append(root.key_id)
        if cascade:
            seen = {root.key_id}
            frontier = [root.key_id]
            while frontier:
                creator = frontier.pop(0)
                for child in self.iter_all(created_by=creator):
                    if child.key_id in seen:
                        continue
                    seen.add(child.key_id)
                    frontier.append(child.key_id)
                    if self._revoke_one(child.key_id, reason, actor, now, cascade_from=root.key_id):
                        revoked.append(child.key_id)
        if revoked:
            logger.info("revoked %d key(s) starting at %s (actor %s)", len(revoked), key_id, actor)
        return revoked

    def _revoke_one(
        self, key_id: str, reason: str, actor: str, now: float, *, cascade_from: str | None
    ) -> bool:
        def apply(current: KeyRecord) -> tuple[KeyRecord, dict[str, Any]] | None:
            if current.revoked_at is not None:
                return None
            # Drop the rotation grace too: nothing about a revoked key should verify.
            record = current.evolve(
                revoked_at=now,
                revoked_reason=reason,
                previous_digest=None,
                previous_expires_at=None,
            )
            details: dict[str, Any] = {"reason": reason}
            if cascade_from is not None:
                details["cascade_from"] = cascade_from
            return record, details

        return self._mutate(key_id, apply, "revoke", actor, now)[1]

    # -- rotate --------------------------------------------------------------------------------
    def rotate(
        self,
        key_id: str,
        *,
        grace: Duration = DEFAULT_GRACE,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> CreatedKey:
        """Issue a new secret for the same key id and return it (shown this once).

        The old secret keeps working until ``now + grace`` (``grace=0`` ends it immediately;
        at most 30 days). Only one previous secret is kept: rotating again within the grace
        period gives the grace to the secret being replaced, and the one before it stops
        working at once. Revoked and expired keys cannot be rotated. The key's expiry is
        unchanged; under a ``max_lifetime`` policy use :meth:`update` to extend it afterwards.
        """
        now = self._clock()
        parent_rec = self._acting(parent, now)
        actor = self._actor(actor, parent_rec)
        grace_s = _seconds(grace, "grace")
        if not 0 <= grace_s <= MAX_GRACE:
            raise ConfigurationError(f"grace must be between 0 and {int(MAX_GRACE // 86400)} days")
        generated = self.key_format.generate(self.get(key_id).key_id)
        digest = self.hasher.digest(generated.plaintext)

        def apply(current: KeyRecord) -> tuple[KeyRecord, dict[str, Any]] | None:
            status = current.status(now)
            if status is not KeyStatus.ACTIVE:
                raise InvalidOperation(f"key {current.key_id} is {status.value}; cannot rotate")
            if parent_rec is not None:
                self._check_owner(parent_rec, current.owner)
            keep = grace_s > 0
            record = current.evolve(
                digest=digest,
                previous_digest=current.digest if keep else None,
                previous_expires_at=now + grace_s if keep else None,
                rotated_at=now,
                prefix=self.key_format.prefix,
            )
            return record, {
                "grace_seconds": grace_s,
                "previous_valid_until": to_iso(now + grace_s) if keep else None,
            }

        record = self._mutate(key_id, apply, "rotate", actor, now)[0]
        return CreatedKey(record, generated.plaintext)

    # -- expire --------------------------------------------------------------------------------
    def expire(
        self,
        key_id: str,
        *,
        at: Timestamp | None = None,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> KeyRecord:
        """Make a key expire now (or at ``at``), never later than it already would.

        ``at`` may bring an expiry forward or set one on a key that had none (within
        ``max_lifetime``); pushing it later is an extension: use :meth:`update`. Expiring an
        already-expired key is a no-op; revoked keys cannot be changed.
        """
        now = self._clock()
        parent_rec = self._acting(parent, now)
        actor = self._actor(actor, parent_rec)
        when = now if at is None else _timestamp(at, "at")

        def apply(current: KeyRecord) -> tuple[KeyRecord, dict[str, Any]] | None:
            if current.revoked_at is not None:
                raise InvalidOperation(f"key {current.key_id} is revoked and cannot be changed")
            if parent_rec is not None:
                self._check_owner(parent_rec, current.owner)
            if current.expires_at is not None:
                if current.expires_at <= now:
                    return None  # expired already: nothing to do
                if when > current.expires_at:
                    raise InvalidOperation(
                        f"key {current.key_id} expires at {to_iso(current.expires_at)} already; "
                        "expire() never postpones an expiry (use update() to extend it)"
                    )
            else:
                self._check_lifetime(when, issued_at=_issued(current))
            record = current.evolve(expires_at=when)
            return record, {"expires_at": to_iso(when)}

        return self._mutate(key_id, apply, "expire", actor, now)[0]

    # -- machinery -----------------------------------------------------------------------------
    def _mutate(
        self,
        key_id: str,
        apply: Callable[[KeyRecord], tuple[KeyRecord, dict[str, Any]] | None],
        action: str,
        actor: str,
        now: float,
    ) -> tuple[KeyRecord, bool]:
        """Read, apply, write with a version check; on a conflict, re-read and re-apply.

        ``apply`` returns ``None`` for "nothing to change" (no write, no audit event). Returns
        the record as stored and whether this call changed it.
        """
        for _ in range(_UPDATE_ATTEMPTS):
            current = self.get(key_id)
            changed = apply(current)
            if changed is None:
                return current, False
            record, details = changed
            try:
                self.store.update(record)
            except ConflictError:
                logger.info("concurrent update of %s; retrying %s", key_id, action)
                continue
            self._audit(action, record, actor, now, **details)
            return record, True
        raise ConflictError(
            f"key {key_id} kept changing concurrently; gave up after {_UPDATE_ATTEMPTS} attempts"
        )

    def _audit(
        self, action: str, record: KeyRecord, actor: str, now: float, **details: Any
    ) -> None:
        self.store.add_audit(
            AuditEvent(at=now, action=action, key_id=record.key_id, actor=actor, details=details)
        )
        logger.info("key %s: %s by %s", record.key_id, action, actor)

    def _status(self, status: KeyStatus | str | None) -> KeyStatus | None:
        if status is None or isinstance(status, KeyStatus):
            return status
        try:
            return KeyStatus(status)
        except ValueError:
            allowed = ", ".join(s.value for s in KeyStatus)
            raise ConfigurationError(
                f"unknown status {status!r} (expected one of: {allowed})"
            ) from None

    def _actor(self, actor: str | None, parent: KeyRecord | None) -> str:
        if actor is None:
            return f"key:{parent.key_id}" if parent is not None else "system"
        return _text(actor, "actor", MAX_ACTOR_LENGTH)

    def _requested_expiry(
        self, expires_at: Timestamp | None, expires_in: Duration | None, now: float
    ) -> float | None:
        if expires_at is not None and expires_in is not None:
            raise ConfigurationError("give expires_at or expires_in, not both")
        if expires_in is not None:
            seconds = _seconds(expires_in, "expires_in")
            if seconds <= 0:
                raise ConfigurationError("expires_in must be positive")
            return _timestamp(now + seconds, "expires_in")
        if expires_at is not None:
            ts = _timestamp(expires_at, "expires_at")
            if ts <= now:
                raise ConfigurationError(f"expires_at {to_iso(ts)} is not in the future")
            return ts
        return None

    def _check_lifetime(self, expiry: float | None, *, issued_at: float) -> None:
        """``max_lifetime`` bounds the life of a secret, counted from its issue."""
        if self.max_lifetime is None:
            return
        limit = issued_at + self.max_lifetime
        if expiry is None:
            raise ConfigurationError(
                f"keys must expire: the maximum lifetime is {_human(self.max_lifetime)}"
            )
        if expiry > limit + 1e-6:
            raise ConfigurationError(
                f"expiry {to_iso(expiry)} is beyond the maximum lifetime of "
                f"{_human(self.max_lifetime)} (latest allowed: {to_iso(limit)})"
            )

    # -- no-escalation rules -------------------------------------------------------------------
    def _acting(self, parent: Parent | None, now: float) -> KeyRecord | None:
        """The fresh record of an acting key, checked to be allowed to manage keys at all."""
        if parent is None:
            return None
        if isinstance(parent, Principal | KeyRecord):
            key_id = parent.key_id
        else:
            raise ConfigurationError(
                f"parent must be a KeyRecord or a Principal, not {type(parent).__name__}"
            )
        # Re-read: a Principal may come from a cache that predates a revocation.
        record = self.store.get(key_id) if is_key_id(key_id) else None
        if record is None:
            raise PermissionDenied("the acting key does not exist")
        status = record.status(now)
        if status is not KeyStatus.ACTIVE:
            raise PermissionDenied(f"the acting key {key_id} is {status.value}")
        if not self.catalog.grants(record.scopes).satisfies(self.manage_scope):
            raise PermissionDenied(
                f"the acting key {key_id} needs the 'admin' or '{self.manage_scope}' scope "
                "to manage keys"
            )
        return record

    def _check_owner(self, parent: KeyRecord, owner: str | None) -> None:
        if owner != parent.owner:
            raise PermissionDenied(
                f"the acting key {parent.key_id} may only manage keys of its own owner"
            )

    def _check_scopes(self, parent: KeyRecord, scopes: frozenset[str]) -> None:
        if not self.catalog.covers(parent.scopes, scopes):
            extra = sorted(
                s for s in scopes if not self.catalog.covers(parent.scopes, frozenset({s}))
            )
            raise PermissionDenied(
                f"the acting key {parent.key_id} cannot grant scopes it does not hold: "
                + ", ".join(extra or sorted(scopes))
            )

    def _check_expiry(self, parent: KeyRecord, expiry: float | None) -> None:
        if parent.expires_at is None:
            return
        if expiry is None or expiry > parent.expires_at:
            raise PermissionDenied(
                f"the new expiry may not be later than the acting key's "
                f"({to_iso(parent.expires_at)})"
            )

    def _windows(self, spec: str | None) -> tuple[Window, ...]:
        return parse_windows(spec) if spec is not None else tuple(self._default_windows)

    def _limit_no_looser(self, child: str | None, parent: str | None) -> bool:
        return _no_looser(self._windows(child), self._windows(parent))

    def _check_rate_limit(self, parent: KeyRecord, limit: str | None) -> None:
        if not self._limit_no_looser(limit, parent.rate_limit):
            theirs = parent.rate_limit or "the default policy"
            raise PermissionDenied(
                f"the rate limit {limit or 'default policy'!s} is looser than the acting key's "
                f"({theirs})"
            )


def _issued(record: KeyRecord) -> float:
    """When the current secret was issued: its last rotation, else its creation."""
    return record.rotated_at if record.rotated_at is not None else record.created_at


def _shown(field: str, value: Any) -> Any:
    """An audit-friendly rendering of a changed field (sets sorted, times as ISO-8601)."""
    if field == "scopes":
        return sorted(value)
    if field == "expires_at":
        return to_iso(value)
    if field == "metadata":
        return {"keys": sorted(value)}
    return value


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
