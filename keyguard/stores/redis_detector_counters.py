"""The anomaly detectors' counters in Redis, shared by every process and machine using it.

:class:`RedisDetectorCounters` implements
:class:`~keyguard.core.detector_counters.DetectorCounters` with one hash per counter,
``<prefix>:dc:{<name>|<window>}`` (one field per bucket; the braces make it one Cluster slot),
updated and read by one Lua script in one round trip: the increment, the dropping of buckets
that left the window and the sum are atomic, so processes counting at once each see a distinct
total. Each hash expires a window (or ``keep`` periods) after its last increment. The client
wiring and failure handling are those of the other Redis backends
(:class:`~keyguard.stores.redis_client.RedisClients`): short timeouts, no blind retry of an
increment whose reply was lost, :class:`~keyguard.core.errors.StoreUnavailable` on failure.
Network I/O: run detectors with these counters in the background (the default). A Redis
Cluster client may be passed as ``client``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from keyguard.core.detector_counters import Window, check_name
from keyguard.core.errors import ConfigurationError
from keyguard.stores.redis_client import DEFAULT_TIMEOUT, RedisClients, sync_script

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["DETECTOR_COUNTER_LUA", "RedisDetectorCounters"]

# KEYS[1]: the counter's hash (field = bucket index, value = count).
# ARGV: amount, bucket, first bucket summed, first bucket kept (older ones are deleted; only
# when counting), ttl in ms. Returns the sum of the buckets first..bucket.
DETECTOR_COUNTER_LUA: Final = """
local amount = tonumber(ARGV[1])
local bucket = tonumber(ARGV[2])
local first = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
if amount > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[2], amount)
end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local b = tonumber(fields[i])
  if amount > 0 and b < keep then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif b >= first and b <= bucket then
    total = total + tonumber(fields[i + 1])
  end
end
if amount > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return total
"""


class RedisDetectorCounters(RedisClients):
    """Detector counters in Redis (see the module docstring). Build from a URL
    (``redis://host:6379/0?prefix=kg``) or around a sync ``client``."""

    shared = True

    def __init__(
        self,
        client: Redis | None = None,
        *,
        url: str | None = None,
        prefix: str | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if client is None and url is None:
            raise ConfigurationError("pass a Redis client or a url")
        # An increment is not idempotent: a late reply is not retried (a reconnect is).
        super().__init__(client, None, url, prefix, socket_timeout, None, retry_slow=False)
        self._script: Any = sync_script(DETECTOR_COUNTER_LUA)

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: float = DEFAULT_TIMEOUT
    ) -> RedisDetectorCounters:
        return cls(url=url, socket_timeout=socket_timeout)

    def key(self, name: str, window: Window) -> str:
        """The Redis key of a counter."""
        return f"{self.prefix}:dc:{{{check_name(name)}|{window.tag}}}"

    def _run(self, name: str, window: Window, now: float, amount: int) -> int:
        first, last = window.span(now)
        keys = [self.key(name, window)]
        args = [
            str(amount),
            str(last),
            str(first),
            str(last - window.ring + 1),
            str(math.ceil(window.ttl * 1000) + 1000),
        ]
        script = self._script
        reply = self._call(lambda c: script(keys=keys, args=args, client=c), self._sync())
        return int(reply)

    def add(self, name: str, window: Window, now: float, amount: int = 1) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ConfigurationError("amount must be an integer >= 0")
        return self._run(name, window, now, amount)

    def count(self, name: str, window: Window, now: float) -> int:
        return self._run(name, window, now, 0)

    def __repr__(self) -> str:
        return f"RedisDetectorCounters(prefix={self.prefix!r})"
