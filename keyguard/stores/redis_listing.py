"""How the Redis key store finds keys without ``KEYS`` or ``SCAN``: its listing indexes.

Sorted sets of key ids, scored by ``created_at`` — ``{P}:created`` (every key),
``{P}:owner:<owner>`` and ``{P}:by:<creator>`` — are **hints** (see
:mod:`keyguard.stores.redis_store`): added before a record is written, removed after it left
them, and checked against the record on every listing, so a crash between two writes leaves at
worst an extra hint (skipped, and cleaned up when seen), never a key missing from a listing.
:class:`RedisListing` is the part of :class:`~keyguard.stores.redis_store.RedisStore` that
maintains and reads them; the store provides the client, the key names and error wrapping.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.records import KeyRecord, KeyStatus, Page
from keyguard.stores.base import check_limit, decode_cursor, encode_cursor, matches
from keyguard.stores.redis_codec import decode_record, fmt

__all__ = ["RedisListing"]

_BATCH: Final = 200


class RedisListing:
    """Listing indexes of the Redis store (a base class of ``RedisStore``)."""

    _errors: tuple[type[BaseException], ...]

    # Provided by RedisStore.
    def _sync(self) -> Any:
        raise NotImplementedError

    def _idx(self, name: str) -> str:
        raise NotImplementedError

    def _rec(self, key_id: str) -> str:
        raise NotImplementedError

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        raise NotImplementedError

    def _indexes(self, record: KeyRecord) -> set[str]:
        names = {self._idx("created")}
        if record.owner is not None:
            names.add(self._idx("owner:" + quote(record.owner, safe="")))
        if record.created_by is not None:
            names.add(self._idx("by:" + quote(record.created_by, safe="")))
        return names

    def _add_hints(self, client: Any, key_id: str, score: float, names: Iterable[str]) -> None:
        """Put ``key_id`` in each index at ``score`` (its created_at: the listing order)."""
        names = sorted(names)
        if not names:
            return
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.zadd(name, {key_id: score})
        pipe.execute()

    def _drop_hints(self, client: Any, key_id: str, names: Iterable[str]) -> None:
        pipe = client.pipeline(transaction=False)
        for name in sorted(names):
            pipe.zrem(name, key_id)
        pipe.execute()

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
        check_limit(limit)
        if status is not None:
            try:
                status = KeyStatus(status)
            except ValueError:
                raise ConfigurationError(f"unknown key status {status!r}") from None
        now = time.time() if now is None else now
        after = decode_cursor(cursor) if cursor else None
        # The most selective index: the creator's, the owner's, or every key.
        if created_by is not None:
            index = self._idx("by:" + quote(created_by, safe=""))
        elif owner is not None:
            index = self._idx("owner:" + quote(owner, safe=""))
        else:
            index = self._idx("created")
        out: list[KeyRecord] = []
        try:
            client = self._sync()
            low: str = "-inf" if after is None else fmt(after[0])
            skip_through = after
            offset = 0
            while len(out) <= limit:
                batch = client.zrangebyscore(
                    index, low, "+inf", start=offset, num=_BATCH, withscores=True
                )
                if not batch:
                    break
                offset += len(batch)
                ids: list[str] = []
                for member, score in batch:
                    key_id = member.decode() if isinstance(member, bytes) else str(member)
                    if skip_through is not None and (score, key_id) <= skip_through:
                        continue
                    ids.append(key_id)
                records = self._fetch(client, ids)
                ghosts: list[str] = []
                for key_id, rec in zip(ids, records, strict=True):
                    if rec is None:
                        ghosts.append(key_id)
                        continue
                    if matches(rec, owner=owner, status=status, created_by=created_by, now=now):
                        out.append(rec)
                        if len(out) > limit:
                            break
                if ghosts:
                    self._clean_ghosts(client, index, ghosts)
                if len(batch) < _BATCH:
                    break
        except self._errors as exc:
            raise self._unavailable(exc) from None
        # Hints may be ordered by a stale score: order by the records themselves.
        out.sort(key=lambda r: (r.created_at, r.key_id))
        more = len(out) > limit
        items = tuple(out[:limit])
        return Page(items=items, next_cursor=encode_cursor(items[-1]) if more else None)

    def _fetch(self, client: Any, ids: builtins.list[str]) -> builtins.list[KeyRecord | None]:
        if not ids:
            return []
        pipe = client.pipeline(transaction=False)
        for key_id in ids:
            pipe.hmget(self._rec(key_id), "r", "lu")
        return [decode_record(fields) for fields in pipe.execute()]

    def _clean_ghosts(self, client: Any, index: str, ghosts: builtins.list[str]) -> None:
        # An index entry without a record: a create that crashed before its record was written
        # (or was refused as a duplicate). Re-check each one before removing it.
        for key_id in ghosts:
            if client.exists(self._rec(key_id)) == 0:
                client.zrem(index, key_id)
