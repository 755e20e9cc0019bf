"""The state changes of an existing key: revoke (cascading), rotate, expire, suspend, resume.

:class:`KeyLifecycle` adds them to :class:`~keyguard.management.mutations.KeyMutator`; every
one goes through the same machinery (acting key re-read and checked, authority rule, one
transaction for the change and its audit event, refusals audited). Revocation is one-way and
cascades along ``created_by``; suspension is its reversible cousin — a suspended key is refused
with ``suspended_api_key`` until resumed, may not act on other keys meanwhile, and can still be
rotated (suspend, rotate, resume is the answer to a leaked key that must keep its id). Rotation
may be made idempotent (:mod:`keyguard.management.idempotency`).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from typing import Any, Final

from keyguard.core.clock import to_iso
from keyguard.core.errors import AlreadyProcessed, ConfigurationError, InvalidOperation
from keyguard.core.records import KeyRecord, KeyStatus
from keyguard.management import validation as v
from keyguard.management.idempotency import Idempotency
from keyguard.management.mutations import Change, CreatedKey, KeyMutator, Parent
from keyguard.management.validation import Duration, Timestamp

__all__ = ["DEFAULT_GRACE", "MAX_GRACE", "KeyLifecycle"]

logger = logging.getLogger("keyguard.management")

DEFAULT_GRACE: Final = 24 * 3600.0
MAX_GRACE: Final = 30 * 86400.0


class KeyLifecycle(KeyMutator):
    """Revoke, rotate, expire, suspend and resume (see :class:`~keyguard.management.KeyManager`)."""

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
        idempotency: Idempotency | None = None,
    ) -> CreatedKey:
        """Issue a new secret for the same key id and return it (shown this once).

        The old secret keeps working until ``now + grace`` (``grace=0`` ends it immediately;
        at most 30 days). Only one previous secret is kept: rotating again within the grace
        period gives the grace to the secret being replaced, and the one before it stops
        working at once. Revoked and expired keys cannot be rotated; suspended ones can (and
        stay suspended). The key's expiry is unchanged; under a ``max_lifetime`` policy use
        :meth:`update` to extend it afterwards. With ``idempotency``, a retry of the same
        request raises :class:`~keyguard.core.errors.AlreadyProcessed` instead of rotating
        again (see :mod:`keyguard.management.idempotency`).
        """
        now, actor = self._begin("rotate", actor, parent)
        with self._refusals("rotate", key_id, actor, now, parent):
            idem = self._idempotent(idempotency, "rotate", actor, parent)
            parent_rec = self._acting(parent, now)
            grace_s = v.seconds(grace, "grace")
            if not 0 <= grace_s <= MAX_GRACE:
                raise ConfigurationError(
                    f"grace must be between 0 and {int(MAX_GRACE // 86400)} days"
                )
            target = self.get(key_id).key_id
            if idem is not None:
                self._replayed(idem, target, now)
            generated = self.key_format.generate(target)
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
                if status not in (KeyStatus.ACTIVE, KeyStatus.SUSPENDED):
                    raise InvalidOperation(f"key {current.key_id} is {status.value}; cannot rotate")
                return record, {
                    "grace_seconds": grace_s,
                    "previous_valid_until": to_iso(now + grace_s) if keep else None,
                }

            entry = None if idem is None else idem.entry(target, now)
            try:
                record = self._mutate(target, apply, "rotate", actor, now, idempotency=entry)[0]
            except AlreadyProcessed:
                if idem is None:
                    raise
                raise self._already(idem, target, now) from None
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

    # -- suspend and resume --------------------------------------------------------------------
    def suspend(
        self,
        key_id: str,
        *,
        reason: str,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> KeyRecord:
        """Disable a key reversibly: requests with it are refused with ``suspended_api_key``
        (only after its secret matched) until :meth:`resume`, and it may not act on keys.

        Suspending a suspended key changes nothing (the first reason stays); a revoked key
        cannot be suspended. With a ``parent``, the authority rule applies as for any change.
        Audited as ``suspend`` with the reason. Keys it created are not suspended with it (they
        are revoked with it: suspension is a pause, revocation an end).
        """
        now, actor = self._begin("suspend", actor, parent)
        with self._refusals("suspend", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)
            why = v.reason(reason)

            def apply(current: KeyRecord) -> Change:
                record = current.evolve(suspended_at=now, suspended_reason=why)
                self._authorize("suspend", parent_rec, current, record)
                if current.revoked_at is not None:
                    raise InvalidOperation(f"key {current.key_id} is revoked; cannot suspend it")
                if current.suspended_at is not None:
                    return None
                return record, {"reason": why}

            return self._mutate(key_id, apply, "suspend", actor, now)[0]

    def resume(
        self,
        key_id: str,
        *,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> KeyRecord:
        """Undo :meth:`suspend`: the key works again (unless it expired meanwhile). Resuming a
        key that is not suspended changes nothing; a revoked key stays revoked. Audited as
        ``resume`` with when and why the key had been suspended."""
        now, actor = self._begin("resume", actor, parent)
        with self._refusals("resume", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)

            def apply(current: KeyRecord) -> Change:
                record = current.evolve(suspended_at=None, suspended_reason=None)
                self._authorize("resume", parent_rec, current, record)
                if current.revoked_at is not None:
                    raise InvalidOperation(f"key {current.key_id} is revoked; cannot resume it")
                if current.suspended_at is None:
                    return None
                return record, {
                    "suspended_at": to_iso(current.suspended_at),
                    "suspended_reason": current.suspended_reason,
                }

            return self._mutate(key_id, apply, "resume", actor, now)[0]


def _revoked(record: KeyRecord, now: float, reason: str) -> KeyRecord:
    # The previous digest stays: a secret still in its rotation grace must be recognised as
    # this (revoked) key, not answered as unknown. The verifier checks revocation only after a
    # digest matched, so nothing about a revoked key verifies.
    return record.evolve(revoked_at=now, revoked_reason=reason)
