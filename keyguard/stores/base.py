"""The key-store contract every backend implements, and the pieces backends share.

A store keeps :class:`~keyguard.core.records.KeyRecord` values and an append-only audit log.
The request path needs only :meth:`KeyStore.get` / :meth:`KeyStore.aget` (and the throttled
``touch``); everything else serves key management. Stores raise
:class:`~keyguard.core.errors.StoreUnavailable` when their backend cannot be reached, and
nothing else for infrastructure trouble. Async methods default to running the sync ones in a
worker thread, so a blocking backend never blocks the event loop; native-async backends
override them.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import builtins
from collections.abc import Callable
from typing import ClassVar, Self

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import AuditEvent, KeyRecord, KeyStatus, Page

MAX_PAGE_SIZE = 1000


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
    def create(self, record: KeyRecord) -> None:
        """Insert a new record; :class:`~keyguard.core.errors.KeyExists` if the id is taken."""

    @abc.abstractmethod
    def update(self, record: KeyRecord) -> None:
        """Replace a record whose stored version is ``record.version - 1``.

        Raises :class:`~keyguard.core.errors.KeyNotFound` if it does not exist and
        :class:`~keyguard.core.errors.ConflictError` if another writer got there first.
        """

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
        """Append an audit event."""

    @abc.abstractmethod
    def audit(self, *, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        """The newest audit events first, optionally for one key."""

    def ping(self) -> None:  # noqa: B027 - optional hook, a no-op for in-process stores
        """Raise :class:`~keyguard.core.errors.StoreUnavailable` if the backend is unreachable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store must not be used afterwards."""

    def subscribe_invalidations(self, callback: Callable[[str], None]) -> bool:
        """Call ``callback(key_id)`` when another process changes a key.

        Returns whether the store can push invalidations at all; stores that cannot (SQLite,
        memory) return ``False`` and caches rely on their freshness bound instead.
        """
        del callback
        return False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ConfigurationError(f"limit must be an integer between 1 and {MAX_PAGE_SIZE}")
    return limit


def encode_cursor(record: KeyRecord) -> str:
    raw = f"{record.created_at!r}|{record.key_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of :func:`encode_cursor`; a malformed cursor is a ConfigurationError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        created, _, key_id = raw.partition("|")
        return float(created), key_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError("malformed cursor") from exc


def matches(
    record: KeyRecord,
    *,
    owner: str | None,
    status: KeyStatus | None,
    created_by: str | None,
    now: float,
) -> bool:
    """The listing filter, shared by stores that filter in Python."""
    return (
        (owner is None or record.owner == owner)
        and (created_by is None or record.created_by == created_by)
        and (status is None or record.status(now) is status)
    )
