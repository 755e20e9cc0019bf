"""A key store in Redis or Redis Cluster: ``redis://``, ``rediss://``, ``redis+cluster://``.

For deployments of several processes or machines: keys, revocations (pushed by pub/sub, see
:mod:`keyguard.stores.redis_invalidation`) and rate-limit state all live in one Redis.

**Layout** (``P`` is the prefix, ``kg`` by default; no key material anywhere, only digests):

* ``P:k:{<key id>}`` — a hash per key: ``r`` (the record as JSON), ``v`` (its version) and
  ``lu`` (``last_used_at``, kept outside the version scheme so that ``touch`` never conflicts
  with a lifecycle change); ``P:k:{<key id>}:audit`` — the key's audit trail (a list of JSON
  events); ``P:k:{<key id>}:idem:<token>`` — an idempotency entry (JSON, with a TTL: it is
  meant to be forgotten). The ``{<key id>}`` hash tag puts them in one Cluster slot, so a
  change, its audit event and its idempotency entry commit in **one script**: atomically, with
  the optimistic version check, and with the invalidation published from inside it (a message
  goes out iff the change committed).
* ``{P}:created``, ``{P}:owner:<owner>``, ``{P}:by:<creator>`` — sorted sets of key ids (score
  ``created_at``, so Redis orders equal scores by id: exactly the listing order), and
  ``{P}:audit`` (the newest events of every key), ``{P}:settings`` — all under the ``{P}``
  hash tag: one slot for everything that spans keys. Listing reads these indexes and then the
  records (pipelined), never ``KEYS`` or ``SCAN`` (:mod:`keyguard.stores.redis_listing`).

The indexes are **hints**: a key is added to the indexes it will belong to *before* its record
is written, and removed from the ones it left *after*; a listing checks every filter against
the record it fetched. So a crash between the two writes leaves at worst an extra hint (skipped,
and cleaned up when seen), never a key missing from a listing. On a standalone Redis the
cross-key audit feed is written by the same script as the change; on a Cluster it lives in
another slot and is written just after (a crash in between leaves the event in the key's own
trail but not in the feed). Nothing here has a TTL: records and audit trails must persist (the
rate limiter's counters, which are meant to expire, have TTLs).

**Failures** reach callers as :class:`~keyguard.core.errors.StoreUnavailable`, within the
socket timeout (``socket_timeout``, default 0.5 s; ``?timeout=`` in the URL): the verifier
answers 503 ``auth_unavailable`` then, never 401. Reads are retried once on a connection error
(a pooled socket that died with a restart); writes never are — a write whose reply was lost
raises instead of being applied twice, so a management operation that cannot be confirmed
reports failure. redis-py reconnects by itself, so the store recovers when Redis returns; on a
Cluster, ``MOVED``/``ASK`` redirections and failovers are followed by the driver.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyguard.core.errors import (
    AlreadyProcessed,
    ConfigurationError,
    ConflictError,
    KeyExists,
    KeyNotFound,
    StoreUnavailable,
)
from keyguard.core.records import AuditEvent, IdempotencyEntry, KeyRecord
from keyguard.stores._idempotency import check_entry, decode_entry, encode_entry
from keyguard.stores.base import KeyStore, check_claim, check_limit
from keyguard.stores.redis_codec import (
    TOUCH,
    WRITE,
    decode_record,
    encode_event,
    encode_record,
    fmt,
    read_event,
)
from keyguard.stores.redis_invalidation import InvalidationListener
from keyguard.stores.redis_listing import RedisListing
from keyguard.stores.redis_usage import RedisUsage

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["RedisStore"]

DEFAULT_TIMEOUT: Final = 0.5
DEFAULT_MAX_AUDIT: Final = 100_000
_SCHEMES: Final = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_PREFIX_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."
)


class RedisStore(RedisListing, RedisUsage, KeyStore):
    """Keys in Redis (see the module docstring for the layout and the failure model).

    ``url`` is ``redis://[:password@]host:6379/0``, ``rediss://…`` (TLS), or
    ``redis+cluster://host:7000`` / ``rediss+cluster://…`` for a Redis Cluster (any node; the
    others are discovered). Query options: ``prefix`` (default ``kg``), ``timeout`` (socket
    connect and read timeout in seconds, default 0.5), ``max_audit`` (length of the cross-key
    audit feed, default 100,000). Clients are built lazily, after a ``fork``.
    """

    scheme = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "kg",
        timeout: float = DEFAULT_TIMEOUT,
        max_audit: int = DEFAULT_MAX_AUDIT,
    ) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                "a Redis store URL starts with redis://, rediss://, redis+cluster:// or "
                "rediss+cluster://"
            )
        if not isinstance(prefix, str) or not prefix or not set(prefix) <= _PREFIX_CHARS:
            raise ConfigurationError("prefix must be letters, digits, '_', '-' or '.'")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ConfigurationError("timeout must be a number of seconds")
        if not 0 < timeout < math.inf:
            raise ConfigurationError("timeout must be a positive number of seconds")
        if isinstance(max_audit, bool) or not isinstance(max_audit, int) or max_audit < 1:
            raise ConfigurationError("max_audit must be an integer >= 1")
        try:
            import redis  # noqa: F401 - fail here, with the extra's name, not on first use
        except ImportError as exc:
            raise ConfigurationError(
                "the Redis store needs redis-py: pip install 'keyguard[redis]'"
            ) from exc
        self.cluster = scheme.endswith("+cluster")
        if self.cluster and parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError("a Redis Cluster has only database 0: drop the URL's path")
        self._url = urlunsplit(parts._replace(scheme=scheme.removesuffix("+cluster")))
        self._shown = _redacted(self._url)
        self.prefix = prefix
        self.timeout = float(timeout)
        self.max_audit = max_audit
        self._tag = "{" + prefix + "}"
        self.channel = f"{prefix}:invalidate"
        self._lock = threading.Lock()
        self._client: Any = None
        self._aclient: Any = None
        self._aclient_loop: Any = None
        self._scripts: dict[str, Any] = {}
        self._listener: InvalidationListener | None = None
        import redis as redis_module

        # A Cluster client that reaches none of its nodes raises RedisClusterException, which
        # is not a RedisError.
        self._errors: tuple[type[BaseException], ...] = (
            redis_module.exceptions.RedisError,
            redis_module.exceptions.RedisClusterException,
            OSError,
        )
        self._connection_errors: tuple[type[BaseException], ...] = (
            redis_module.exceptions.ConnectionError,
            redis_module.exceptions.RedisClusterException,
        )

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        parts = urlsplit(url)
        options: dict[str, Any] = {}
        rest: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "prefix":
                options["prefix"] = value
            elif name == "timeout":
                try:
                    options["timeout"] = float(value)
                except ValueError:
                    raise ConfigurationError("the timeout option must be a number") from None
            elif name == "max_audit":
                try:
                    options["max_audit"] = int(value)
                except ValueError:
                    raise ConfigurationError("the max_audit option must be an integer") from None
            else:
                rest.append((name, value))
        return cls(urlunsplit(parts._replace(query=urlencode(rest))), **options)

    # -- clients -----------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            # No driver-level retries: reads retry once themselves, writes never (see above).
            "retry": Retry(NoBackoff(), 0),
        }

    def _sync(self) -> Any:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._build_sync()
            return self._client

    def _build_sync(self) -> Any:
        try:
            if self.cluster:
                from redis.cluster import RedisCluster

                return RedisCluster.from_url(self._url, **self._options())
            import redis

            return redis.Redis.from_url(self._url, **self._options())
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid Redis URL ({type(exc).__name__})") from None
        except self._errors as exc:  # a Cluster client contacts a node at once
            raise self._unavailable(exc) from None

    def _async(self) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        client = self._aclient
        if client is not None and self._aclient_loop is loop:
            return client
        # One async client per event loop (clients are bound to the loop they first ran on).
        try:
            if self.cluster:
                from redis.asyncio.cluster import RedisCluster as AsyncCluster

                client = AsyncCluster.from_url(self._url, **self._async_options())
            else:
                import redis.asyncio

                client = redis.asyncio.Redis.from_url(self._url, **self._async_options())
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid Redis URL ({type(exc).__name__})") from None
        self._aclient, self._aclient_loop = client, loop
        return client

    def _async_options(self) -> dict[str, Any]:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        options = self._options()
        options["retry"] = AsyncRetry(NoBackoff(), 0)
        return options

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        # The exception type only: driver messages can carry host names, passwords and more.
        return StoreUnavailable(
            f"the Redis store {self._shown} is unavailable ({type(exc).__name__})"
        )

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._sync().register_script(source)
        return script

    # -- key names ---------------------------------------------------------------------------
    def _rec(self, key_id: str) -> str:
        return f"{self.prefix}:k:{{{key_id}}}"

    def _key_audit(self, key_id: str) -> str:
        return f"{self.prefix}:k:{{{key_id}}}:audit"

    def _key_idempotency(self, key_id: str, token: str) -> str:
        return f"{self.prefix}:k:{{{key_id}}}:idem:{token}"

    def _idx(self, name: str) -> str:
        return f"{self._tag}:{name}"

    # -- request path ------------------------------------------------------------------------
    def get(self, key_id: str) -> KeyRecord | None:
        for attempt in (0, 1):
            try:
                fields = self._sync().hmget(self._rec(key_id), "r", "lu")
                return decode_record(fields)
            except self._connection_errors as exc:
                if attempt:
                    raise self._unavailable(exc) from None
            except self._errors as exc:
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def aget(self, key_id: str) -> KeyRecord | None:
        for attempt in (0, 1):
            try:
                fields = await self._async().hmget(self._rec(key_id), "r", "lu")
                return decode_record(fields)
            except self._connection_errors as exc:
                if attempt:
                    raise self._unavailable(exc) from None
            except self._errors as exc:
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def touch(self, key_id: str, at: float) -> None:
        try:
            self._script("touch", TOUCH)(keys=[self._rec(key_id)], args=[fmt(at)])
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def atouch(self, key_id: str, at: float) -> None:
        try:
            client = self._async()
            await client.eval(TOUCH, 1, self._rec(key_id), fmt(at))
        except self._errors as exc:
            raise self._unavailable(exc) from None

    # -- management --------------------------------------------------------------------------
    def create(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        check_entry(idempotency, record)
        # A cheap early answer (and no index hints for a duplicate); with an idempotency entry
        # the script decides, so that a retry learns it was already processed.
        if idempotency is None:
            try:
                if self._sync().exists(self._rec(record.key_id)):
                    raise KeyExists(f"key {record.key_id} exists already")
            except self._errors as exc:
                raise self._unavailable(exc) from None
        self._write("create", record, None, audit, idempotency)

    def update(
        self,
        record: KeyRecord,
        *,
        audit: AuditEvent | None = None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        check_entry(idempotency, record)
        before = self.get(record.key_id)
        if before is None:
            raise KeyNotFound(f"no key {record.key_id}")
        self._write("update", record, before, audit, idempotency)

    def get_idempotency(self, key_id: str, token: str, *, now: float) -> IdempotencyEntry | None:
        for attempt in (0, 1):
            try:
                raw = self._sync().get(self._key_idempotency(key_id, token))
                break
            except self._connection_errors as exc:
                if attempt:
                    raise self._unavailable(exc) from None
            except self._errors as exc:
                raise self._unavailable(exc) from None
        if raw is None:
            return None
        entry = decode_entry(raw)
        return entry if entry.expires_at > now else None

    def _write(
        self,
        mode: str,
        record: KeyRecord,
        before: KeyRecord | None,
        audit: AuditEvent | None,
        idempotency: IdempotencyEntry | None = None,
    ) -> None:
        record_json = encode_record(record)
        audit_json = encode_event(audit) if audit is not None else ""
        entry_json = encode_entry(idempotency) if idempotency is not None else ""
        ttl_ms = (
            max(1, math.ceil((idempotency.expires_at - idempotency.at) * 1000))
            if idempotency is not None
            else 0
        )
        new_indexes = self._indexes(record)
        old_indexes = self._indexes(before) if before is not None else set()
        moved = before is not None and before.created_at != record.created_at
        key_id = record.key_id
        lu = "" if record.last_used_at is None else fmt(record.last_used_at)
        token = idempotency.token if idempotency is not None else ""
        keys = [self._rec(key_id), self._key_audit(key_id), self._key_idempotency(key_id, token)]
        if not self.cluster:
            keys.append(self._idx("audit"))
        try:
            client = self._sync()
            # Hints first: a key is never missing from a listing it belongs to.
            self._add_hints(
                client,
                key_id,
                record.created_at,
                new_indexes if moved else new_indexes - old_indexes,
            )
            result = int(
                self._script("write", WRITE)(
                    keys=keys,
                    args=[
                        mode,
                        str(record.version),
                        record_json,
                        lu,
                        audit_json,
                        self.channel,
                        str(self.max_audit),
                        key_id,
                        entry_json,
                        str(ttl_ms),
                        fmt(idempotency.at) if idempotency is not None else "0",
                    ],
                )
            )
            if result == 1:
                if self.cluster and audit_json:
                    pipe = client.pipeline(transaction=False)
                    pipe.lpush(self._idx("audit"), audit_json)
                    pipe.ltrim(self._idx("audit"), 0, self.max_audit - 1)
                    pipe.execute()
                stale = old_indexes - new_indexes
                if stale:
                    self._drop_hints(client, key_id, stale)
            elif result == 0:
                # Lost a race with another create of the same id: our hints may carry our
                # record's created_at; give them back the stored record's.
                stored = self.get(key_id)
                if stored is not None:
                    self._add_hints(client, key_id, stored.created_at, self._indexes(stored))
        except self._errors as exc:
            raise self._unavailable(exc) from None
        if result == 0:
            raise KeyExists(f"key {key_id} exists already")
        if result == -1:
            raise KeyNotFound(f"no key {key_id}")
        if result == -2:
            raise ConflictError(f"key {key_id} was changed concurrently")
        if result == -3:
            raise AlreadyProcessed(
                f"a request with this idempotency key already changed key {key_id}",
                key_id=key_id,
            )

    def add_audit(self, event: AuditEvent) -> None:
        data = encode_event(event)
        try:
            client = self._sync()
            client.rpush(self._key_audit(event.key_id), data)
            pipe = client.pipeline(transaction=False)
            pipe.lpush(self._idx("audit"), data)
            pipe.ltrim(self._idx("audit"), 0, self.max_audit - 1)
            pipe.execute()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def audit(self, *, key_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        check_limit(limit)
        try:
            client = self._sync()
            if key_id is not None:
                raw = client.lrange(self._key_audit(key_id), -limit, -1)
                events = [read_event(r) for r in reversed(raw)]
            else:
                raw = client.lrange(self._idx("audit"), 0, limit - 1)
                events = [read_event(r) for r in raw]
        except self._errors as exc:
            raise self._unavailable(exc) from None
        # Newest first by time; for equal times, the last appended first (stable sort keeps it).
        events.sort(key=lambda e: e.at, reverse=True)
        return events

    # -- settings ----------------------------------------------------------------------------
    def get_setting(self, name: str) -> str | None:
        try:
            value = self._sync().hget(self._idx("settings"), name)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return None if value is None else value.decode("utf-8")

    def set_setting(self, name: str, value: str, *, only_if_absent: bool = False) -> str:
        try:
            client = self._sync()
            if only_if_absent:
                client.hsetnx(self._idx("settings"), name, value)
                stored = client.hget(self._idx("settings"), name)
                return str(stored.decode("utf-8"))
            client.hset(self._idx("settings"), name, value)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return value

    # -- once-only markers -------------------------------------------------------------------
    def _notification(self, name: str) -> str:
        return f"{self.prefix}:notified:{name}"

    def claim_notification(self, name: str, ttl: float, *, now: float | None = None) -> bool:
        """``SET NX PX``: atomic across every process and machine; the ``ttl`` runs on Redis's
        clock (``now`` is ignored)."""
        check_claim(name, ttl)
        del now
        try:
            claimed = self._sync().set(
                self._notification(name), "1", nx=True, px=max(1, math.ceil(ttl * 1000))
            )
        except self._errors as exc:
            raise self._unavailable(exc) from None
        return bool(claimed)

    def release_notification(self, name: str) -> None:
        try:
            self._sync().delete(self._notification(name))
        except self._errors as exc:
            raise self._unavailable(exc) from None

    # -- invalidation ------------------------------------------------------------------------
    def subscribe_invalidations(self, callback: Callable[[str | None], None]) -> bool:
        with self._lock:
            if self._listener is None:
                self._listener = InvalidationListener(self._subscriber, self.channel)
            listener = self._listener
        listener.add(callback)
        return True

    def _subscriber(self) -> Redis:
        import redis

        options = self._options()
        options["health_check_interval"] = 5
        if not self.cluster:
            return redis.Redis.from_url(self._url, **options)
        # Any node of a Cluster receives every published message: subscribe on one we know.
        cluster = self._sync()
        node = cluster.get_random_node()
        return redis.Redis(host=node.host, port=node.port, **self._node_options(), **options)

    def _node_options(self) -> dict[str, Any]:
        parts = urlsplit(self._url)
        extra: dict[str, Any] = {}
        if parts.password:
            extra["password"] = parts.password
        if parts.username:
            extra["username"] = parts.username
        if parts.scheme == "rediss":
            extra["ssl"] = True
        return extra

    @property
    def invalidation_listener(self) -> InvalidationListener | None:
        """The pub/sub listener, once a cache subscribed (for tests and diagnostics)."""
        return self._listener

    # -- lifecycle ---------------------------------------------------------------------------
    def ping(self) -> None:
        try:
            self._sync().ping()
        except self._errors as exc:
            raise self._unavailable(exc) from None

    async def aclose(self) -> None:
        client, self._aclient, self._aclient_loop = self._aclient, None, None
        if client is not None:
            with contextlib.suppress(*self._errors):
                await client.aclose()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*self._errors):
                client.close()

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "redis"
        return f"RedisStore({self._shown!r}, {kind}, prefix={self.prefix!r})"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return urlunsplit(parts._replace(query=""))
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc, query=""))
