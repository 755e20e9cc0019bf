"""Distributed rate limits and brute-force counting in Redis: one Lua script, one round trip.

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
Both carry a TTL of the longest window plus one bucket, refreshed on every request, so idle
buckets disappear on their own.

Owner (tenant) limits: :meth:`RedisRateLimiter.hit_pair` decides a key and its owner together
in one script, so every key of the pair lives under the *owner's* hash tag: the owner's state
in ``<prefix>:rl:{<owner bucket>}:log``/``:state`` (the same keys as a plain ``hit`` on that
bucket), the key's in ``<prefix>:rl:{<owner bucket>}:k:<key id>:log``/``:state``. Turning
owner limits on therefore starts every owned key's counts afresh in those new Redis keys.

Clients: pass a ``redis.Redis`` (WSGI), a ``redis.asyncio.Redis`` (ASGI), or both, or a URL
(``redis://host:6379/0?prefix=kg``), from which both are built with short socket timeouts
(``socket_timeout``, 100 ms by default) and at most one immediate reconnect, so a dead Redis
fails fast; wrap the limiter in :class:`keyguard.core.ratelimit.ResilientLimiter` to decide
what happens then. Every Redis failure is raised as :class:`StoreUnavailable`. ``redis`` is
imported only when this module is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from keyguard.core.errors import ConfigurationError, StoreUnavailable
from keyguard.core.ratelimit import (
    DEFAULT_WINDOWS,
    RateDecision,
    Window,
    WindowPlan,
    pair_plan,
    plan_for,
)

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis

__all__ = ["PAIR_RATE_LIMIT_LUA", "RATE_LIMIT_LUA", "RedisBruteForceGuard", "RedisRateLimiter"]

# The decision of keyguard.core.ratelimit, line for line. Times are integer microseconds;
# Lua numbers are doubles, exact below 2^53 (epoch µs are ~2^51), and every division goes
# through fdiv, which is exact. Lua's tostring keeps only 14 digits, hence fmt().
#
# A bucket's plan is passed as ARGV[base + 1 ...]: ttl_ms, max_exact_us, n_windows, then
# limit, period_us, width_us (0 = exact) per window. Replies: allowed (1/0), retry_after
# (-1 = never, 0 when allowed), violated mask, then remaining, reset per window.
_RATE_LIMIT_LIB: Final = """
local US = 1000000
local function fmt(x) return string.format('%d', x) end
local function fdiv(a, b)
  local r = math.fmod(a, b)
  if r < 0 then r = r + b end
  return (a - r) / b
end
local function ceil_s(x) return -fdiv(-x, US) end

-- A long-window bucket: its latest unit's time and its units (nil when empty).
local function bucket(state_key, f)
  local v = redis.call('HGET', state_key, f)
  if not v then return nil end
  local last, units = string.match(v, '^(-?%d+):(%d+)$')
  return tonumber(last), tonumber(units)
end

local function clock(arg)
  local now = tonumber(arg)
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * US + tonumber(t[2])
  end
  return now
end

