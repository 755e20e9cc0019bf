"""The key-lifecycle service: create, update, revoke, rotate and expire API keys.

:class:`KeyManager` is the one place where lifecycle rules live, so the CLI, the HTTP
management API and application code all enforce the same ones: inputs are validated
(:mod:`keyguard.management.validation`) against the scope catalog and the rate-limit grammar; a
maximum-lifetime policy bounds how long any secret may live; a key acting as ``parent`` (a key
creating or changing keys) passes :mod:`keyguard.management.authority` on every mutation — it
acts only on itself and on keys it created, and never hands out more than it holds; revocation
is one-way and cascades to every key the revoked key created; rotation issues a new secret under
the same key id and keeps the old one valid for a bounded grace period. Every mutation is
written together with its :class:`~keyguard.core.records.AuditEvent` in one store transaction,
and every refused mutation is audited as ``<action>.refused``. The plaintext of a key exists only
in the :class:`CreatedKey` returned by :meth:`KeyManager.create` and :meth:`KeyManager.rotate`;
the store receives its digest, and audit events, logs, reprs and exceptions never see either.
Reading (show, list, audit, verify) is :class:`~keyguard.management.reader.KeyReader`'s job.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from keyguard.core.clock import Clock, to_iso
from keyguard.core.decision import Principal
from keyguard.core.errors import (
    ConfigurationError,
    ConflictError,
    InvalidOperation,
    KeyExists,
    KeyguardError,
    PermissionDenied,
)
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat, is_key_id
from keyguard.core.ratelimit import DEFAULT_WINDOWS, parse_windows
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus
from keyguard.core.scopes import MANAGE_SCOPE, ScopeCatalog
from keyguard.management import validation as v
from keyguard.management.authority import authorize, may_manage
from keyguard.management.reader import DEFAULT_EXPIRING_SOON, KeyReader
from keyguard.management.validation import (
    MAX_ACTOR_LENGTH,
    MAX_NAME_LENGTH,
    MAX_TIMESTAMP,
    UNSET,
    Duration,
    Timestamp,
    Unset,
)
from keyguard.stores.base import KeyStore

__all__ = [
    "DEFAULT_EXPIRING_SOON",
    "DEFAULT_GRACE",
    "MAX_GRACE",
    "UNSET",
    "CreatedKey",
    "KeyManager",
]

logger = logging.getLogger("keyguard.management")

DEFAULT_GRACE: Final = 24 * 3600.0
MAX_GRACE: Final = 30 * 86400.0

_CREATE_ATTEMPTS: Final = 5
_UPDATE_ATTEMPTS: Final = 5

Parent = KeyRecord | Principal
#: What an operation does to the current record: ``None`` for "nothing to change", else the
#: new record and the audit details.
Change = tuple[KeyRecord, dict[str, Any]] | None


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


class KeyManager(KeyReader):
    """Key lifecycle operations over one store. Thread-safe as far as the store is.

    Security-relevant keyword arguments:

    * ``catalog`` — the scopes keys may hold (default: the platform's 14 plus ``keys:manage``);
      unknown scopes are refused so a typo cannot mint a key nobody can reason about.
    * ``max_lifetime`` — the longest a secret may live, in seconds, counted from its issue
      (creation or last rotation). Keys cannot be created or extended beyond it, and without an
      explicit expiry they get ``default_lifetime`` (or ``max_lifetime``). Forces rotation.
    * ``manage_scope`` — the scope (besides ``admin``) a key needs to act on other keys. Only
      the scope itself grants it, never a wildcard.
    * ``default_rate_limit`` — the deployment's default windows (default: DESIGN.md's 20/10s,
      100/minute, 5000/day). A key without an override is held to them, so a child key's
      override may not be looser than them when its parent has no override of its own.
    * ``hasher`` — the digest algorithm; must match the one the verifiers use. Its pepper is
      checked against the store's fingerprint when the manager is built (or, if the store is
      unreachable then, on first use): a mismatch is one clear
      :class:`~keyguard.core.errors.ConfigurationError`.
    * ``read_only`` — never write to the store (not even the pepper fingerprint); every
      mutation raises :class:`~keyguard.core.errors.ConfigurationError`. For diagnostics and
      the CLI's read-only commands.

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
        read_only: bool = False,
        clock: Clock = time.time,
    ) -> None:
        for what, value in (("max_lifetime", max_lifetime), ("default_lifetime", default_lifetime)):
            if value is not None and (v.seconds(value, what) <= 0):
                raise ConfigurationError(f"{what} must be positive")
        if (
            max_lifetime is not None
            and default_lifetime is not None
            and default_lifetime > max_lifetime
        ):
            raise ConfigurationError("default_lifetime must not exceed max_lifetime")
        self.max_lifetime = None if max_lifetime is None else float(max_lifetime)
        self.default_lifetime = (
            float(default_lifetime) if default_lifetime is not None else self.max_lifetime
        )
        self._default_windows = (
            parse_windows(default_rate_limit) if default_rate_limit is not None else DEFAULT_WINDOWS
        )
        super().__init__(
            store,
            catalog=catalog,
            key_format=key_format,
            hasher=hasher,
            expiring_soon=expiring_soon,
            manage_scope=manage_scope,
            read_only=read_only,
            clock=clock,
        )

    def __enter__(self) -> KeyManager:
        return self

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"KeyManager(store={self.store!r}, max_lifetime={self.max_lifetime}{mode})"

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
        now, actor = self._begin("create", actor, parent)
        with self._refusals("create", None, actor, now, parent):
            parent_rec = self._acting(parent, now)
            name = v.text(name, "name", MAX_NAME_LENGTH)
            granted = self.catalog.validate(scopes)
            owner = v.owner(owner)
            expiry = self._requested_expiry(expires_at, expires_in, now)
            limit = v.rate_limit(rate_limit)
            meta = v.metadata(metadata) if metadata is not None else {}
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
                self._authorize("create", parent_rec, None, record)
                event = AuditEvent(
                    at=now,
                    action="create",
                    key_id=record.key_id,
                    actor=actor,
                    details={
                        "name": name,
                        "scopes": sorted(granted),
                        "owner": owner,
                        "expires_at": to_iso(expiry),
                        "rate_limit": limit,
                        "created_by": record.created_by,
                        "metadata_keys": sorted(meta),
                    },
                )
                try:
                    self.store.create(record, audit=event)
                except KeyExists:
                    # 62**12 ids make this all but impossible; a retry costs nothing.
                    logger.warning("key id collision on create (attempt %d); retrying", attempt + 1)
                    continue
                logger.info("key %s: create by %s", record.key_id, actor)
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
        rate_limit: str | Unset | None = UNSET,
        expires_at: Timestamp | Unset | None = UNSET,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> KeyRecord:
        """Change a key's name, metadata, scopes, rate limit or expiry.

        ``rate_limit=None`` removes the override and ``expires_at=None`` removes the expiry;
        leave them out to keep the current values. Revoked keys cannot be changed. With a
        ``parent``, the key must be the parent itself or one it created (directly or not),
        within the parent's scopes, expiry and limits before and after the change (an admin
        parent may act on any key, but widen a field only up to its own). Concurrent writers
        are handled by re-reading and re-applying (optimistic concurrency).
        """
        now, actor = self._begin("update", actor, parent)
        with self._refusals("update", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)
            new_name = None if name is None else v.text(name, "name", MAX_NAME_LENGTH)
            new_meta = None if metadata is None else v.metadata(metadata)
            new_scopes = None if scopes is None else self.catalog.validate(scopes)
            new_limit = rate_limit if isinstance(rate_limit, Unset) else v.rate_limit(rate_limit)
            new_expiry: float | Unset | None = None if expires_at is None else UNSET
            if expires_at is not None and not isinstance(expires_at, Unset):
                new_expiry = v.timestamp(expires_at, "expires_at")
                if new_expiry <= now:
                    raise ConfigurationError(
                        "expires_at must be in the future (use expire() to end a key now)"
                    )

            def apply(current: KeyRecord) -> Change:
                changes: dict[str, Any] = {}
                if new_name is not None and new_name != current.name:
                    changes["name"] = new_name
                if new_meta is not None and new_meta != dict(current.metadata):
                    changes["metadata"] = new_meta
                if new_scopes is not None and new_scopes != current.scopes:
                    changes["scopes"] = new_scopes
                if not isinstance(new_limit, Unset) and new_limit != current.rate_limit:
                    changes["rate_limit"] = new_limit
                if not isinstance(new_expiry, Unset) and new_expiry != current.expires_at:
                    changes["expires_at"] = new_expiry
                record = current.evolve(**changes)
                self._authorize("update", parent_rec, current, record)
                if current.revoked_at is not None:
                    raise InvalidOperation(f"key {current.key_id} is revoked and cannot be changed")
                if not changes:
                    return None
                later = current.expires_at is not None and (
                    record.expires_at is None or record.expires_at > current.expires_at
                )
                if later:
                    self._check_lifetime(record.expires_at, issued_at=v.issued(current))
                return record, {k: v.shown(k, val) for k, val in changes.items()}

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
        made with ``cascade=False`` can be extended later). With a ``parent``, every key the
        revocation would reach must pass the authority rule, or nothing is revoked. A revoked
        key keeps its previous secret's digest, so a secret still inside its rotation grace is
        recognised and answered ``revoked_api_key`` rather than ``invalid_api_key``.
        """
        now, actor = self._begin("revoke", actor, parent)
        with self._refusals("revoke", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)
            reason = v.reason(reason)
            root = self.get(key_id)
            if parent_rec is not None:
                # All or nothing: check the whole subtree before revoking any of it.
                self._authorize("revoke", parent_rec, root, _revoked(root, now, reason))
                for descendant in self._descendants(root.key_id) if cascade else ():
                    if descendant.revoked_at is None:
                        self._authorize(
                            "revoke",
                            parent_rec,
                            descendant,
                            _revoked(descendant, now, reason),
                            note=(
                                f" (it descends from key {root.key_id}); nothing was revoked; "
                                "cascade=False revokes that key alone"
                            ),
                        )
            revoked: builtins.list[str] = []
            if self._revoke_one(root.key_id, reason, actor, now, None, parent_rec):
                revoked.append(root.key_id)
            if cascade:
                # Children are listed only after their creator is revoked, and a revoked key
                # can create nothing: no key created concurrently escapes the cascade.
                for child in self._descendants(root.key_id):
                    if self._revoke_one(child.key_id, reason, actor, now, root.key_id, parent_rec):
                        revoked.append(child.key_id)
        if revoked:
            logger.info("revoked %d key(s) starting at %s (actor %s)", len(revoked), key_id, actor)
        return revoked

    def _descendants(self, key_id: str) -> Iterator[KeyRecord]:
        """Every key created by ``key_id``, transitively, breadth first (cycle-safe)."""
        seen = {key_id}
        frontier = [key_id]
        while frontier:
            creator = frontier.pop(0)
            for child in self.iter_all(created_by=creator):
                if child.key_id not in seen:
                    seen.add(child.key_id)
                    frontier.append(child.key_id)
                    yield child

    def _revoke_one(
        self,
        key_id: str,
        reason: str,
        actor: str,
        now: float,
        cascade_from: str | None,
        parent_rec: KeyRecord | None,
    ) -> bool:
        def apply(current: KeyRecord) -> Change:
            record = _revoked(current, now, reason)
            if current.revoked_at is not None:
                return None
            self._authorize("revoke", parent_rec, current, record)
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
        now, actor = self._begin("rotate", actor, parent)
        with self._refusals("rotate", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)
            grace_s = v.seconds(grace, "grace")
            if not 0 <= grace_s <= MAX_GRACE:
                raise ConfigurationError(
                    f"grace must be between 0 and {int(MAX_GRACE // 86400)} days"
                )
            generated = self.key_format.generate(self.get(key_id).key_id)
            digest = self.hasher.digest(generated.plaintext)

            def apply(current: KeyRecord) -> Change:
                keep = grace_s > 0
                record = current.evolve(
                    digest=digest,
                    previous_digest=current.digest if keep else None,
                    previous_expires_at=now + grace_s if keep else None,
                    rotated_at=now,
                    prefix=self.key_format.prefix,
                )
                self._authorize("rotate", parent_rec, current, record)
                status = current.status(now)
                if status is not KeyStatus.ACTIVE:
                    raise InvalidOperation(f"key {current.key_id} is {status.value}; cannot rotate")
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
        now, actor = self._begin("expire", actor, parent)
        with self._refusals("expire", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)
            when = now if at is None else v.timestamp(at, "at")

            def apply(current: KeyRecord) -> Change:
                record = current.evolve(expires_at=when)
                self._authorize("expire", parent_rec, current, record)
                if current.revoked_at is not None:
                    raise InvalidOperation(f"key {current.key_id} is revoked and cannot be changed")
                if current.expires_at is not None:
                    if current.expires_at <= now:
                        return None  # expired already: nothing to do
                    if when > current.expires_at:
                        raise InvalidOperation(
                            f"key {current.key_id} expires at {to_iso(current.expires_at)} "
                            "already; expire() never postpones an expiry (use update() to "
                            "extend it)"
                        )
                else:
                    self._check_lifetime(when, issued_at=v.issued(current))
                return record, {"expires_at": to_iso(when)}

            return self._mutate(key_id, apply, "expire", actor, now)[0]

    # -- machinery -----------------------------------------------------------------------------
    def _begin(self, action: str, actor: str | None, parent: Parent | None) -> tuple[float, str]:
        """Common entry of every mutation: the time, the actor label, and the guards."""
        if self.read_only:
            raise ConfigurationError(
                f"this KeyManager is read-only: {action} would change the key store "
                "(construct it with read_only=False)"
            )
        now = self._clock()
        label = self._actor(actor, parent)
        self._ready()
        return now, label

    def _mutate(
        self, key_id: str, apply: Callable[[KeyRecord], Change], action: str, actor: str, now: float
    ) -> tuple[KeyRecord, bool]:
        """Read, apply, write with a version check; on a conflict, re-read and re-apply.

        ``apply`` returns ``None`` for "nothing to change" (no write, no audit event). The new
        record and its audit event are written in one store transaction. Returns the record as
        stored and whether this call changed it.
        """
        for _ in range(_UPDATE_ATTEMPTS):
            current = self.get(key_id)
            changed = apply(current)
            if changed is None:
                return current, False
            record, details = changed
            event = AuditEvent(
                at=now, action=action, key_id=record.key_id, actor=actor, details=details
            )
            try:
                self.store.update(record, audit=event)
            except ConflictError:
                logger.info("concurrent update of %s; retrying %s", key_id, action)
                continue
            logger.info("key %s: %s by %s", record.key_id, action, actor)
            return record, True
        raise ConflictError(
            f"key {key_id} kept changing concurrently; gave up after {_UPDATE_ATTEMPTS} attempts"
        )

    @contextlib.contextmanager
    def _refusals(
        self, action: str, key_id: object, actor: str, now: float, parent: Parent | None
    ) -> Iterator[None]:
        """Audit a refused mutation as ``<action>.refused`` (nothing else was written)."""
        try:
            yield
        except PermissionDenied as exc:
            acting = _parent_id(parent) if parent is not None else None
            subject = key_id if isinstance(key_id, str) and is_key_id(key_id) else acting
            logger.warning("refused %s of %s by %s: %s", action, subject, actor, exc)
            if subject is not None and is_key_id(subject):
                event = AuditEvent(
                    at=now,
                    action=f"{action}.refused",
                    key_id=subject,
                    actor=actor,
                    details={"reason": str(exc), "acting_key": acting},
                )
                try:
                    self.store.add_audit(event)
                except KeyguardError as store_exc:
                    logger.warning("could not audit a refused %s: %s", action, store_exc)
            raise

    def _actor(self, actor: str | None, parent: Parent | None) -> str:
        if actor is not None:
            return v.text(actor, "actor", MAX_ACTOR_LENGTH)
        if parent is None:
            return "system"
        key_id = _parent_id(parent)
        return f"key:{key_id}" if is_key_id(key_id) else "key:<invalid id>"

    def _requested_expiry(
        self, expires_at: Timestamp | None, expires_in: Duration | None, now: float
    ) -> float | None:
        if expires_at is not None and expires_in is not None:
            raise ConfigurationError("give expires_at or expires_in, not both")
        if expires_in is not None:
            seconds = v.seconds(expires_in, "expires_in")
            if seconds <= 0:
                raise ConfigurationError("expires_in must be positive")
            return v.timestamp(now + seconds, "expires_in")
        if expires_at is not None:
            ts = v.timestamp(expires_at, "expires_at")
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
                f"keys must expire: the maximum lifetime is {v.human(self.max_lifetime)}"
            )
        if expiry > limit + 1e-6:
            raise ConfigurationError(
                f"expiry {to_iso(expiry)} is beyond the maximum lifetime of "
                f"{v.human(self.max_lifetime)} (latest allowed: {to_iso(limit)})"
            )

    # -- authority -----------------------------------------------------------------------------
    def _acting(self, parent: Parent | None, now: float) -> KeyRecord | None:
        """The fresh record of an acting key, checked to be allowed to manage keys at all."""
        if parent is None:
            return None
        key_id = _parent_id(parent)
        # Re-read: a Principal may come from a cache that predates a revocation.
        record = self.store.get(key_id) if is_key_id(key_id) else None
        if record is None:
            raise PermissionDenied("the acting key does not exist")
        verdict = may_manage(record, now, catalog=self.catalog, manage_scope=self.manage_scope)
        if not verdict:
            raise PermissionDenied(verdict.reason)
        return record

    def _authorize(
        self,
        action: str,
        parent: KeyRecord | None,
        before: KeyRecord | None,
        after: KeyRecord,
        *,
        note: str = "",
    ) -> None:
        """Raise PermissionDenied unless the acting key (if any) may make this change."""
        if parent is None:
            return
        verdict = authorize(
            parent,
            before,
            after,
            self.store.get,
            catalog=self.catalog,
            default_windows=self._default_windows,
        )
        if not verdict:
            target = "a new key" if before is None else f"key {after.key_id}"
            raise PermissionDenied(
                f"the acting key {parent.key_id} may not {action} {target}: {verdict.reason}{note}"
            )


def _parent_id(parent: Parent) -> str:
    if isinstance(parent, Principal | KeyRecord):
        return parent.key_id
    raise ConfigurationError(
        f"parent must be a KeyRecord or a Principal, not {type(parent).__name__}"
    )


def _revoked(record: KeyRecord, now: float, reason: str) -> KeyRecord:
    # The previous digest stays: a secret still in its rotation grace must be recognised as
    # this (revoked) key, not answered as unknown. The verifier checks revocation only after a
    # digest matched, so nothing about a revoked key verifies.
    return record.evolve(revoked_at=now, revoked_reason=reason)
