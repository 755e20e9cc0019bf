"""The key-store protocol: what the request path and key management need from a store.

It lives in ``core`` because the verifier depends on it; the backends that implement it live in
``keyguard.stores`` (memory, SQLite, Redis). A store keeps
:class:`~keyguard.core.records.KeyRecord` values, an append-only audit log and a few
deployment-wide settings. The request path needs only :meth:`KeyStore.get` /
:meth:`KeyStore.aget` (and the throttled ``touch``); everything else serves key management.
A mutation and its audit event are one transaction (:meth:`KeyStore.create` and
:meth:`KeyStore.update` take the event), and so is a mutation and the
:class:`~keyguard.core.records.IdempotencyEntry` that lets a retried request be answered
instead of run twice (:meth:`KeyStore.get_idempotency` reads it back). Stores raise
:class:`~keyguard.core.errors.StoreUnavailable` when their backend cannot be reached, and
nothing else for infrastructure trouble. Async methods default to running the sync
ones in a worker thread, so a blocking backend never blocks the event loop; native-async backends
override them.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import logging
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import AuditEvent, IdempotencyEntry, KeyRecord, KeyStatus, Page
from keyguard.core.usage import DEFAULT_RETENTION_DAYS, UsageBatch, UsageTotals

__all__ = ["KeyStore"]


class KeyStore(abc.ABC):
    """Abstract base of key stores. See the module docstring for the contract."""

    #: URL scheme this store is registered under.
    scheme: ClassVar[str] = ""
    #: Whether get() does no I/O (an in-process dict): the async path then calls it directly.
    in_process: ClassVar[bool] = False

    # -- request path -------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key_id: str) -> KeyRecord | None:
        """The record for ``key_id``, or ``None``."""

    async def aget(self, key_id: str) -> KeyRecord | None:
        """Async :meth:`get`; never blocks the event loop."""
        if self.in_process:
            return self.get(key_id)
        return await asyncio.to_thread(self.get, key_id)

    @abc.abstractmethod
    def touch(self, key_id: str, at: float) -> None:
        """Record a use of the key (``last_used_at = max(last_used_at, at)``), no version bump."""

    async def atouch(self, key_id: str, at: float) -> None:
        if self.in_process:
            self.touch(key_id, at)
        else:
            await asyncio.to_thread(self.touch, key_id, at)

    # -- management ---------------------------------------------------------------------
    @abc.abstractmethod
    def create(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        """Insert a new record; :class:`~keyguard.core.errors.KeyExists` if the id is taken.

        ``audit`` is appended in the same transaction: either both are stored or neither is
        (a process killed mid-way never leaves a change without its audit event).
        ``idempotency`` (its ``key_id`` is ``record.key_id``) is stored in that transaction
        too; if a live entry with its key id and token exists already (``expires_at`` after
        the new entry's ``at``), nothing is written and
        :class:`~keyguard.core.errors.AlreadyProcessed` is raised.
        """

    @abc.abstractmethod
    def update(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        """Replace a record whose stored version is ``record.version - 1``.

        Raises :class:`~keyguard.core.errors.KeyNotFound` if it does not exist and
        :class:`~keyguard.core.errors.ConflictError` if another writer got there first; then
        ``audit`` is not written either. Otherwise ``audit`` is appended in the same
        transaction as the change. ``idempotency`` as in :meth:`create` (checked before the
        version, so a retry that lost the race learns that its request already ran).
        """

    @abc.abstractmethod
    def get_idempotency(self, key_id: str, token: str, *, now: float) -> IdempotencyEntry | None:
        """The entry stored for ``key_id`` and ``token`` if it is still live at ``now``."""

    @abc.abstractmethod
    def list(
        self,
        *,
        owner: str | None = None,
        status: KeyStatus | None = None,
        created_by: str | None = None,
        now: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Records ordered by (created_at, key_id), filtered, one page at a time."""

    @abc.abstractmethod
    def add_audit(self, event: AuditEvent) -> None:
        """Append a standalone audit event (one that goes with no change, e.g. a refusal)."""

    @abc.abstractmethod
    def audit(self, *, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        """The newest audit events first, optionally for one key."""

    # -- usage counts (see keyguard.core.usage) -------------------------------------------------
    #: Whether this store keeps usage counts (:meth:`add_usage` / :meth:`usage_totals`).
    keeps_usage: ClassVar[bool] = False

    def add_usage(
        self, batches: Sequence[UsageBatch], *, retention_days: int = DEFAULT_RETENTION_DAYS
    ) -> None:
        """Add every batch's increments to the stored counts (never overwrite: several
        processes add up), keep the latest ``last_used_at``/``last_client`` per key (and move
        the record's ``last_used_at`` forward, as :meth:`touch` does), and forget days older
        than ``retention_days``. Batches of unknown keys are dropped. A batch whose
        ``batch_id`` the store has applied already is skipped (a retry after a lost reply).
        Raises :class:`~keyguard.core.errors.StoreUnavailable` when nothing could be written
        *for sure*; the caller then keeps the batches and tries again later."""
        raise ConfigurationError(f"{type(self).__name__} does not keep usage counts")

    async def aadd_usage(
        self, batches: Sequence[UsageBatch], *, retention_days: int = DEFAULT_RETENTION_DAYS
    ) -> None:
        """Async :meth:`add_usage`."""
        if self.in_process:
            self.add_usage(batches, retention_days=retention_days)
        else:
            await asyncio.to_thread(self.add_usage, batches, retention_days=retention_days)

    def usage_totals(
        self, *, key_id: str | None = None, owner: str | None = None, since: str
    ) -> UsageTotals:
        """The counts of ``key_id`` — or of every key ``owner`` has now, summed — from ISO day
        ``since`` on (exactly one of the two is given)."""
        raise ConfigurationError(f"{type(self).__name__} does not keep usage counts")

    # -- deployment settings ---------------------------------------------------------------
    @abc.abstractmethod
    def get_setting(self, name: str) -> str | None:
        """A deployment-wide setting kept beside the keys (for example the pepper's
        fingerprint), or ``None`` when it was never set."""

    @abc.abstractmethod
    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        """Store a setting and return the value now stored. With ``only_if_absent`` an
        existing value is kept (and returned): the first of several racing processes wins."""

    # -- once-only markers (notifications) ------------------------------------------------
    def claim_notification(self, name: str, ttl: float, *, now: float | None = None) -> bool:
        """Claim the once-only marker ``name`` for ``ttl`` seconds: ``True`` for exactly one
        caller among all the processes sharing this store (the marker was absent, or its
        ``ttl`` had run out), ``False`` for every other. Notifiers claim a name per condition
        instance (``expiring:<key id>:<expiry>``) before sending, so a notification goes out
        once per deployment, not once per process. ``now`` (epoch seconds) is for stores that
        keep time themselves (memory, SQLite); Redis counts the ``ttl`` on its own clock.

        Stores that cannot claim (third-party ones written before this existed) raise
        :class:`~keyguard.core.errors.ConfigurationError`."""
        del name, ttl, now
        raise ConfigurationError(
            f"{type(self).__name__} cannot claim notification markers (needed to send each "
            "notification once); use a memory://, sqlite:/// or redis:// store"
        )

    def release_notification(self, name: str) -> None:
        """Give a claimed marker back (its notification could not be delivered: the next
        check may claim it and try again). Releasing a marker that is not held does nothing."""
        del name
        raise ConfigurationError(f"{type(self).__name__} cannot release notification markers")

    def ping(self) -> None:  # noqa: B027 - optional hook, a no-op for in-process stores
        """Raise :class:`~keyguard.core.errors.StoreUnavailable` if the backend is unreachable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store must not be used afterwards."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release the connections the async methods opened on the running event loop (for
        native-async backends; call it before the loop ends, e.g. in an app's shutdown)."""

    def subscribe_invalidations(self, callback: Callable[[str | None], None]) -> bool:
        """Call ``callback(key_id)`` when a key changes, and ``callback(None)`` when changes
        may have been missed (forget every cached key).

        Every store calls it at once for changes made through this very store object (a
        ``KeyManager`` and a ``Verifier`` sharing a store in one process: immediate). Returns
        whether the store also pushes changes made by *other processes* (Redis does); stores
        that cannot (SQLite, memory) return ``False`` and caches rely on their freshness bound
        for those.
        """
        callbacks: list[Callable[[str | None], None]] | None = getattr(
            self, "_keyguard_local_subscribers", None
        )
        if callbacks is None:
            callbacks = []
            self._keyguard_local_subscribers = callbacks
        callbacks.append(callback)
        return False

    def _changed(self, key_id: str) -> None:
        """Tell this process's subscribers that ``key_id`` changed (backends call it after a
        committed create or update)."""
        for callback in tuple(getattr(self, "_keyguard_local_subscribers", ())):
            try:
                callback(key_id)
            except Exception:  # a broken cache must not undo a committed change
                logging.getLogger("keyguard.store").exception("an invalidation callback failed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
