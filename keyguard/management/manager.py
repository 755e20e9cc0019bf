"""The key-lifecycle service: create, update, revoke, rotate, expire, suspend and resume API keys.

:class:`KeyManager` is the one place where lifecycle rules live, so the CLI, the HTTP
management API and application code all enforce the same ones: inputs are validated
(:mod:`keyguard.management.validation`) against the scope catalog and the rate-limit grammar; a
maximum-lifetime policy bounds how long any secret may live; a key acting as ``parent`` (a key
creating or changing keys) passes :mod:`keyguard.management.authority` on every mutation — it
acts only on itself and on keys it created, and never hands out more than it holds (scopes,
expiry, rate limits, networks); revocation is one-way and cascades to every key the revoked key
created; suspension is reversible; rotation issues a new secret under the same key id and keeps
the old one valid for a bounded grace period; create and rotate can be made idempotent
(:mod:`keyguard.management.idempotency`). Every mutation is written together with its
:class:`~keyguard.core.records.AuditEvent` in one store transaction, and every refused mutation
is audited as ``<action>.refused``. The plaintext of a key exists only in the
:class:`CreatedKey` returned by :meth:`KeyManager.create` and :meth:`KeyManager.rotate`; the
store receives its digest, and audit events, logs, reprs and exceptions never see either.

By job: :mod:`~keyguard.management.reader` reads (show, list, audit, verify),
:mod:`~keyguard.management.mutations` holds the machinery every mutation shares,
:mod:`~keyguard.management.lifecycle` changes existing keys (revoke, rotate, expire, suspend,
resume), and this module creates and updates them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from keyguard.core.clock import Clock, to_iso
from keyguard.core.errors import (
    AlreadyProcessed,
    ConfigurationError,
    InvalidOperation,
    KeyExists,
)
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat
from keyguard.core.networks import parse_networks
from keyguard.core.records import AuditEvent, KeyRecord
from keyguard.core.scopes import MANAGE_SCOPE, ScopeCatalog
from keyguard.management import validation as v
from keyguard.management.idempotency import Idempotency, derived_key_id
from keyguard.management.lifecycle import DEFAULT_GRACE, MAX_GRACE, KeyLifecycle
from keyguard.management.mutations import Change, CreatedKey, Parent
from keyguard.management.reader import DEFAULT_EXPIRING_SOON
from keyguard.management.validation import (
    MAX_NAME_LENGTH,
    MAX_TIMESTAMP,
    UNSET,
    Duration,
    Timestamp,
    Unset,
)
from keyguard.observability.events import Emitter
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

_CREATE_ATTEMPTS: Final = 5


class KeyManager(KeyLifecycle):
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
    * ``events`` — an :class:`~keyguard.observability.events.Emitter` that receives a
      lifecycle event (``key_created``, ``key_rotated``, ``key_revoked``, ``key_updated``,
      ``key_suspended``, ``key_resumed``) after each committed change, with the actor and the
      escaped reason; never a secret.

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
        events: Emitter | None = None,
    ) -> None:
        super().__init__(
            store,
            catalog=catalog,
            key_format=key_format,
            hasher=hasher,
            max_lifetime=max_lifetime,
            default_lifetime=default_lifetime,
            expiring_soon=expiring_soon,
            manage_scope=manage_scope,
            default_rate_limit=default_rate_limit,
            read_only=read_only,
            clock=clock,
            events=events,
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
        description: str | None = None,
        allowed_networks: Iterable[str] | None = None,
        actor: str | None = None,
        parent: Parent | None = None,
        idempotency: Idempotency | None = None,
    ) -> CreatedKey:
        """Create a key and return it with its plaintext (the only time it is available).

        With ``parent`` (the key making this request), the new key may not exceed it: the
        parent must be active and hold ``admin`` or the management scope; the child's scopes
        must be covered by the parent's, its expiry may not be later (it defaults to the
        parent's), its rate limits may not be looser (they default to the parent's override),
        its ``allowed_networks`` must lie within the parent's (they default to them), and it
        belongs to the parent's owner. ``created_by`` records the parent, which is what
        revocation cascades along. ``actor`` defaults to ``"key:<parent id>"`` or ``"system"``.
        With ``idempotency``, the key id is derived from the request's token and a retry raises
        :class:`~keyguard.core.errors.AlreadyProcessed` instead of creating a second key (see
        :mod:`keyguard.management.idempotency`).
        """
        now, actor = self._begin("create", actor, parent)
        with self._refusals("create", None, actor, now, parent):
            idem = self._idempotent(idempotency, "create", actor, parent)
            parent_rec = self._acting(parent, now)
            name = v.text(name, "name", MAX_NAME_LENGTH)
            about = v.description(description)
            granted = self.catalog.validate(scopes)
            owner = v.owner(owner)
            expiry = self._requested_expiry(expires_at, expires_in, now)
            limit = v.rate_limit(rate_limit)
            meta = v.metadata(metadata) if metadata is not None else {}
            networks = None if allowed_networks is None else parse_networks(allowed_networks)
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
                if networks is None:
                    networks = parent_rec.allowed_networks
            self._check_lifetime(expiry, issued_at=now)
            fixed_id = None
            if idem is not None:
                fixed_id = derived_key_id(idem.token)
                self._replayed(idem, fixed_id, now)

            for attempt in range(_CREATE_ATTEMPTS):
                generated = self.key_format.generate(fixed_id)
                record = KeyRecord(
                    key_id=generated.key_id,
                    name=name,
                    description=about,
                    digest=self.hasher.digest(generated.plaintext),
                    scopes=granted,
                    owner=owner,
                    created_at=now,
                    expires_at=expiry,
                    created_by=parent_rec.key_id if parent_rec is not None else None,
                    rate_limit=limit,
                    metadata=meta,
                    allowed_networks=networks or (),
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
                        "allowed_networks": list(record.allowed_networks),
                    },
                )
                try:
                    if idem is None:
                        self.store.create(record, audit=event)
                    else:
                        entry = idem.entry(record.key_id, now)
                        self.store.create(record, audit=event, idempotency=entry)
                except AlreadyProcessed:
                    if idem is None:
                        raise
                    raise self._already(idem, record.key_id, now) from None
                except KeyExists:
                    if idem is not None:
                        # The id is the request's own: the key exists, so the request ran
                        # (its entry may have expired since).
                        raise self._already(idem, record.key_id, now) from None
                    # 62**12 ids make this all but impossible; a retry costs nothing.
                    logger.warning("key id collision on create (attempt %d); retrying", attempt + 1)
                    continue
                logger.info("key %s: create by %s", record.key_id, actor)
                self._emit("create", record, actor, event.details, now)
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
        description: str | Unset | None = UNSET,
        allowed_networks: Iterable[str] | None = None,
        enabled: bool | None = None,
        suspend_reason: str | None = None,
        actor: str | None = None,
        parent: Parent | None = None,
    ) -> KeyRecord:
        """Change a key's name, description, metadata, scopes, rate limit, expiry or networks.

        ``rate_limit=None`` removes the override, ``expires_at=None`` the expiry and
        ``description=None`` the description; leave them out to keep the current values.
        ``allowed_networks=[]`` lifts the network restriction. ``enabled=False`` suspends the
        key (with ``suspend_reason``) and ``enabled=True`` resumes it, in the same change as the
        other fields (:meth:`suspend` and :meth:`resume` do it alone, audited under their own
        names). Revoked keys cannot be changed. With a ``parent``, the key must be the parent
        itself or one it created (directly or not), within the parent's scopes, expiry, limits
        and networks before and after the change (an admin parent may act on any key, but widen
        a field only up to its own).
        Concurrent writers are handled by re-reading and re-applying (optimistic concurrency).
        """
        now, actor = self._begin("update", actor, parent)
        with self._refusals("update", key_id, actor, now, parent):
            parent_rec = self._acting(parent, now)
            new_name = None if name is None else v.text(name, "name", MAX_NAME_LENGTH)
            new_meta = None if metadata is None else v.metadata(metadata)
            new_scopes = None if scopes is None else self.catalog.validate(scopes)
            new_limit = rate_limit if isinstance(rate_limit, Unset) else v.rate_limit(rate_limit)
            new_about = (
                description if isinstance(description, Unset) else v.description(description)
            )
            new_networks = None if allowed_networks is None else parse_networks(allowed_networks)
            if enabled is not None and not isinstance(enabled, bool):
                raise ConfigurationError("enabled must be true or false")
            if suspend_reason is not None and enabled is not False:
                raise ConfigurationError("suspend_reason goes with enabled=False")
            why = None if enabled is not False else v.reason(suspend_reason or "suspended")
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
                if not isinstance(new_about, Unset) and new_about != current.description:
                    changes["description"] = new_about
                if new_networks is not None and new_networks != current.allowed_networks:
                    changes["allowed_networks"] = new_networks
                if enabled is False and current.suspended_at is None:
                    changes["suspended_at"] = now
                    changes["suspended_reason"] = why
                elif enabled is True and current.suspended_at is not None:
                    changes["suspended_at"] = None
                    changes["suspended_reason"] = None
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