-- One bucket at `now`: its usage per window and whether `cost` fits in all of them. `write`
-- (a hit, admitted or refused) records the time and drops expired units; a peek writes nothing.
local function load(log_key, state_key, now, cost, write, base)
  local ttl = ARGV[base + 1]
  local max_exact = tonumber(ARGV[base + 2])
  local nw = tonumber(ARGV[base + 3])

  local last = tonumber(redis.call('HGET', state_key, 'last'))
  if last and now < last then now = last end

  local n
  if write then
    redis.call('HSET', state_key, 'last', fmt(now))
    redis.call('ZREMRANGEBYSCORE', log_key, '-inf', fmt(now - max_exact))
    n = redis.call('ZCARD', log_key)
  else
    n = redis.call('ZCOUNT', log_key, '(' .. fmt(now - max_exact), '+inf')
  end

  local limits, periods, widths = {}, {}, {}
  for i = 1, nw do
    local b = base + 3 + (i - 1) * 3
    limits[i] = tonumber(ARGV[b + 1])
    periods[i] = tonumber(ARGV[b + 2])
    widths[i] = tonumber(ARGV[b + 3])
  end

  -- Long windows: fields b<period>:lo (index of the oldest bucket), :hi (the newest), :t (total
  -- units), :rel (when the oldest bucket leaves: its latest unit + period), and per bucket
  -- b<period>:<index> = "<latest unit µs>:<units>".
  local rings = {}
  local function ring_for(i)
    local p = periods[i]
    local ring = rings[p]
    if ring then return ring end
    local pre = 'b' .. fmt(p) .. ':'
    local v = redis.call('HMGET', state_key, pre .. 'lo', pre .. 'hi', pre .. 't', pre .. 'rel')
    ring = {pre = pre, width = widths[i], lo = tonumber(v[1]), hi = tonumber(v[2]),
            total = tonumber(v[3]) or 0, rel = tonumber(v[4])}
    rings[p] = ring
    if ring.lo and now >= (ring.rel or 0) then
      local j, newlo = ring.lo, nil
      while j <= ring.hi do
        local f = pre .. fmt(j)
        local last, c = bucket(state_key, f)
        if last then
          if last + p <= now then
            ring.total = ring.total - c
            if write then redis.call('HDEL', state_key, f) end
          else
            newlo = j
            ring.rel = last + p
            break
          end
        end
        j = j + 1
      end
      if newlo then
        ring.lo = newlo
        if write then
          redis.call('HSET', state_key, pre .. 'lo', fmt(newlo), pre .. 't', fmt(ring.total),
                     pre .. 'rel', fmt(ring.rel))
        end
      else
        ring.lo, ring.hi, ring.total, ring.rel = nil, nil, 0, nil
        if write then
          redis.call('HDEL', state_key, pre .. 'lo', pre .. 'hi', pre .. 't', pre .. 'rel')
        end
      end
    end
    return ring
  end

  local used = {}
  local allowed = true
  for i = 1, nw do
    local u
    if widths[i] > 0 then
      u = ring_for(i).total
    elseif periods[i] == max_exact then
      u = n
    else
      u = redis.call('ZCOUNT', log_key, '(' .. fmt(now - periods[i]), '+inf')
    end
    used[i] = u
    if u + cost > limits[i] then allowed = false end
  end
  return {log_key = log_key, state_key = state_key, now = now, ttl = ttl,
          max_exact = max_exact, nw = nw, limits = limits, periods = periods, widths = widths,
          rings = rings, used = used, allowed = allowed}
end

-- The k-th oldest unit inside exact window i of bucket b (k >= 1).
local function kth(b, i, k)
  local r = redis.call('ZRANGEBYSCORE', b.log_key, '(' .. fmt(b.now - b.periods[i]), '+inf',
                       'WITHSCORES', 'LIMIT', k - 1, 1)
  return tonumber(r[2])
end

