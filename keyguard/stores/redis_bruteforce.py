"""The brute-force guard in Redis: failed authentications per client address, counted in one
sorted set per address and shared by every process (see :class:`RedisBruteForceGuard`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from keyguard.core.errors import ConfigurationError
from keyguard.stores.redis_client import (
    DEFAULT_TIMEOUT,
    RedisClients,
    async_script,
    check_part,
    now_arg,
    sync_script,
)
from keyguard.stores.redis_scripts import BRUTE_FORCE_LUA

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

__all__ = ["RedisBruteForceGuard"]


class RedisBruteForceGuard(RedisClients):
    """:class:`keyguard.core.bruteforce.BruteForceGuard` shared by every process via Redis.

    Same semantics (``threshold`` failures in a sliding ``window`` block the address until
    the oldest leaves it), same methods, one round trip each, Redis's clock. Keys:
    ``<prefix>:bf:{<address>}``, with a TTL of ``window``. Raises :class:`StoreUnavailable`;
    a caller that cannot reach Redis should treat the address as not blocked (the guard is a
    brake on failures, never a condition for success).
    """

    def __init__(
        self,
        client: Redis | None = None,
        *,
        async_client: AsyncRedis | None = None,
        url: str | None = None,
        prefix: str | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        threshold: int = 10,
        window: float = 60.0,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigurationError(f"threshold must be an integer >= 1, got {threshold!r}")
        if not isinstance(window, int | float) or not window > 0 or not math.isfinite(window):
            raise ConfigurationError(f"window must be a number of seconds > 0, got {window!r}")
        # Recording a failure is not idempotent: a late reply is not retried (a reconnect
        # after a refused connection still is).
        super().__init__(
            client, async_client, url, prefix, socket_timeout, socket_timeout, retry_slow=False
        )
        self.threshold = threshold
        self.window = float(window)
        self._window_us = str(math.floor(self.window * 1e6 + 0.5))
        self._ttl_ms = str(math.ceil(self.window * 1000) + 1000)
        self._script = sync_script(BRUTE_FORCE_LUA)
        self._ascript = async_script(BRUTE_FORCE_LUA)

    def key(self, client: str) -> str:
        """The Redis key counting ``client``'s failures."""
        return f"{self.prefix}:bf:{{{check_part('client address', client)}}}"

    def _args(self, record: bool, now: float | None) -> list[str]:
        return [
            now_arg(now),
            str(self.threshold),
            self._window_us,
            "1" if record else "0",
            self._ttl_ms,
        ]

    def _run(self, client: str | None, record: bool, now: float | None) -> int | None:
        if client is None:
            return None
        sync = self._sync()
        script, keys, args = self._script, [self.key(client)], self._args(record, now)
        reply = self._call(lambda c: script(keys=keys, args=args, client=c), sync)
        return None if int(reply) < 0 else int(reply)

    async def _arun(self, client: str | None, record: bool, now: float | None) -> int | None:
        if client is None:
            return None
        asyn = self._async()
        script, keys, args = self._ascript, [self.key(client)], self._args(record, now)
        reply = await self._acall(lambda c: script(keys=keys, args=args, client=c), asyn)
        return None if int(reply) < 0 else int(reply)

    def is_blocked(self, client: str | None, *, now: float | None = None) -> int | None:
        return self._run(client, False, now)

    def record_failure(self, client: str | None, *, now: float | None = None) -> int | None:
        return self._run(client, True, now)

    async def ais_blocked(self, client: str | None, *, now: float | None = None) -> int | None:
        return await self._arun(client, False, now)

    async def arecord_failure(self, client: str | None, *, now: float | None = None) -> int | None:
        return await self._arun(client, True, now)

    def reset(self, client: str) -> None:
        key = self.key(client)
        self._call(lambda c: c.delete(key, f"{key}:seq"), self._sync())

    async def areset(self, client: str) -> None:
        key = self.key(client)
        await self._acall(lambda c: c.delete(key, f"{key}:seq"), self._async())
