"""Redis clients for the Redis backends, and what to do when a call fails.

Built from a URL (``redis://host:6379/0?prefix=kg``), a backend gets a sync and an async
client with short timeouts (``socket_timeout``, 100 ms by default), and a second, *patient*
pair whose timeout is the rest of the decision's time ``budget`` (500 ms by default). The
driver's own retries are off: this module decides.

- **Slow** (a timeout): Redis may be up but late, so the call is retried once on a patient
  client, within the budget. The first call may still run on the server after the retry did,
  so callers that count (the rate limiter) make each call idempotent (see
  :mod:`keyguard.stores.redis_scripts`). Still no reply: :class:`BackendSlow`.
- **Down** (connection refused, reset or closed): one immediate reconnect, which replaces a
  pooled socket that died with a Redis restart; then :class:`BackendDown` at once, without
  waiting for the budget.
- **Anything else** (a script error, out of memory, a read-only replica): no retry,
  :class:`StoreUnavailable`.

Exceptions name the error type only: driver messages can carry host names and more.
``redis`` is imported only when a backend is built.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit import BackendDown, BackendSlow, Counters
from keyguard.core.ratelimit.settings import DEFAULT_BUDGET, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_TIMEOUT",
    "RedisClients",
    "check_part",
    "now_arg",
    "split_url",
]

_T = TypeVar("_T")

#: What :attr:`RedisClients.stats` counts.
STATS: Final = ("retries", "timeouts", "disconnects", "errors")


#: Characters a part of a key name may not hold: braces would break the Cluster hash tag;
#: whitespace and control characters have no business in a key name.
_NOT_IN_KEYS: Final = frozenset("{} \t\r\n")


def check_part(name: str, value: str) -> str:
    """``value`` if it can go inside a Redis key name (non-empty, no braces or whitespace)."""
    if not isinstance(value, str) or not value or not _NOT_IN_KEYS.isdisjoint(value):
        raise ConfigurationError(f"invalid Redis {name}: must be non-empty, without braces")
    return value


def now_arg(now: float | None) -> str:
    """A test clock's seconds as the scripts' microseconds ("" = Redis's own clock)."""
    return "" if now is None else str(math.floor(now * 1e6 + 0.5))


def split_url(url: str) -> tuple[str, str | None]:
    """``(url without ?prefix=, prefix)``; ConfigurationError unless redis, rediss or unix."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError("Redis URL must start with redis://, rediss:// or unix://")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = None
    rest = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def _seconds(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


class RedisClients:
    """Client wiring shared by the Redis backends: URL parsing, lazy driver import, and the
    retry policy of the module docstring (:meth:`_call`, :meth:`_acall`).

    ``retry_slow=False`` (the brute-force guard, whose writes are not idempotent) gives up
    on the first timeout. Clients passed in are used as they are, with their own timeouts
    and retries, and retried on the same client; :attr:`stats` counts retries, timeouts,
    disconnects and other errors.
    """

    def __init__(
        self,
        client: Redis | None,
        async_client: AsyncRedis | None,
        url: str | None,
        prefix: str | None,
        socket_timeout: float,
        budget: float | None,
        *,
        retry_slow: bool = True,
    ) -> None:
        self.socket_timeout = _seconds("socket_timeout", socket_timeout)
        # No budget given: the default, stretched to one call when the timeout is longer.
        self.budget = (
            max(DEFAULT_BUDGET, self.socket_timeout)
            if budget is None
            else _seconds("budget", budget)
        )
        if self.budget < self.socket_timeout:
            raise ConfigurationError(
                f"budget ({budget}s) must be at least socket_timeout ({socket_timeout}s)"
            )
        import redis
        import redis.asyncio

        self._slow: tuple[type[BaseException], ...] = (redis.TimeoutError, TimeoutError)
        self._down: tuple[type[BaseException], ...] = (redis.ConnectionError, ConnectionError)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._retry_slow = retry_slow
        self.stats = Counters(STATS)
        self._own: list[Any] = []
        self._own_async: list[Any] = []
        patient = async_patient = None
        if url is not None:
            url, url_prefix = split_url(url)
            if prefix is not None and url_prefix is not None and prefix != url_prefix:
                raise ConfigurationError("prefix given both in the URL and as an argument")
            prefix = prefix or url_prefix
            # The patient clients get what is left of the budget after one fast call.
            rest = max(self.socket_timeout, self.budget - self.socket_timeout)
            try:
                if client is None:
                    client = self._build(redis.Redis, url, self.socket_timeout)
                    self._own.append(client)
                    if retry_slow:
                        patient = self._build(redis.Redis, url, rest)
                        self._own.append(patient)
                if async_client is None:
                    async_client = self._build(redis.asyncio.Redis, url, self.socket_timeout)
                    self._own_async.append(async_client)
                    if retry_slow:
                        async_patient = self._build(redis.asyncio.Redis, url, rest)
                        self._own_async.append(async_patient)
            except (ValueError, TypeError) as exc:
                # Not chained: the driver's message may quote the URL, password included.
                raise ConfigurationError(f"invalid Redis URL ({type(exc).__name__})") from None
        if client is None and async_client is None:
            raise ConfigurationError("pass a Redis client, an async client, or a url")
        self.prefix = check_part("prefix", prefix or "kg")
        self.client = client
        self.async_client = async_client
        self._patient = patient if patient is not None else client
        self._apatient = async_patient if async_patient is not None else async_client

    @staticmethod
    def _build(cls: Any, url: str, timeout: float) -> Any:
        from redis.backoff import NoBackoff

        if cls.__module__.startswith("redis.asyncio"):
            from redis.asyncio.retry import Retry
        else:
            from redis.retry import Retry  # type: ignore[assignment]
        return cls.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    # -- failures ---------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> str:
        if isinstance(exc, self._slow):
            self.stats.incr("timeouts")
            return "slow"
        if isinstance(exc, self._down):
            self.stats.incr("disconnects")
            return "down"
        self.stats.incr("errors")
        return "error"

    def _failure(self, kind: str, exc: BaseException) -> StoreUnavailable:
        name = type(exc).__name__
        if kind == "slow":
            return BackendSlow(f"Redis did not answer within {self.budget:g}s ({name})")
        if kind == "down":
            return BackendDown(f"Redis is unreachable ({name})")
        return StoreUnavailable(f"Redis failed ({name})")

    def _again(self, kind: str, started: float, reconnected: bool) -> bool:
        """Whether a failed call of this ``kind`` is tried once more."""
        if kind == "down":
            return not reconnected
        return (
            kind == "slow"
            and self._retry_slow
            and time.monotonic() - started < self.budget - self.socket_timeout / 10
        )

    def _call(self, op: Callable[[Any], _T], client: Any) -> _T:
        """``op(client)``, retried as the module docstring says; raises StoreUnavailable."""
        started = time.monotonic()
        reconnected = slow = False
        while True:
            try:
                return op(self._patient if slow else client)
            except self._errors as exc:
                kind = self._classify(exc)
                if not self._again(kind, started, reconnected):
                    raise self._failure(kind, exc) from exc
            self.stats.incr("retries")
            reconnected = reconnected or kind == "down"
            slow = slow or kind == "slow"

    async def _acall(self, op: Callable[[Any], Awaitable[_T]], client: Any) -> _T:
        """Async :meth:`_call`."""
        started = time.monotonic()
        reconnected = slow = False
        while True:
            try:
                return await op(self._apatient if slow else client)
            except self._errors as exc:
                kind = self._classify(exc)
                if not self._again(kind, started, reconnected):
                    raise self._failure(kind, exc) from exc
            self.stats.incr("retries")
            reconnected = reconnected or kind == "down"
            slow = slow or kind == "slow"

    # -- clients ----------------------------------------------------------------------------

    def _sync(self) -> Redis:
        if self.client is None:
            raise ConfigurationError("this Redis backend has no sync client; use the a* methods")
        return self.client

    def _async(self) -> AsyncRedis:
        if self.async_client is None:
            raise ConfigurationError("this Redis backend has no async client; use sync methods")
        return self.async_client

    def close(self) -> None:
        """Close the sync clients this object created from a URL (not one passed in)."""
        for c in self._own:
            c.close()

    async def aclose(self) -> None:
        """Close the clients this object created from a URL (not ones passed in)."""
        self.close()
        for c in self._own_async:
            await c.aclose()
