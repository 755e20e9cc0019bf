"""Redis clients for the Redis backends, and what to do when a call fails.

Built from a URL (``redis://host:6379/0?prefix=kg``; ``rediss://`` for TLS, ``unix://`` for a
socket, ``redis+cluster://node:7000`` or ``rediss+cluster://`` for a Redis Cluster, any node
as the entry point), a backend gets a sync and an async client with short timeouts
(``socket_timeout``, 100 ms by default), and a second, *patient* pair whose timeout is the
rest of the decision's time ``budget`` (500 ms by default). The driver's own retries are off:
this module decides.

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
``redis`` is imported only when a backend is built. A sync Cluster client reads the cluster's
layout when it is built, so one made from a URL is built on first use: a backend made while
the Cluster is unreachable answers :class:`BackendDown` until it is back, like a standalone
Redis that is down, instead of failing where it is constructed. Scripts are made with no
client of their own (:func:`sync_script`, :func:`async_script`) and run on whichever client a call
picks, so they never force a connection either.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit import BackendDown, BackendSlow, Counters
from keyguard.core.ratelimit.settings import DEFAULT_BUDGET, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis
    from redis.commands.core import AsyncScript, Script

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_TIMEOUT",
    "URL_SCHEMES",
    "RedisClients",
    "async_script",
    "check_part",
    "now_arg",
    "split_url",
    "sync_script",
]

#: The URL schemes of the Redis backends (the ``+cluster`` ones for a Redis Cluster).
URL_SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")

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


def split_url(url: str) -> tuple[str, str | None, bool]:
    """``(url for the driver, prefix, cluster)``: the URL without ``?prefix=`` and with a
    ``+cluster`` scheme made plain, the prefix it named, and whether it names a Redis Cluster.
    ConfigurationError for any scheme but :data:`URL_SCHEMES`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ConfigurationError(
            "Redis URL must start with redis://, rediss://, unix://, redis+cluster:// or "
            "rediss+cluster://"
        )
    cluster = scheme.endswith("+cluster")
    if cluster and parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError("a Redis Cluster has only database 0: drop the URL's path")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = None
    rest = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    # Not urlunsplit: it turns unix:///path (no host) into unix:/path, which redis-py refuses.
    plain = f"{scheme.removesuffix('+cluster')}://{parts.netloc}{parts.path}"
    if rest:
        plain += "?" + urlencode(rest)
    return plain, prefix, cluster


def sync_script(source: str) -> Script:
    """A sync script object bound to no client: pass ``client=`` to every call."""
    from redis.commands.core import Script

    # Bytes: a text script would ask its client for an encoder, a Cluster client its nodes.
    return Script(None, source.encode())  # type: ignore[arg-type]