-- An admitted request: consumes `cost` units when `take`, then appends remaining and reset per
-- window to `out`.
local function admit(b, cost, take, out)
  local now, state_key, taken = b.now, b.state_key, 0
  if take then
    taken = cost
    if b.max_exact > 0 then
      local seq = redis.call('HINCRBY', state_key, 'seq', cost)
      local s = fmt(now)
      local i = 0
      while i < cost do
        local args = {}
        local stop = math.min(cost, i + 100)
        while i < stop do
          args[#args + 1] = s
          args[#args + 1] = fmt(seq - cost + 1 + i)
          i = i + 1
        end
        redis.call('ZADD', b.log_key, unpack(args))
      end
    end
    for p, ring in pairs(b.rings) do
      local idx = fdiv(now, ring.width)
      local f = ring.pre .. fmt(idx)
      local _, units = bucket(state_key, f)
      redis.call('HSET', state_key, f, fmt(now) .. ':' .. fmt((units or 0) + cost))
      ring.total = ring.total + cost
      if not ring.lo then ring.lo = idx end
      -- The bucket's units now leave the window with this one.
      if ring.lo == idx then ring.rel = now + p end
      ring.hi = idx
      redis.call('HSET', state_key, ring.pre .. 'lo', fmt(ring.lo), ring.pre .. 'hi', fmt(idx),
                 ring.pre .. 't', fmt(ring.total), ring.pre .. 'rel', fmt(ring.rel))
    end
  end
  for i = 1, b.nw do
    local u, p, reset = b.used[i], b.periods[i], 0
    if b.widths[i] == 0 then
      if u > 0 then
        reset = ceil_s(kth(b, i, 1) + p - now)
      elseif taken > 0 then
        reset = ceil_s(p)
      end
    else
      local ring = b.rings[p]
      if ring.lo then reset = ceil_s(ring.rel - now) end
    end
    out[#out + 1] = b.limits[i] - u - taken
    out[#out + 1] = reset
  end
end

-- A refused request: appends remaining and reset per window to `out`; returns the violated
-- windows' mask (window i is bit * 2^(i-1)), the latest wait among them, and whether one of
-- them can never admit `cost`.
local function refuse(b, cost, out, bit)
  local now, retry, never, mask = b.now, 0, false, 0
  for i = 1, b.nw do
    local u, p, limit, reset = b.used[i], b.periods[i], b.limits[i], 0
    if u + cost > limit then
      mask = mask + bit
      if cost > limit then
        never = true
        reset = ceil_s(p)
      elseif b.widths[i] == 0 then
        reset = ceil_s(kth(b, i, u + cost - limit) + p - now)
      else
        local ring = b.rings[p]
        local need, j, last = u + cost - limit, ring.lo, 0
        while j <= ring.hi do
          local l, n = bucket(b.state_key, ring.pre .. fmt(j))
          if l then
            last, need = l, need - n
            if need <= 0 then break end
          end
          j = j + 1
        end
        reset = ceil_s(last + p - now)
      end
      if reset > retry then retry = reset end
    elseif b.widths[i] == 0 then
      if u > 0 then reset = ceil_s(kth(b, i, 1) + p - now) end
    else
      local ring = b.rings[p]
      if ring.lo then reset = ceil_s(ring.rel - now) end
    end
    bit = bit * 2
    out[#out + 1] = math.max(limit - u, 0)
    out[#out + 1] = reset
  end
  return mask, retry, never
end

-- Idle state expires: the TTL is refreshed on every hit.
local function touch(b)
  redis.call('PEXPIRE', b.log_key, b.ttl)
  redis.call('PEXPIRE', b.state_key, b.ttl)
end
"""

# KEYS: log, state.  ARGV: now_us ("" = Redis TIME), cost, hit (1) or peek (0), then the plan.
RATE_LIMIT_LUA: Final = (
    _RATE_LIMIT_LIB
    + """
local cost = tonumber(ARGV[2])
local hit = ARGV[3] == '1'
local b = load(KEYS[1], KEYS[2], clock(ARGV[1]), cost, hit, 3)
local out = {0, 0, 0}
if b.allowed then
  out[1] = 1
  admit(b, cost, hit, out)
else
  local mask, retry, never = refuse(b, cost, out, 1)
  if never then out[2] = -1 else out[2] = math.max(retry, 1) end
  out[3] = mask
end
if hit then touch(b) end
return out
"""
)

# A key and its owner, all-or-nothing. KEYS: the key's log and state, the owner's log and
# state (one Cluster slot).  ARGV: now_us ("" = Redis TIME), cost, the key's plan, the owner's
# plan. Both buckets record the time; both consume only when both admit. The reply covers the
# key's windows, then the owner's (mask bits likewise).
PAIR_RATE_LIMIT_LUA: Final = (
    _RATE_LIMIT_LIB
    + """
local now, cost = clock(ARGV[1]), tonumber(ARGV[2])
local k = load(KEYS[1], KEYS[2], now, cost, true, 2)
local o = load(KEYS[3], KEYS[4], now, cost, true, 5 + 3 * k.nw)
local out = {0, 0, 0}
if k.allowed and o.allowed then
  out[1] = 1
  admit(k, cost, true, out)
  admit(o, cost, true, out)
else
  local retry, never, mask, bit = 0, false, 0, 1
  for _, b in ipairs({k, o}) do
    if b.allowed then
      admit(b, cost, false, out)
    else
      local m, r, nv = refuse(b, cost, out, bit)
      mask = mask + m
      if r > retry then retry = r end
      never = never or nv
    end
    for _ = 1, b.nw do bit = bit * 2 end
  end
  if never then out[2] = -1 else out[2] = math.max(retry, 1) end
  out[3] = mask
end
touch(k)
touch(o)
return out
"""
)

# KEYS: failures (sorted set).  ARGV: now_us ("" = Redis TIME), threshold, window_us,
# record (1/0), ttl_ms.  Returns retry_after in whole seconds, or -1 when not blocked.
BRUTE_FORCE_LUA: Final = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local threshold, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local function fmt(x) return string.format('%d', x) end
if ARGV[4] == '1' then
  local seq = redis.call('INCR', key .. ':seq')
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] and tonumber(newest[2]) > now then now = tonumber(newest[2]) end
  redis.call('ZADD', key, fmt(now), fmt(seq))
  redis.call('ZREMRANGEBYRANK', key, 0, -threshold - 1)
  redis.call('PEXPIRE', key, ARGV[5])
  redis.call('PEXPIRE', key .. ':seq', ARGV[5])
end
if redis.call('ZCARD', key) < threshold then return -1 end
local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
local wait = oldest + window - now
if wait <= 0 then return -1 end
local s = math.ceil(wait / 1000000)
if s < 1 then s = 1 end
return s
"""


def _bad_cost(cost: object) -> None:
    raise ConfigurationError(f"rate-limit cost must be an integer >= 1, got {cost!r}")


def _check_part(name: str, value: str) -> str:
    # Braces would break the Cluster hash tag; whitespace and control characters have no
    # business in a key name.
    if not isinstance(value, str) or not value or any(c in value for c in "{} \t\r\n"):
        raise ConfigurationError(f"invalid Redis {name}: must be non-empty, without braces")
    return value


def _now_arg(now: float | None) -> str:
    return "" if now is None else str(math.floor(now * 1e6 + 0.5))


class _RedisBase:
    """Client wiring shared by the limiter and the guard: URL parsing, lazy driver import."""

    def __init__(
        self,
        client: Redis | None,
        async_client: AsyncRedis | None,
        url: str | None,
        prefix: str | None,
        socket_timeout: float,
    ) -> None:
        if not socket_timeout > 0:
            raise ConfigurationError("socket_timeout must be > 0 seconds")
        import redis
        import redis.asyncio

        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._own_sync: Redis | None = None
        self._own_async: AsyncRedis | None = None
        if url is not None:
            url, url_prefix = self._split_url(url)
            if prefix is not None and url_prefix is not None and prefix != url_prefix:
                raise ConfigurationError("prefix given both in the URL and as an argument")
            prefix = prefix or url_prefix
            from redis.asyncio.retry import Retry as AsyncRetry
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # One immediate retry on a connection error only: it replaces a pooled socket
            # that died with a Redis restart. Timeouts are not retried: the script may have
            # run, and a fast failure is what the circuit breaker needs.
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_timeout,
            }
            try:
                if client is None:
                    client = redis.Redis.from_url(
                        url,
                        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                        **options,
                    )
                    self._own_sync = client
                if async_client is None:
                    async_client = redis.asyncio.Redis.from_url(
                        url,
                        retry=AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
                        **options,
                    )
                    self._own_async = async_client
            except (ValueError, TypeError) as exc:
                # Not chained: the driver's message may quote the URL, password included.
                raise ConfigurationError(f"invalid Redis URL ({type(exc).__name__})") from None
        if client is None and async_client is None:
            raise ConfigurationError("pass a Redis client, an async client, or a url")
        self.prefix = _check_part("prefix", prefix or "kg")
        self.client = client
        self.async_client = async_client

    @staticmethod
    def _split_url(url: str) -> tuple[str, str | None]:
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

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        # The exception type only: driver messages can carry host names and more.
        return StoreUnavailable(f"Redis is unreachable ({type(exc).__name__})")

    def _sync(self) -> Redis:
        if self.client is None:
            raise ConfigurationError("this Redis limiter has no sync client; use the a* methods")
        return self.client

    def _async(self) -> AsyncRedis:
        if self.async_client is None:
            raise ConfigurationError("this Redis limiter has no async client; use sync methods")
        return self.async_client

    def close(self) -> None:
        """Close the sync client this object created from a URL (not one passed in)."""
        if self._own_sync is not None:
            self._own_sync.close()

    async def aclose(self) -> None:
        """Close the clients this object created from a URL (not ones passed in)."""
        self.close()
        if self._own_async is not None:
            await self._own_async.aclose()


class RedisRateLimiter(_RedisBase):
    """The rate limiter of :mod:`keyguard.core.ratelimit`, shared by every process via Redis.

    ``hit``/``peek``/``reset`` use the sync client, ``ahit``/``apeek``/``areset`` the async
    one. Raises :class:`StoreUnavailable` when Redis fails. ``now`` (seconds) replaces Redis's
    clock and exists for tests only: production decisions must use one shared clock.
    """

    def __init__(
        self,
        client: Redis | None = None,
        *,
        async_client: AsyncRedis | None = None,
        url: str | None = None,
        prefix: str | None = None,
        socket_timeout: float = 0.1,
    ) -> None:
        super().__init__(client, async_client, url, prefix, socket_timeout)
        sync, asyn = self.client, self.async_client
        self._script = None if sync is None else sync.register_script(RATE_LIMIT_LUA)
        self._ascript = None if asyn is None else asyn.register_script(RATE_LIMIT_LUA)
        self._pair_script = None if sync is None else sync.register_script(PAIR_RATE_LIMIT_LUA)
        self._apair_script = None if asyn is None else asyn.register_script(PAIR_RATE_LIMIT_LUA)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 0.1) -> RedisRateLimiter:
        """Build from ``redis://host:6379/0?prefix=kg`` (sync and async clients)."""
        return cls(url=url, socket_timeout=socket_timeout)

    def keys(self, bucket: str) -> list[str]:
        """The Redis keys holding ``bucket``'s state (one Cluster slot)."""
        base = f"{self.prefix}:rl:{{{_check_part('bucket', bucket)}}}"
        return [f"{base}:log", f"{base}:state"]

    def pair_keys(self, key_bucket: str, owner_bucket: str) -> list[str]:
        """The Redis keys of a :meth:`hit_pair`: the key's log and state, then the owner's.

        All four share the owner's hash tag (one Cluster slot, as a script needs): the owner's
        are ``keys(owner_bucket)``, the key's ``<prefix>:rl:{<owner_bucket>}:k:<key_bucket>:*``.
        So a key decided with its owner counts in other Redis keys than the same key decided
        alone (``keys(key_bucket)``): enabling owner limits starts keys' counts afresh.
        """
        owner = f"{self.prefix}:rl:{{{_check_part('bucket', owner_bucket)}}}"
        key = f"{owner}:k:{_check_part('bucket', key_bucket)}"
        if key_bucket == owner_bucket:
            raise ConfigurationError("a key and its owner need two distinct rate-limit buckets")
        return [f"{key}:log", f"{key}:state", f"{owner}:log", f"{owner}:state"]

    def _args(self, plan: WindowPlan, cost: int, consume: bool, now: float | None) -> list[str]:
        if cost.__class__ is not int or cost < 1:
            _bad_cost(cost)
        return [_now_arg(now), str(cost), "1" if consume else "0", *plan.redis_args]

    @staticmethod
    def _decision(plan: WindowPlan, reply: Sequence[int]) -> RateDecision:
        allowed = reply[0] == 1
        retry = None if allowed or reply[1] < 0 else int(reply[1])
        counts = tuple(int(x) for x in reply[3:])
        return RateDecision(allowed, retry, plan, counts, int(reply[2]))

    def _run(
        self, bucket: str, windows: Sequence[Window], cost: int, consume: bool, now: float | None
    ) -> RateDecision:
        plan = plan_for(windows)
        keys, args = self.keys(bucket), self._args(plan, cost, consume, now)
        self._sync()
        assert self._script is not None
        try:
            reply = self._script(keys=keys, args=args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return self._decision(plan, reply)

    async def _arun(
        self, bucket: str, windows: Sequence[Window], cost: int, consume: bool, now: float | None
    ) -> RateDecision:
        plan = plan_for(windows)
        keys, args = self.keys(bucket), self._args(plan, cost, consume, now)
        self._async()
        assert self._ascript is not None
        try:
            reply = await self._ascript(keys=keys, args=args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
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
        args = [_now_arg(now), str(cost), *kplan.redis_args, *oplan.redis_args]
        return pair_plan(key_windows, owner_windows), self.pair_keys(key_bucket, owner_bucket), args

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
        self._sync()
        assert self._pair_script is not None
        try:
            reply = self._pair_script(keys=keys, args=args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
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
        self._async()
        assert self._apair_script is not None
        try:
            reply = await self._apair_script(keys=keys, args=args)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
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
        try:
            self._sync().delete(*keys)
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def areset(self, bucket: str) -> None:
        keys = self.keys(bucket)
        try:
            await self._async().delete(*keys)
        except self._errors as exc:
            raise self._unavailable(exc) from exc


class RedisBruteForceGuard(_RedisBase):
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
        socket_timeout: float = 0.1,
        threshold: int = 10,
        window: float = 60.0,
    ) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigurationError(f"threshold must be an integer >= 1, got {threshold!r}")
        if not isinstance(window, int | float) or not window > 0 or not math.isfinite(window):
            raise ConfigurationError(f"window must be a number of seconds > 0, got {window!r}")
        super().__init__(client, async_client, url, prefix, socket_timeout)
        self.threshold = threshold
        self.window = float(window)
        self._window_us = str(math.floor(self.window * 1e6 + 0.5))
        self._ttl_ms = str(math.ceil(self.window * 1000) + 1000)
        self._script = None if self.client is None else self.client.register_script(BRUTE_FORCE_LUA)
        self._ascript = (
            None
            if self.async_client is None
            else self.async_client.register_script(BRUTE_FORCE_LUA)
        )

    def key(self, client: str) -> str:
        """The Redis key counting ``client``'s failures."""
        return f"{self.prefix}:bf:{{{_check_part('client address', client)}}}"

    def _args(self, record: bool, now: float | None) -> list[str]:
        return [
            _now_arg(now),
            str(self.threshold),
            self._window_us,
            "1" if record else "0",
            self._ttl_ms,
        ]

    def _call(self, client: str | None, record: bool, now: float | None) -> int | None:
        if client is None:
            return None
        self._sync()
        assert self._script is not None
        try:
            reply = self._script(keys=[self.key(client)], args=self._args(record, now))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return None if int(reply) < 0 else int(reply)

    async def _acall(self, client: str | None, record: bool, now: float | None) -> int | None:
        if client is None:
            return None
        self._async()
        assert self._ascript is not None
        try:
            reply = await self._ascript(keys=[self.key(client)], args=self._args(record, now))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return None if int(reply) < 0 else int(reply)

    def is_blocked(self, client: str | None, *, now: float | None = None) -> int | None:
        return self._call(client, False, now)

    def record_failure(self, client: str | None, *, now: float | None = None) -> int | None:
        return self._call(client, True, now)

    async def ais_blocked(self, client: str | None, *, now: float | None = None) -> int | None:
        return await self._acall(client, False, now)

    async def arecord_failure(self, client: str | None, *, now: float | None = None) -> int | None:
        return await self._acall(client, True, now)

    def reset(self, client: str) -> None:
        key = self.key(client)
        try:
            self._sync().delete(key, f"{key}:seq")
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def areset(self, client: str) -> None:
        key = self.key(client)
        try:
            await self._async().delete(key, f"{key}:seq")
        except self._errors as exc:
            raise self._unavailable(exc) from exc
