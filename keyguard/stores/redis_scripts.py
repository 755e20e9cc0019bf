"""The Lua scripts of the Redis backends: the rate-limit decision of
:mod:`keyguard.core.ratelimit`, step for step (one bucket, or a key and its owner at once), and
the brute-force counter. Each runs as one ``EVALSHA``: one round trip per request.

A rate-limit hit may carry a *done key* (``KEYS[3]``, or ``KEYS[5]`` for a pair), unique to
that request: the script stores its reply there for a short while, and a second run with the
same done key (the client retrying after a reply came too late) returns the stored reply
instead of deciding again, so a retried request is counted once.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BRUTE_FORCE_LUA", "PAIR_RATE_LIMIT_LUA", "RATE_LIMIT_LUA"]

# The decision of keyguard.core.ratelimit, line for line. Times are integer microseconds;
# Lua numbers are doubles, exact below 2^53 (epoch µs are ~2^51), and every division goes
# through fdiv, which is exact. Lua's tostring keeps only 14 digits, hence fmt().
#
# A bucket's plan is passed as one argument, comma-separated: ttl_ms, max_exact_us, n_windows,
# then limit, period_us, width_us (0 = exact) per window (one argument rather than 3 + 3 per
# window: the client packs each argument of a command separately). The reply is one string of
# comma-separated integers: allowed (1/0), retry_after (-1 = never, 0 when allowed), violated
# mask, then remaining, reset per window.
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
local function load(log_key, state_key, now, cost, write, spec)
  local v, nv = {}, 0
  for x in string.gmatch(spec, '[^,]+') do
    nv = nv + 1
    v[nv] = x
  end
  local ttl = v[1]
  local max_exact = tonumber(v[2])
  local nw = tonumber(v[3])

  local limits, periods, widths = {}, {}, {}
  for i = 1, nw do
    local b = 3 + (i - 1) * 3
    limits[i] = tonumber(v[b + 1])
    periods[i] = tonumber(v[b + 2])
    widths[i] = tonumber(v[b + 3])
  end

  -- Every hash field this request may need, in one HMGET: the last time, the member sequence,
  -- when the keys expire (see expiry()), and per long window its ring fields and the bucket
  -- `now` falls in (read again below in the rare case where the last time seen is later than
  -- `now`).
  local want, at = {'last', 'seq', 'exp'}, {}
  for i = 1, nw do
    local p = periods[i]
    if widths[i] > 0 and not at[p] then
      local pre = 'b' .. fmt(p) .. ':'
      at[p] = #want + 1
      want[#want + 1] = pre .. 'lo'
      want[#want + 1] = pre .. 'hi'
      want[#want + 1] = pre .. 't'
      want[#want + 1] = pre .. 'rel'
      want[#want + 1] = pre .. fmt(fdiv(now, widths[i]))
    end
  end
  local got = redis.call('HMGET', state_key, unpack(want))
  local last = tonumber(got[1])
  if last and now < last then now = last end

  local n
  if write then
    redis.call('ZREMRANGEBYSCORE', log_key, '-inf', fmt(now - max_exact))
    n = redis.call('ZCARD', log_key)
  else
    n = redis.call('ZCOUNT', log_key, '(' .. fmt(now - max_exact), '+inf')
  end

  -- Long windows: fields b<period>:lo (index of the oldest bucket), :hi (the newest), :t (total
  -- units), :rel (when the oldest bucket leaves: its latest unit + period), and per bucket
  -- b<period>:<index> = "<latest unit µs>:<units>".
  local rings = {}
  local function ring_for(i)
    local p = periods[i]
    local ring = rings[p]
    if ring then return ring end
    local pre, k = 'b' .. fmt(p) .. ':', at[p]
    ring = {pre = pre, width = widths[i], lo = tonumber(got[k]), hi = tonumber(got[k + 1]),
            total = tonumber(got[k + 2]) or 0, rel = tonumber(got[k + 3])}
    -- The bucket `now` falls in, as read (nil if `now` moved to a later bucket: read then).
    if want[k + 4] == pre .. fmt(fdiv(now, ring.width)) then ring.cur = got[k + 4] or false end
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
  return {log_key = log_key, state_key = state_key, now = now, ttl = ttl, n = n,
          max_exact = max_exact, nw = nw, limits = limits, periods = periods, widths = widths,
          rings = rings, used = used, allowed = allowed, seq = tonumber(got[2]) or 0,
          exp = tonumber(got[3]), write = write}
end

-- The hash fields a hit writes, in one HSET: the last time seen, and whatever admit() set.
local function save(b, sets)
  if not b.write then return end
  sets[#sets + 1] = 'last'
  sets[#sets + 1] = fmt(b.now)
  redis.call('HSET', b.state_key, unpack(sets))
end

-- The k-th oldest unit inside exact window i of bucket b (k >= 1). After a hit's trim the log
-- holds only the longest exact window, the n units of which the window's used[i] are the
-- newest (units added since are newer still): the unit is found by its rank.
local function kth(b, i, k)
  if b.write then
    local rank = b.n - b.used[i] + k - 1
    return tonumber(redis.call('ZRANGE', b.log_key, rank, rank, 'WITHSCORES')[2])
  end
  local r = redis.call('ZRANGEBYSCORE', b.log_key, '(' .. fmt(b.now - b.periods[i]), '+inf',
                       'WITHSCORES', 'LIMIT', k - 1, 1)
  return tonumber(r[2])
end

-- An admitted request: consumes `cost` units when `take` (the hash fields to write go to
-- `sets`), then appends remaining and reset per window to `out`.
local function admit(b, cost, take, out, sets)
  local now, state_key, taken = b.now, b.state_key, 0
  if take then
    taken = cost
    if b.max_exact > 0 then
      local seq = b.seq + cost
      sets[#sets + 1] = 'seq'
      sets[#sets + 1] = fmt(seq)
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
      local units
      if ring.cur == nil then
        units = select(2, bucket(state_key, f))
      elseif ring.cur then
        units = tonumber(string.match(ring.cur, ':(%d+)$'))
      end
      ring.total = ring.total + cost
      if not ring.lo then ring.lo = idx end
      -- The bucket's units now leave the window with this one.
      if ring.lo == idx then ring.rel = now + p end
      ring.hi = idx
      local n = #sets
      sets[n + 1], sets[n + 2] = f, fmt(now) .. ':' .. fmt((units or 0) + cost)
      sets[n + 3], sets[n + 4] = ring.pre .. 'lo', fmt(ring.lo)
      sets[n + 5], sets[n + 6] = ring.pre .. 'hi', fmt(idx)
      sets[n + 7], sets[n + 8] = ring.pre .. 't', fmt(ring.total)
      sets[n + 9], sets[n + 10] = ring.pre .. 'rel', fmt(ring.rel)
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

-- Redis's own clock (µs), which key expiry follows: `now` when that is where it came from.
local function server_clock(arg, now)
  if arg == '' then return now end
  return clock('')
end

-- Idle state expires. A hit's keys must live `ttl` ms (the plan's longest window and one
-- bucket, and a second) after it; they are given that plus a slack of min(ttl / 2, 1 h), and
-- the time they expire (Redis's clock, µs) is kept in the state's `exp` field, so the TTLs are
-- set again only when less than `ttl` is left: once per slack at most, not on every hit.
-- Returns the TTL to set (ms) when due, adding `exp` to the hash fields to write, else false.
local function expiry(b, srv, sets)
  local ttl = tonumber(b.ttl)
  if b.exp and b.exp - srv >= ttl * 1000 then return false end
  local life = ttl + math.min(fdiv(ttl, 2), 3600000)
  sets[#sets + 1] = 'exp'
  sets[#sets + 1] = fmt(srv + life * 1000)
  return life
end

-- After save(): the TTLs expiry() found due. Else, a log this hit created (the trim had
-- emptied it, so Redis had deleted it, and the hit added to it) gets the state's expiry.
local function touch(b, life, srv, added)
  if life then
    redis.call('PEXPIRE', b.log_key, fmt(life))
    redis.call('PEXPIRE', b.state_key, fmt(life))
  elseif added and b.n == 0 and b.max_exact > 0 then
    redis.call('PEXPIRE', b.log_key, fmt(fdiv(b.exp - srv, 1000)))
  end
end

-- The reply as one string, "allowed,retry,mask,remaining,reset,...": one bulk string is
-- cheaper to send and for the client to read than an array of integers, and it is what a done
-- key keeps. table.concat writes a number with "%.14g", exact below 10^14 (counts stop at
-- MAX_LIMIT, 2^40; waits are seconds), so only a mask of very many windows needs fmt.
local function reply(out)
  local parts = {}
  for i = 1, #out do
    local x = out[i]
    if x < 1e14 then parts[i] = x else parts[i] = fmt(x) end
  end
  return table.concat(parts, ',')
end

-- The reply stored under a done key by an earlier run of the same request, or false.
local function replay(done)
  if not done then return false end
  return redis.call('GET', done)
end

local function remember(done, text, ttl)
  if done then redis.call('SET', done, text, 'PX', ttl) end
  return text
end
"""

