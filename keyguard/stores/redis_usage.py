"""The Redis store's usage counts (see :mod:`keyguard.core.usage`).

**Layout** (``P`` the prefix; every name carries the key's ``{<key id>}`` hash tag, so one
script touches one Cluster slot):

* ``P:k:{<key id>}:u:<YYYY-MM-DD>`` — a hash per key and UTC day: field → count (``s:2xx``,
  ``r:GET /agents``), only ever ``HINCRBY``'d; it expires ``retention_days`` after its day
  ends (default 90).
* ``P:k:{<key id>}:ul`` — the key's latest use: ``at`` and ``client``.
* ``P:k:{<key id>}:ub:<batch id>`` — a marker that a flush's batch was applied (one day TTL):
  the script refuses to apply a batch twice, so a flush whose reply was lost (a timeout, a
  connection dropped mid-pipeline) is retried safely: nothing is counted twice.

A flush is one script per key (pipelined on a standalone Redis; one after the other on a
Cluster), each atomic: the marker, the increments, the latest use and the record's
``last_used_at`` (``lu``) together or not at all. Reading an owner's usage lists the owner's
keys through the listing index ``{P}:owner:<owner>`` (checked against each record) and sums
their hashes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.records import KeyRecord
from keyguard.core.usage import DEFAULT_RETENTION_DAYS, UsageBatch, UsageTotals, day_range
from keyguard.stores.redis_codec import fmt

__all__ = ["ADD_USAGE", "RedisUsage"]

#: Seconds a batch marker lives: long past any retry of that batch.
_MARKER_TTL: Final = 86_400

# KEYS: record hash, batch marker, latest-use hash, then one usage hash per day.
# ARGV: marker TTL, last used at ("" = none), last client, number of days, then per day:
#       its expiry (epoch seconds), its number of fields, then field, increment pairs.
# Returns 1 when applied, 0 for an unknown key, -1 for a batch applied before.
ADD_USAGE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then return -1 end
local i = 5
for d = 1, tonumber(ARGV[4]) do
  local key = KEYS[3 + d]
  local expire_at = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('EXPIREAT', key, expire_at)
end
if ARGV[2] ~= '' then
  local at = tonumber(ARGV[2])
  local lu = tonumber(redis.call('HGET', KEYS[1], 'lu'))
  if not lu or lu < at then redis.call('HSET', KEYS[1], 'lu', ARGV[2]) end
  local seen = tonumber(redis.call('HGET', KEYS[3], 'at'))
  if not seen or seen < at then redis.call('HSET', KEYS[3], 'at', ARGV[2], 'client', ARGV[3]) end
end
return 1
"""


def _expire_at(day: str, retention_days: int) -> int:
    end = datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) + timedelta(days=1)
    return math.ceil((end + timedelta(days=retention_days)).timestamp())


class RedisUsage:
    """Usage methods of :class:`~keyguard.stores.redis_store.RedisStore` (a base class)."""

    keeps_usage = True
    prefix: str
    cluster: bool
    _errors: tuple[type[BaseException], ...]

    # Provided by RedisStore.
    def _sync(self) -> Any:
        raise NotImplementedError

    def _script(self, name: str, source: str) -> Any:
        raise NotImplementedError

    def _rec(self, key_id: str) -> str:
        raise NotImplementedError

    def _idx(self, name: str) -> str:
        raise NotImplementedError

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        raise NotImplementedError

    def _fetch(self, client: Any, ids: list[str]) -> list[KeyRecord | None]:
        raise NotImplementedError

    def _usage_day(self, key_id: str, day: str) -> str:
        return f"{self.prefix}:k:{{{key_id}}}:u:{day}"

    def _usage_last(self, key_id: str) -> str:
        return f"{self.prefix}:k:{{{key_id}}}:ul"

    def _usage_args(
        self, batch: UsageBatch, retention_days: int
    ) -> tuple[list[str], list[str]] | None:
        key_id = batch.key_id
        days = [(day, fields) for day, fields in sorted(batch.counts.items()) if fields]
        keys = [
            self._rec(key_id),
            f"{self.prefix}:k:{{{key_id}}}:ub:{batch.batch_id or 'none'}",
            self._usage_last(key_id),
        ]
        args = [
            str(_MARKER_TTL),
            "" if batch.last_used_at is None else fmt(batch.last_used_at),
            batch.last_client or "",
            str(len(days)),
        ]
        for day, fields in days:
            keys.append(self._usage_day(key_id, day))
            args += [str(_expire_at(day, retention_days)), str(len(fields))]
            for name, count in fields.items():
                args += [name, str(int(count))]
        if not days and batch.last_used_at is None:
            return None
        return keys, args

    def add_usage(
        self, batches: Sequence[UsageBatch], *, retention_days: int = DEFAULT_RETENTION_DAYS
    ) -> None:
        today = datetime.now(UTC).date()
        oldest = (today - timedelta(days=max(retention_days, 1) - 1)).isoformat()
        calls = []
        for batch in batches:
            kept = UsageBatch(
                batch.key_id,
                {d: f for d, f in batch.counts.items() if d >= oldest},
                batch.last_used_at,
                batch.last_client,
                batch.batch_id,
            )
            prepared = self._usage_args(kept, retention_days)
            if prepared is not None:
                calls.append(prepared)
        if not calls:
            return
        try:
            script = self._script("add_usage", ADD_USAGE)
            client = self._sync()
            if self.cluster:
                # One slot per key: scripts one after the other (each is atomic on its own).
                for keys, args in calls:
                    script(keys=keys, args=args)
                return
            pipe = client.pipeline(transaction=False)
            for keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def usage_totals(
        self, *, key_id: str | None = None, owner: str | None = None, since: str
    ) -> UsageTotals:
        if (key_id is None) == (owner is None):
            raise ConfigurationError("give exactly one of key_id and owner")
        # Through tomorrow: a writer whose clock runs ahead may have started it already.
        last = max(datetime.now(UTC).date(), date.fromisoformat(since)) + timedelta(days=1)
        days = [d.isoformat() for d in day_range(since, last)]
        try:
            client = self._sync()
            if key_id is not None:
                ids = [key_id]
            else:
                index = self._idx("owner:" + quote(owner or "", safe=""))
                hinted = [k.decode() for k in client.zrange(index, 0, -1)]
                records = self._fetch(client, hinted)
                ids = [r.key_id for r in records if r is not None and r.owner == owner]
            pipe = client.pipeline(transaction=False)
            for kid in ids:
                for day in days:
                    pipe.hgetall(self._usage_day(kid, day))
                pipe.hmget(self._usage_last(kid), "at", "client")
            replies = pipe.execute() if ids else []
        except self._errors as exc:
            raise self._unavailable(exc) from None
        totals: dict[str, dict[str, int]] = {}
        latest: tuple[float, str | None] | None = None
        per_key = len(days) + 1
        for n in range(len(ids)):
            chunk = replies[n * per_key : (n + 1) * per_key]
            for day, fields in zip(days, chunk[:-1], strict=True):
                if fields:
                    into = totals.setdefault(day, {})
                    for name, count in fields.items():
                        field = name.decode("utf-8")
                        into[field] = into.get(field, 0) + int(count)
            at, client_address = chunk[-1]
            if at is not None and (latest is None or float(at) > latest[0]):
                latest = (float(at), client_address.decode("utf-8") if client_address else None)
        return UsageTotals(
            days=totals,
            last_used_at=None if latest is None else latest[0],
            last_client=None if latest is None else latest[1],
        )
