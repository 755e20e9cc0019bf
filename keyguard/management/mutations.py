"""The machinery every key-lifecycle mutation shares, below the KeyManager.

:class:`KeyMutator` holds the lifecycle settings (maximum lifetime, default windows) and the
steps each mutation goes through: the read-only guard and the actor label (:meth:`_begin`), the
acting key re-read from the store and checked (:meth:`_acting`, never a cached principal), the
authority rule (:meth:`_authorize`), the optimistic read-apply-write loop that writes a change
with its audit event and, for idempotent requests, its idempotency entry in one store
transaction (:meth:`_mutate`), and the audit of refusals (:meth:`_refusals`). The operations
themselves live in :mod:`keyguard.management.lifecycle` and :mod:`keyguard.management.manager`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from keyguard.core.clock import Clock, to_iso
from keyguard.core.decision import Principal
from keyguard.core.errors import (
    AlreadyProcessed,
    ConfigurationError,
    ConflictError,
    KeyguardError,
    PermissionDenied,
)
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat, is_key_id
from keyguard.core.ratelimit import DEFAULT_WINDOWS, parse_windows
from keyguard.core.records import AuditEvent, IdempotencyEntry, KeyRecord
from keyguard.core.scopes import MANAGE_SCOPE, ScopeCatalog
from keyguard.management import validation as v
from keyguard.management.authority import Verdict, authorize, may_manage
from keyguard.management.idempotency import Idempotency, replay_error
from keyguard.management.reader import DEFAULT_EXPIRING_SOON, KeyReader
from keyguard.management.validation import MAX_ACTOR_LENGTH, Duration, Timestamp
from keyguard.observability.events import Emitter
from keyguard.observability.lifecycle import lifecycle_event
from keyguard.stores.base import KeyStore

__all__ = ["Change", "CreatedKey", "Idempotent", "KeyMutator", "Parent", "parent_id"]

logger = logging.getLogger("keyguard.management")

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


@dataclass(frozen=True, slots=True)
class Idempotent:
    """An idempotent request being carried out: what the caller asked, and its token."""

    request: Idempotency
    token: str
    operation: str

    def entry(self, key_id: str, now: float) -> IdempotencyEntry:
        return self.request.entry(
            key_id=key_id, token=self.token, now=now, operation=self.operation
        )


class KeyMutator(KeyReader):
    """:class:`~keyguard.management.reader.KeyReader` plus what every mutation needs. See
    :class:`~keyguard.management.KeyManager` for the arguments."""

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
        events: Emitter | None = None,
    ) -> None:
        #: Where lifecycle events go (``key_created``, ``key_revoked``…), or ``None``.
        self.events = events
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

    # -- entry of every mutation -----------------------------------------------------------------
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

    def _actor(self, actor: str | None, parent: Parent | None) -> str:
        if actor is not None:
            return v.text(actor, "actor", MAX_ACTOR_LENGTH)
        if parent is None:
            return "system"
        key_id = parent_id(parent)
        return f"key:{key_id}" if is_key_id(key_id) else "key:<invalid id>"

    # -- idempotency -----------------------------------------------------------------------------
    def _idempotent(
        self, request: Idempotency | None, operation: str, actor: str, parent: Parent | None
    ) -> Idempotent | None:
        """The request with its token (who asks, which operation, which client key)."""
        if request is None:
            return None
        if not isinstance(request, Idempotency):
            raise ConfigurationError("idempotency must be an Idempotency value")
        scope = f"key:{parent_id(parent)}" if parent is not None else actor
        return Idempotent(request, request.token(scope, operation), operation)

    def _replayed(self, idem: Idempotent, key_id: str, now: float) -> None:
        """Raise AlreadyProcessed if a live entry says this request already ran."""
        found = self.store.get_idempotency(key_id, idem.token, now=now)
        if found is not None:
            raise replay_error(found, idem.request, key_id)

    def _already(self, idem: Idempotent, key_id: str, now: float) -> AlreadyProcessed:
        """The request ran already (the store refused our write, or the key exists): say so
        precisely, reading its entry if it is still live."""
        found = self.store.get_idempotency(key_id, idem.token, now=now)
        return replay_error(found, idem.request, key_id)

    # -- the read-apply-write loop ---------------------------------------------------------------
    def _mutate(
        self,
        key_id: str,
        apply: Callable[[KeyRecord], Change],
        action: str,
        actor: str,
        now: float,
        *,
        idempotency: IdempotencyEntry | None = None,
    ) -> tuple[KeyRecord, bool]:
        """Read, apply, write with a version check; on a conflict, re-read and re-apply.

        ``apply`` returns ``None`` for "nothing to change" (no write, no audit event). The new
        record, its audit event and (``idempotency``) its idempotency entry are written in one
        store transaction. Returns the record as stored and whether this call changed it.
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
                if idempotency is None:
                    # Without the keyword: stores written before idempotency keep working.
                    self.store.update(record, audit=event)
                else:
                    self.store.update(record, audit=event, idempotency=idempotency)
            except ConflictError:
                logger.info("concurrent update of %s; retrying %s", key_id, action)
                continue
            logger.info("key %s: %s by %s", record.key_id, action, actor)
            self._emit(action, record, actor, details, now)
            return record, True
        raise ConflictError(
            f"key {key_id} kept changing concurrently; gave up after {_UPDATE_ATTEMPTS} attempts"
        )

    def _emit(
        self, action: str, record: KeyRecord, actor: str, details: Mapping[str, Any], now: float
    ) -> None:
        """The lifecycle event of a committed change (after the commit: never for a change
        that did not happen)."""
        events = self.events
        if events is None:
            return
        event = lifecycle_event(action, record, actor, details, now)
        if event is not None:
            events.emit(event)

    @contextlib.contextmanager
    def _refusals(
        self, action: str, key_id: object, actor: str, now: float, parent: Parent | None
    ) -> Iterator[None]:
        """Audit a refused mutation as ``<action>.refused`` (nothing else was written)."""
        try:
            yield
        except PermissionDenied as exc:
            acting = parent_id(parent) if parent is not None else None
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

    # -- expiry and lifetime ---------------------------------------------------------------------
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

    # -- authority -------------------------------------------------------------------------------
    def _acting(self, parent: Parent | None, now: float) -> KeyRecord | None:
        """The fresh record of an acting key, checked to be allowed to manage keys at all."""
        if parent is None:
            return None
        key_id = parent_id(parent)
        # Re-read: a Principal may come from a cache that predates a revocation.
        record = self.store.get(key_id) if is_key_id(key_id) else None
        if record is None:
            raise PermissionDenied("the acting key does not exist")
        verdict = may_manage(record, now, catalog=self.catalog, manage_scope=self.manage_scope)
        if not verdict:
            raise PermissionDenied(verdict.reason)
        return record

    def within_authority(self, actor: KeyRecord, target: KeyRecord) -> Verdict:
        """Whether ``actor`` (a fresh record allowed to manage keys) may act on ``target`` as it
        stands: the authority rule with nothing changed. What a key may *see* of other keys
        (listings, audit trails) is decided by this too."""
        return authorize(
            actor,
            target,
            target,
            self.store.get,
            catalog=self.catalog,
            default_windows=self._default_windows,
        )

    def may_act(self, actor: KeyRecord, now: float) -> Verdict:
        """Whether ``actor`` may manage keys at all (active, ``admin`` or the manage scope)."""
        return may_manage(actor, now, catalog=self.catalog, manage_scope=self.manage_scope)

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


def parent_id(parent: Parent) -> str:
    """The key id of an acting key given as a record or a principal."""
    if isinstance(parent, Principal | KeyRecord):
        return parent.key_id
    raise ConfigurationError(
        f"parent must be a KeyRecord or a Principal, not {type(parent).__name__}"
    )
