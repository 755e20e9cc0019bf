"""What the Redis key store writes: its Lua scripts and the JSON forms of records and events.

Kept apart from :mod:`keyguard.stores.redis_store` (connections, layout, the store protocol) so
that each file has one job. Records are stored as canonical JSON of every field (digests only,
never key material); ``last_used_at`` also lives in its own hash field, maintained outside the
version scheme.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.records import AuditEvent, KeyRecord, dumps_metadata

__all__ = ["TOUCH", "WRITE", "decode_record", "encode_event", "encode_record", "fmt", "read_event"]

# KEYS: record hash, key audit list, idempotency entry [, global audit list]
# ARGV: mode ("create" | "update"), new version, record JSON, last_used_at ("" = none),
#       audit JSON ("" = none), invalidation channel ("" = none), max global audit,
#       key id, idempotency entry JSON ("" = none), its time to live in milliseconds, its time
# Returns 1 on success, 0 if the key exists (create), -1 if missing, -2 on a version conflict,
# -3 if a live idempotency entry for this request exists (nothing written). Liveness is judged
# by the writers' clock, as in every store (the TTL only collects entries afterwards).
WRITE: Final = """
local version = tonumber(ARGV[2])
if ARGV[9] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing and tonumber(cjson.decode(existing)['expires_at']) > tonumber(ARGV[11]) then
    return -3
  end
end
if ARGV[1] == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
else
  local current = redis.call('HGET', KEYS[1], 'v')
  if not current then return -1 end
  if tonumber(current) ~= version - 1 then return -2 end
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3])
if ARGV[4] ~= '' then
  local lu = tonumber(redis.call('HGET', KEYS[1], 'lu'))
  if not lu or lu < tonumber(ARGV[4]) then redis.call('HSET', KEYS[1], 'lu', ARGV[4]) end
end
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[5])
  if KEYS[4] then
    redis.call('LPUSH', KEYS[4], ARGV[5])
    redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
  end
end
if ARGV[9] ~= '' then redis.call('SET', KEYS[3], ARGV[9], 'PX', ARGV[10]) end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[8]) end
return 1
"""

# KEYS: record hash.  ARGV: at.  last_used_at = max(last_used_at, at) on an existing key.
TOUCH: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local lu = tonumber(redis.call('HGET', KEYS[1], 'lu'))
if not lu or lu < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'lu', ARGV[1]) end
return 1
"""


def fmt(x: float) -> str:
    return repr(float(x))


def encode_event(event: AuditEvent) -> str:
    try:
        details = json.loads(dumps_metadata(event.details))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"audit details must be JSON-serialisable ({exc})") from None
    return json.dumps(
        {
            "at": event.at,
            "action": event.action,
            "key_id": event.key_id,
            "actor": event.actor,
            "details": details,
        },
        separators=(",", ":"),
        allow_nan=False,
    )


def read_event(raw: bytes | str) -> AuditEvent:
    d = json.loads(raw)
    return AuditEvent(
        at=d["at"], action=d["action"], key_id=d["key_id"], actor=d["actor"], details=d["details"]
    )


def encode_record(record: KeyRecord) -> str:
    d = record.to_dict()
    try:
        d["metadata"] = json.loads(dumps_metadata(record.metadata))
        return json.dumps(d, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"key {record.key_id}: scopes and metadata must be JSON-serialisable ({exc})"
        ) from None


def decode_record(fields: Sequence[bytes | None]) -> KeyRecord | None:
    raw, lu = fields[0], fields[1]
    if raw is None:
        return None
    record = KeyRecord.from_dict(json.loads(raw))
    if lu is not None:
        used = float(lu)
        if record.last_used_at is None or record.last_used_at < used:
            return dataclasses.replace(record, last_used_at=used)
    return record
