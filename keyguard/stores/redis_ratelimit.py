"""Distributed rate limits in Redis: one Lua script, one round trip, Redis's clock.

:class:`RedisRateLimiter` runs the decision of :mod:`keyguard.core.ratelimit` inside Redis,
step for step (the Python function is the reference; a differential test holds the two to
identical decisions and header values). Each request is one ``EVALSHA`` (redis-py's
``Script`` falls back to loading the script after a ``SCRIPT FLUSH`` or a failover). The time
is Redis's own ``TIME``, so every app server shares one clock; Redis 7 replicates the
script's effects, not the script, so reading the clock before writing is safe.

Keys, per bucket (a key id or owner id; never key material): ``<prefix>:rl:{<bucket>}:log``,
a sorted set holding one member per admitted unit of the exact windows (score: µs), and
``<prefix>:rl:{<bucket>}:state``, a hash with the last time seen, a member sequence and the
long-window buckets. The shared ``{<bucket>}`` hash tag puts both in one Redis Cluster slot.
Both expire on their own once idle: a hit leaves them at least the plan's retention to live
(the longest window, one bucket and a second) plus a slack of half that retention, at most an
hour; the state's ``exp`` field keeps when they expire (Redis's clock), so their TTLs are set
again only when less than the retention is left (once per slack at most, instead of two
``PEXPIRE`` on every hit; a log the hit recreated after it had emptied is given the state's).

Owner (tenant) limits: :meth:`RedisRateLimiter.hit_pair` decides a key and its owner together
in one script, so every key of the pair lives under the *owner's* hash tag: the owner's state
in ``<prefix>:rl:{<owner bucket>}:log``/``:state`` (the same keys as a plain ``hit`` on that
bucket), the key's in ``<prefix>:rl:{<owner bucket>}:k:<key id>:log``/``:state``. Turning
owner limits on therefore starts every owned key's counts afresh in those new Redis keys.

**A slow Redis is not a down Redis.** A call that gets no reply within ``socket_timeout``
(100 ms by default) is retried on a patient connection within the decision's ``budget``
(500 ms in all by default); refused or dropped connections get one immediate reconnect and
then raise :class:`~keyguard.core.ratelimit.BackendDown` at once (see
:mod:`keyguard.stores.redis_client`). A retried hit is never counted twice: each hit carries
a *done key*, ``<prefix>:rl:{<bucket>}:done:<request token>``, under which the script keeps
its reply for ``done_ttl`` seconds (``max(2 s, 4 × budget)``), and a second run of the same
request returns that reply instead of deciding again, whichever of the two runs first. The
cost: one short-lived key of about 140 bytes per hit (some 3 MB at 10,000 hits/s with the
defaults) and two commands inside the script. Wrap the limiter in
:class:`keyguard.core.ratelimit.ResilientLimiter` to decide what happens when Redis does fail.
``redis`` is imported only when this module is used.

Clients: pass a ``redis.Redis`` (WSGI), a ``redis.asyncio.Redis`` (ASGI), or both, or a URL
(``redis://host:6379/0?prefix=kg``), from which both are built with the timeouts above.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from keyguard.core.errors import ConfigurationError
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    RateDecision,
    Window,
    WindowPlan,
    pair_plan,
    plan_for,
)
from keyguard.stores.redis_bruteforce import RedisBruteForceGuard
from keyguard.stores.redis_client import (
    DEFAULT_TIMEOUT,
    RedisClients,
    async_script,
    check_part,
    now_arg,
    sync_script,
)
from keyguard.stores.redis_scripts import PAIR_RATE_LIMIT_LUA, RATE_LIMIT_LUA

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

__all__ = ["PAIR_RATE_LIMIT_LUA", "RATE_LIMIT_LUA", "RedisBruteForceGuard", "RedisRateLimiter"]

#: The shortest time a done key is kept, whatever the budget.
MIN_DONE_TTL: Final = 2.0


class _Tokens:
    """Request tokens, unique across processes: a random prefix (drawn again in a forked
    child, so workers forked from one parent never share it) and a counter."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = os.urandom(9).hex()
        self.count = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.count):x}"


_token = _Tokens()


def _bad_cost(cost: object) -> None:
    raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")


#: id(plan) -> (plan, its script argument). Plans live as long as plan_for's cache keeps
#: them; the identity check catches an id() reused after one was freed.
_PLAN_ARGS: dict[int, tuple[WindowPlan, str]] = {}