# KEYS: log, state, and for a hit optionally its done key.  ARGV: now_us ("" = Redis TIME),
# then "cost,hit,done_ttl_ms,plan" as one argument (hit: 1, or 0 for a peek).
RATE_LIMIT_LUA: Final = (
    _RATE_LIMIT_LIB
    + """
local done = KEYS[3]
local prev = replay(done)
if prev then return prev end
local cost, hit, ttl, spec = string.match(ARGV[2], '^(%d+),([01]),(%d+),(.+)$')
cost, hit = tonumber(cost), hit == '1'
local now = clock(ARGV[1])
local b = load(KEYS[1], KEYS[2], now, cost, hit, spec)
local out, sets = {0, 0, 0}, {}
if b.allowed then
  out[1] = 1
  admit(b, cost, hit, out, sets)
else
  local mask, retry, never = refuse(b, cost, out, 1)
  if never then out[2] = -1 else out[2] = math.max(retry, 1) end
  out[3] = mask
end
if hit then
  local srv = server_clock(ARGV[1], now)
  local life = expiry(b, srv, sets)
  save(b, sets)
  touch(b, life, srv, b.allowed)
end
return remember(done, reply(out), ttl)
"""
)

# A key and its owner, all-or-nothing. KEYS: the key's log and state, the owner's log and
# state, optionally a done key (one Cluster slot).  ARGV: now_us ("" = Redis TIME), cost, the
# done key's TTL in ms, the key's plan, the owner's plan. Both buckets record the time; both
# consume only when both admit. The reply covers the key's windows, then the owner's (mask
# bits likewise).
PAIR_RATE_LIMIT_LUA: Final = (
    _RATE_LIMIT_LIB
    + """
local done = KEYS[5]
local prev = replay(done)
if prev then return prev end
local now, cost = clock(ARGV[1]), tonumber(ARGV[2])
local k = load(KEYS[1], KEYS[2], now, cost, true, ARGV[4])
local o = load(KEYS[3], KEYS[4], now, cost, true, ARGV[5])
local out, ksets, osets = {0, 0, 0}, {}, {}
if k.allowed and o.allowed then
  out[1] = 1
  admit(k, cost, true, out, ksets)
  admit(o, cost, true, out, osets)
else
  local retry, never, mask, bit = 0, false, 0, 1
  for _, b in ipairs({k, o}) do
    if b.allowed then
      admit(b, cost, false, out, {})
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
local srv = server_clock(ARGV[1], now)
local klife, olife = expiry(k, srv, ksets), expiry(o, srv, osets)
save(k, ksets)
save(o, osets)
touch(k, klife, srv, out[1] == 1)
touch(o, olife, srv, out[1] == 1)
return remember(done, reply(out), ARGV[3])
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
