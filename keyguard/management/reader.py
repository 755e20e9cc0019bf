"""The read side of key management: one store, its settings checked, keys listed and verified.

:class:`KeyReader` owns what every key-management entry point needs before it changes anything:
the store (opened from a URL, or given), the catalog, key format and hasher, the pepper check
against the store (:func:`keyguard.core.pepper.check_store`, deferred to first use when the
store cannot be reached at construction), and the reading operations — show, list, the
"expiring soon" signal, the audit log and a verification that behaves exactly like a protected
request. :class:`~keyguard.management.KeyManager` adds the lifecycle mutations on top.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from keyguard.core.clock import Clock
from keyguard.core.errors import ConfigurationError, KeyNotFound, StoreUnavailable
from keyguard.core.hashing import Hasher
from keyguard.core.keys import DEFAULT_FORMAT, KeyFormat, is_key_id
from keyguard.core.pepper import check_store
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus, Page
from keyguard.core.scopes import MANAGE_SCOPE, ScopeCatalog
from keyguard.management import validation as v
from keyguard.stores import from_url
from keyguard.stores.base import MAX_PAGE_SIZE, KeyStore

if TYPE_CHECKING:
    from keyguard.core.decision import Decision
    from keyguard.core.verifier import Verifier
    from keyguard.observability.model import UsageReport

__all__ = ["DEFAULT_EXPIRING_SOON", "KeyReader", "suspension"]

logger = logging.getLogger("keyguard.management")

DEFAULT_EXPIRING_SOON: Final = 7 * 86400.0


def suspension(decision: Decision) -> Decision:
    """``decision``, or ``suspended_api_key`` if it allowed a suspended key (for checks made
    without a client address, where :func:`keyguard.core.restrictions.record_denial` cannot
    judge networks)."""
    from keyguard.core.restrictions import SUSPENDED

    principal = decision.principal
    if decision.allowed and principal is not None and principal.record.suspended_at is not None:
        return SUSPENDED
    return decision


class KeyReader:
    """Read-only key operations over one store (see :class:`~keyguard.management.KeyManager`
    for the arguments). ``read_only=True`` never writes to the store, not even the pepper
    fingerprint or a verification's ``last_used_at``."""

    def __init__(
        self,
        store: KeyStore | str,
        *,
        catalog: ScopeCatalog | None = None,
        key_format: KeyFormat = DEFAULT_FORMAT,
        hasher: Hasher | None = None,
        expiring_soon: float = DEFAULT_EXPIRING_SOON,
        manage_scope: str = MANAGE_SCOPE,
        read_only: bool = False,
        clock: Clock = time.time,
    ) -> None:
        if v.seconds(expiring_soon, "expiring_soon") < 0:
            raise ConfigurationError("expiring_soon must be >= 0")
        if catalog is None:
            catalog = ScopeCatalog.platform(manage_scope=manage_scope)
        self.catalog = catalog
        self.key_format = key_format
        self.hasher = hasher if hasher is not None else Hasher()
        self.expiring_soon = float(expiring_soon)
        self.manage_scope = manage_scope
        self.read_only = bool(read_only)
        self._clock = clock
        self._verifier: Verifier | None = None
        self._pepper_checked = False
        self._owns_store = isinstance(store, str)
        self.store: KeyStore = from_url(store) if isinstance(store, str) else store
        try:
            self._check_pepper(at_construction=True)
        except BaseException:
            self.close()
            raise

    @property
    def clock(self) -> Clock:
        """The wall clock this reader (and its verifications) use."""
        return self._clock

    def _check_pepper(self, *, at_construction: bool = False) -> None:
        """Refuse a store whose keys were hashed with another pepper (one clear error).

        A store that cannot be reached yet does not stop construction (an application may
        build its manager before the database is up); the check then runs on first use, and
        nothing is read or written before it passed.
        """
        try:
            check_store(self.store, self.hasher, write=not self.read_only)
        except StoreUnavailable:
            if not at_construction:
                raise
            logger.warning(
                "key store %r unreachable; the pepper check will run on first use", self.store
            )
            return
        self._pepper_checked = True

    def _ready(self) -> None:
        if not self._pepper_checked:
            self._check_pepper()

    # -- resources -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the store if it was opened from a URL."""
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> KeyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------
    def get(self, key_id: str) -> KeyRecord:
        """The record of ``key_id``; :class:`~keyguard.core.errors.KeyNotFound` if none."""
        self._ready()
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
        self._ready()
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
        window = self.expiring_soon if within is None else v.seconds(within, "within")
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
        self._ready()
        return self.store.audit(key_id=key_id, limit=limit)

    def verify(self, plaintext: str) -> Decision:
        """Authenticate a plaintext key exactly as a protected request would (no cache): a
        suspended key is ``suspended_api_key``; network restrictions, which depend on where a
        request comes from, are not judged here."""
        self._ready()
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
                read_only=self.read_only,
                clock=self._clock,
            )
        decision = verifier.authenticate(f"UserKey {plaintext}", restrictions=False)
        return suspension(decision)

    # -- usage ---------------------------------------------------------------------------------
    def usage(self, key_id: str, *, days: int = 30) -> UsageReport:
        """Requests made with ``key_id`` over the last ``days`` UTC days (today included), per
        day by status class and by route template, with its last use and client address.

        Counts come from the store: requests reach it when the counting process flushes (every
        few seconds, see :class:`~keyguard.observability.usage.UsageCounter`).
        :class:`~keyguard.core.errors.KeyNotFound` for an unknown key."""
        from keyguard.observability.report import build_report, check_days, first_day

        days = check_days(days)
        record = self.get(key_id)
        now = self._clock()
        totals = self.store.usage_totals(key_id=record.key_id, since=first_day(now, days))
        return build_report(
            totals, days=days, now=now, key_id=record.key_id, last_used_at=record.last_used_at
        )

    def owner_usage(self, owner: str, *, days: int = 30) -> UsageReport:
        """:meth:`usage` summed over every key ``owner`` has (revoked and expired ones
        included: their requests happened)."""
        from keyguard.observability.report import build_report, check_days, first_day

        days = check_days(days)
        name = v.owner(owner)
        if name is None:
            raise ConfigurationError("owner must be a non-empty string")
        self._ready()
        now = self._clock()
        totals = self.store.usage_totals(owner=name, since=first_day(now, days))
        return build_report(totals, days=days, now=now, owner=name)

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