def _plan_arg(plan: WindowPlan) -> str:
    """The plan as the scripts take it: one comma-separated argument (see redis_scripts)."""
    known = _PLAN_ARGS.get(id(plan))
    if known is not None and known[0] is plan:
        return known[1]
    arg = ",".join(plan.redis_args)
    if len(_PLAN_ARGS) >= 1024:
        _PLAN_ARGS.clear()
    _PLAN_ARGS[id(plan)] = (plan, arg)
    return arg


class RedisRateLimiter(RedisClients):
    """The rate limiter of :mod:`keyguard.core.ratelimit`, shared by every process via Redis.

    ``hit``/``peek``/``reset`` use the sync client, ``ahit``/``apeek``/``areset`` the async
    one. Raises :class:`~keyguard.core.ratelimit.BackendDown` when Redis refuses or drops the
    connection, :class:`~keyguard.core.ratelimit.BackendSlow` when it does not answer within
    ``budget`` seconds (a late call retried once), and ``StoreUnavailable`` on any other
    Redis error. ``socket_timeout`` and ``budget`` (default 0.5 s, or ``socket_timeout`` if
    longer) shape the clients built from ``url``; clients passed in keep their own timeouts
    (``budget`` still bounds the retries). ``now``
    (seconds) replaces Redis's clock and exists for tests only: production decisions must use
    one shared clock.
    """

    def __init__(
        self,
        client: Redis | None = None,
        *,
        async_client: AsyncRedis | None = None,
        url: str | None = None,
        prefix: str | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        budget: float | None = None,
    ) -> None:
        super().__init__(client, async_client, url, prefix, socket_timeout, budget)
        #: Seconds a hit's reply is kept for a retry of the same hit (see the module doc).
        self.done_ttl = max(MIN_DONE_TTL, 4 * self.budget)
        self._done_ms = str(round(self.done_ttl * 1000))
        self._script = sync_script(RATE_LIMIT_LUA)
        self._ascript = async_script(RATE_LIMIT_LUA)
        self._pair_script = sync_script(PAIR_RATE_LIMIT_LUA)
        self._apair_script = async_script(PAIR_RATE_LIMIT_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = DEFAULT_TIMEOUT,
        budget: float | None = None,
    ) -> RedisRateLimiter:
        """Build from ``redis://host:6379/0?prefix=kg`` (sync and async clients)."""
        return cls(url=url, socket_timeout=socket_timeout, budget=budget)

    def __repr__(self) -> str:
        return (
            f"RedisRateLimiter(prefix={self.prefix!r}, socket_timeout={self.socket_timeout:g}, "
            f"budget={self.budget:g})"
        )

    def keys(self, bucket: str) -> list[str]:
        """The Redis keys holding ``bucket``'s state (one Cluster slot)."""
        base = f"{self.prefix}:rl:{{{check_part('bucket', bucket)}}}"
        return [f"{base}:log", f"{base}:state"]

    def pair_keys(self, key_bucket: str, owner_bucket: str) -> list[str]:
        """The Redis keys of a :meth:`hit_pair`: the key's log and state, then the owner's.

        All four share the owner's hash tag (one Cluster slot, as a script needs): the owner's
        are ``keys(owner_bucket)``, the key's ``<prefix>:rl:{<owner_bucket>}:k:<key_bucket>:*``.
        So a key decided with its owner counts in other Redis keys than the same key decided
        alone (``keys(key_bucket)``): enabling owner limits starts keys' counts afresh.
        """
        owner = f"{self.prefix}:rl:{{{check_part('bucket', owner_bucket)}}}"
        key = f"{owner}:k:{check_part('bucket', key_bucket)}"
        if key_bucket == owner_bucket:
            raise ConfigurationError("a key and its owner need two distinct rate-limit buckets")
        return [f"{key}:log", f"{key}:state", f"{owner}:log", f"{owner}:state"]

    def _done_key(self, keys: list[str]) -> str:
        # The state key is ``<prefix>:rl:{<tag>}:state``, or ``...:k:<key>:state`` for a pair
        # (whose tag is the owner's): the done key shares that hash tag.
        tag_end = keys[-1].index("}") + 1
        return f"{keys[-1][:tag_end]}:done:{_token()}"

    @staticmethod
    def _decision(plan: WindowPlan, reply: bytes | str) -> RateDecision:
        # The scripts reply "allowed,retry,mask,remaining,reset,..." (bytes, or text from a
        # client built with decode_responses=True).
        v = [int(x) for x in reply.split(b"," if reply.__class__ is bytes else ",")]  # type: ignore[arg-type]
        allowed = v[0] == 1
        retry = None if allowed or v[1] < 0 else v[1]
        return RateDecision(allowed, retry, plan, tuple(v[3:]), v[2])

    def _single(
        self, bucket: str, windows: Sequence[Window], cost: int, consume: bool, now: float | None
    ) -> tuple[WindowPlan, list[str], list[str]]:
        if cost.__class__ is not int or cost < 1:
            _bad_cost(cost)
        plan = plan_for(windows)
        keys = self.keys(bucket)
        if consume:
            keys.append(self._done_key(keys))
        args = [now_arg(now), f"{cost},{1 if consume else 0},{self._done_ms},{_plan_arg(plan)}"]
        return plan, keys, args

    def _run(
        self, bucket: str, windows: Sequence[Window], cost: int, consume: bool, now: float | None
    ) -> RateDecision:
        plan, keys, args = self._single(bucket, windows, cost, consume, now)
        sync, script = self._sync(), self._script
        reply = self._call(lambda c: script(keys=keys, args=args, client=c), sync)
        return self._decision(plan, reply)

    async def _arun(
        self, bucket: str, windows: Sequence[Window], cost: int, consume: bool, now: float | None
    ) -> RateDecision:
        plan, keys, args = self._single(bucket, windows, cost, consume, now)
        asyn, script = self._async(), self._ascript
        reply = await self._acall(lambda c: script(keys=keys, args=args, client=c), asyn)
        return self._decision(plan, reply)

    def _pair(
        self,
        key_bucket: str,
        key_windows: Sequence[Window],
        owner_bucket: str,
        owner_windows: Sequence[Window],
        cost: int,
        now: float | None,
    ) -> tuple[WindowPlan, list[str], list[str]]:
        if cost.__class__ is not int or cost < 1:
            _bad_cost(cost)
        kplan, oplan = plan_for(key_windows), plan_for(owner_windows)
        keys = self.pair_keys(key_bucket, owner_bucket)
        keys.append(self._done_key(keys))
        args = [now_arg(now), str(cost), self._done_ms, _plan_arg(kplan), _plan_arg(oplan)]
        return pair_plan(key_windows, owner_windows), keys, args

    def hit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
        *,
        now: float | None = None,
    ) -> RateDecision:
        """A key and its owner, all-or-nothing, in one script (see :meth:`pair_keys`)."""
        plan, keys, args = self._pair(
            key_bucket, key_windows, owner_bucket, owner_windows, cost, now
        )
        sync, script = self._sync(), self._pair_script
        reply = self._call(lambda c: script(keys=keys, args=args, client=c), sync)
        return self._decision(plan, reply)

    async def ahit_pair(
        self,
        key_bucket: str,
        key_windows: tuple[Window, ...],
        owner_bucket: str,
        owner_windows: tuple[Window, ...],
        cost: int = 1,
        *,
        now: float | None = None,
    ) -> RateDecision:
        """Async :meth:`hit_pair`."""
        plan, keys, args = self._pair(
            key_bucket, key_windows, owner_bucket, owner_windows, cost, now
        )
        asyn, script = self._async(), self._apair_script
        reply = await self._acall(lambda c: script(keys=keys, args=args, client=c), asyn)
        return self._decision(plan, reply)

    def hit(
        self,
        bucket: str,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        cost: int = 1,
        *,
        now: float | None = None,
    ) -> RateDecision:
        return self._run(bucket, windows, cost, True, now)

    async def ahit(
        self,
        bucket: str,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        cost: int = 1,
        *,
        now: float | None = None,
    ) -> RateDecision:
        return await self._arun(bucket, windows, cost, True, now)

    def peek(
        self,
        bucket: str,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        cost: int = 1,
        *,
        now: float | None = None,
    ) -> RateDecision:
        return self._run(bucket, windows, cost, False, now)

    async def apeek(
        self,
        bucket: str,
        windows: tuple[Window, ...] = DEFAULT_WINDOWS,
        cost: int = 1,
        *,
        now: float | None = None,
    ) -> RateDecision:
        return await self._arun(bucket, windows, cost, False, now)

    def reset(self, bucket: str) -> None:
        keys = self.keys(bucket)
        self._call(lambda c: c.delete(*keys), self._sync())

    async def areset(self, bucket: str) -> None:
        keys = self.keys(bucket)
        await self._acall(lambda c: c.delete(*keys), self._async())