def async_script(source: str) -> AsyncScript:
    """:func:`sync_script` for the async clients."""
    from redis.commands.core import AsyncScript

    return AsyncScript(None, source.encode())  # type: ignore[arg-type]


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
        from redis.exceptions import RedisClusterException

        self._slow: tuple[type[BaseException], ...] = (redis.TimeoutError, TimeoutError)
        # A Cluster client that reaches none of its nodes raises RedisClusterException.
        self._down: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            ConnectionError,
            RedisClusterException,
        )
        self._errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            OSError,
            RedisClusterException,
        )
        self._retry_slow = retry_slow
        self.stats = Counters(STATS)
        self._own: list[Any] = []
        #: Builds a URL's async clients for one more event loop (they are bound to the loop
        #: they first run on): the loop the clients in use belong to, and every loop's pair.
        self._abuild: Callable[[], tuple[Any, Any]] | None = None
        self._acurrent: tuple[Any, Any, Any] = (None, None, None)
        self._aloops: dict[Any, tuple[Any, Any]] = {}
        self._aspare: tuple[Any, Any] | None = None  # built, no loop yet
        #: Builds the sync clients of a Cluster URL on first use (see the module docstring).
        self._connect: Callable[[], tuple[Any, Any]] | None = None
        self._connecting = threading.Lock()
        self.cluster = False
        patient = async_patient = None
        if url is not None:
            url, url_prefix, self.cluster = split_url(url)
            if prefix is not None and url_prefix is not None and prefix != url_prefix:
                raise ConfigurationError("prefix given both in the URL and as an argument")
            prefix = prefix or url_prefix
            # The patient clients get what is left of the budget after one fast call.
            rest = max(self.socket_timeout, self.budget - self.socket_timeout)
            if self.cluster:
                from redis.asyncio.cluster import RedisCluster as AsyncCluster
                from redis.cluster import RedisCluster

                sync_cls: Any = RedisCluster
                async_cls: Any = AsyncCluster
            else:
                sync_cls, async_cls = redis.Redis, redis.asyncio.Redis
            try:
                if client is None:
                    if self.cluster:
                        self._connect = self._connector(sync_cls, url, rest)
                    else:
                        client = self._build(sync_cls, url, self.socket_timeout)
                        self._own.append(client)
                        if retry_slow:
                            patient = self._build(sync_cls, url, rest)
                            self._own.append(patient)
                if async_client is None:
                    self._abuild = self._connector(async_cls, url, rest)
                    async_client, async_patient = self._aspare = self._abuild()
            except (ValueError, TypeError) as exc:
                # Not chained: the driver's message may quote the URL, password included.
                raise ConfigurationError(f"invalid Redis URL ({type(exc).__name__})") from None
        if client is None and async_client is None:
            raise ConfigurationError("pass a Redis client, an async client, or a url")
        self.prefix = check_part("prefix", prefix or "kg")
        self.client = client
        self.async_client: AsyncRedis | None = async_client
        self._patient = patient if patient is not None else client
        self._apatient = async_patient if async_patient is not None else async_client

    def _connector(self, cls: Any, url: str, rest: float) -> Callable[[], tuple[Any, Any]]:
        """What builds a URL's clients of ``cls``: the fast one and the patient one (the same
        one when slow calls are not retried)."""

        def connect() -> tuple[Any, Any]:
            fast = self._build(cls, url, self.socket_timeout)
            if not self._retry_slow:
                return fast, fast
            try:
                return fast, self._build(cls, url, rest)
            except BaseException:
                if not cls.__module__.startswith("redis.asyncio"):  # nothing to await here
                    fast.close()
                raise

        return connect

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
                return await op(self._patient_of(client) if slow else client)
            except self._errors as exc:
                kind = self._classify(exc)
                if not self._again(kind, started, reconnected):
                    raise self._failure(kind, exc) from exc
            self.stats.incr("retries")
            reconnected = reconnected or kind == "down"
            slow = slow or kind == "slow"

    # -- clients ----------------------------------------------------------------------------

    def _sync(self) -> Redis:
        client = self.client
        if client is not None:
            return client
        if self._connect is None:
            raise ConfigurationError("this Redis backend has no sync client; use the a* methods")
        with self._connecting:
            if self.client is None:
                try:
                    fast, patient = self._connect()
                except (ValueError, TypeError) as exc:
                    raise ConfigurationError(f"invalid Redis URL ({type(exc).__name__})") from None
                except self._errors as exc:
                    # Not built: the next call tries again (the Cluster may be back by then).
                    raise self._failure(self._classify(exc), exc) from None
                self._own.extend({id(c): c for c in (fast, patient)}.values())
                self._patient = patient
                self.client = fast
            return cast("Redis", self.client)

    def _async(self) -> AsyncRedis:
        if self._abuild is None:
            if self.async_client is None:
                raise ConfigurationError("this Redis backend has no async client; use sync methods")
            return self.async_client
        loop = asyncio.get_running_loop()
        current = self._acurrent  # one read: another thread may rebind it meanwhile
        if current[0] is loop:
            return current[1]  # type: ignore[no-any-return]
        return self._abind(loop)

    def _abind(self, loop: Any) -> AsyncRedis:
        """The async clients of ``loop``: the pair built with this object for the first loop to
        ask, a new pair for any other. Those of loops since closed are dropped (they cannot be
        closed any more: their sockets go with the garbage)."""
        assert self._abuild is not None
        with self._connecting:
            pair = self._aloops.get(loop)
            if pair is None:
                for old in [other for other in self._aloops if other.is_closed()]:
                    del self._aloops[old]
                pair, self._aspare = self._aspare or self._abuild(), None
                self._aloops[loop] = pair
            self.async_client, self._apatient = pair
            self._acurrent = (loop, *pair)
            return cast("AsyncRedis", pair[0])

    def _patient_of(self, client: Any) -> Any:
        """The patient client paired with the async ``client``."""
        for fast, patient in self._aloops.values():
            if fast is client:
                return patient
        return self._apatient if client is self.async_client else client

    def close(self) -> None:
        """Close the sync clients this object created from a URL (not one passed in)."""
        for c in self._own:
            c.close()

    async def aclose(self) -> None:
        """Close the sync clients and the running event loop's async ones that this object
        created from a URL (not ones passed in)."""
        self.close()
        if self._abuild is None:
            return
        loop = asyncio.get_running_loop()
        with self._connecting:
            pair = self._aloops.pop(loop, None)
            if pair is None:
                pair, self._aspare = self._aspare, None
            if self._acurrent[0] is loop:
                self._acurrent = (None, None, None)
        for c in {id(c): c for c in pair or ()}.values():
            await c.aclose()
