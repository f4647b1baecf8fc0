#!lua name=ratelimit
--[[
The redis-ratelimit commands as a Redis Functions library, for servers that
cannot load modules: the same arguments, replies, errors and keys as the
module, so that an application can move between the two with no change in
behaviour and no migration of keys.

  FUNCTION LOAD REPLACE <this file>              (Redis 7.0+, Valkey)
  FCALL ratelimit_check 1 key limit period [COST c] [ALGORITHM …] [BURST b]

Every RATELIMIT.<VERB> is the function ratelimit_<verb>; the keys go in
FCALL's key list, the other arguments follow as the module takes them. MCHECK
and MPEEK take their keys the same way, FCALL's numkeys standing for theirs:
FCALL ratelimit_mcheck 2 k1 k2 LIMIT … LIMIT …. Any call may end with
NOW <unix_ms>, the instant to decide at; without it the server's TIME is read
once. Without redis.register_function (EVAL, Redis 6.2) the same code runs
as a script: ARGV[1] names the function, the rest is as for FCALL.

The module's sources are the specification; the names below follow them
(src/commands, src/limiter, src/store). Lua numbers are doubles, exact for
integers below 2^53: every time is computed relative to now, every product
that could pass 2^53 is either bounded by the arguments (the fallback's own
bounds, refused with an error) or only ever compared, where a rounded value
past 2^53 still compares right against a bound below it.
]]

local VERSION = '0.2.0'

-- The module's bounds (src/limiter/mod.rs, gcra.rs, leases.rs, mcheck.rs).
local MAX_LIMIT = 1e15
local MAX_COST = 1e15
local MAX_PERIOD_S = 1e9
local MAX_REFILL_MS = MAX_PERIOD_S * 1000
local MAX_TOLERANCE_NS = 1e18
local MAX_KEYS = 16
local MAX_LEASES = 100000
local MAX_LEASE_MS = 86400000
local MAX_ID_LEN = 64
local NS_PER_MS = 1e6
local NS_PER_S = 1e9

-- The fallback's own: integers stay exact below 2^53.
local EXACT = 2 ^ 53
local MAX_NOW_MS = 1e15

-- Declared arities (src/commands/*.rs DOCS), which servers with
-- SetCommandInfo (7.0+) check before the module sees a call.
local DECLARED_ARITY = redis.REDIS_VERSION_NUM ~= nil
-- PEXPIRETIME arrived with 7.0; Redis 6.2 only has PTTL.
local HAS_PEXPIRETIME = redis.REDIS_VERSION_NUM ~= nil

local ERR = {
  syntax = 'ERR syntax error',
  limit = 'ERR limit must be a positive integer (at most 1000000000000000)',
  period = 'ERR period must be a positive integer number of seconds (at most 1000000000)',
  cost = 'ERR cost must be a non-negative integer (at most 1000000000000000)',
  algorithm = 'ERR ALGORITHM must be FIXED, SLIDING or TOKEN',
  burst = 'ERR burst must be a positive integer (at most 1000000000000000)',
  burst_too_large = 'ERR burst is too large for this rate: a full bucket must refill within 1000000000 seconds',
  burst_without_token = 'ERR BURST is only valid with ALGORITHM TOKEN',
  max_burst = 'ERR max_burst must be a non-negative integer (at most 999999999999999)',
  count_per_period = 'ERR count_per_period must be a positive integer (at most 1000000000000000)',
  quantity = 'ERR quantity must be a non-negative integer (at most 1000000000000000)',
  rate_too_high = 'ERR count_per_period is too high for period: the emission interval would be under 1 nanosecond',
  throttle_burst_too_large = 'ERR max_burst is too large for this rate: a full bucket must refill within 1000000000 seconds',
  numkeys = 'ERR numkeys must be an integer from 1 to 16',
  group_per_key = 'ERR expected one LIMIT group per key, in the order of the keys',
  duplicate_key = 'ERR each key may appear only once',
  max_leases = 'ERR max must be an integer from 1 to 100000',
  lease_ms = 'ERR lease_ms must be an integer from 1 to 86400000',
  lease_id = 'ERR id must be 1 to 64 bytes',
  wrongtype = 'WRONGTYPE Operation against a key holding the wrong kind of value',
  -- The fallback's own.
  now = 'ERR NOW must be a UNIX time in milliseconds, an integer from 0 to 1000000000000000',
  sliding_exact = 'ERR limit x period is too large for the script fallback: a SLIDING window needs limit x period_ms below 2^53',
  token_exact = 'ERR burst x period is too large for the script fallback: a TOKEN bucket needs burst x period_ms below 2^53',
  throttle_exact = 'ERR max_burst is too large for this rate for the script fallback: THROTTLE needs (max_burst + 1) x period / count_per_period below 2^53 ns (about 2.5 hours)',
  no_function = 'ERR Function not found',
  no_time = 'ERR the server refused TIME in a script: pass NOW unix_ms',
}

-- Errors travel as a table through error() and become the reply at the
-- top (run), with their text exactly as given.
local function fail(text)
  error({ ratelimit_error = text }, 0)
end

local function arity_error(command)
  fail("ERR wrong number of arguments for '" .. command .. "' command")
end

---------------------------------------------------------------------------
-- Integers (src/decimal.rs)

-- floor(a / b) and ceil(a / b) for a >= 0, b > 0 integers: fmod is exact,
-- and so is dividing the exact multiple it leaves.
local function fdiv(a, b)
  return (a - math.fmod(a, b)) / b
end

local function cdiv(a, b)
  local r = math.fmod(a, b)
  return (a - r) / b + (r > 0 and 1 or 0)
end

local function fmt(n)
  return string.format('%.0f', n)
end

-- An i64 with Redis' string2ll rules: optional '-', no '+', no spaces, no
-- leading zeros. Exact below 2^53; larger values keep their order.
local function parse_i64(s)
  local negative = false
  local digits = s
  if string.sub(s, 1, 1) == '-' then
    negative = true
    digits = string.sub(s, 2)
  end
  if digits == '' or not string.find(digits, '^%d+$') then
    return nil
  end
  if digits == '0' then
    if negative then return nil end
    return 0
  end
  if string.sub(digits, 1, 1) == '0' then return nil end
  if #digits > 19 then return nil end
  if #digits == 19 then
    local max = negative and '9223372036854775808' or '9223372036854775807'
    if digits > max then return nil end
  end
  local value = tonumber(digits)
  if negative then return -value end
  return value
end

-- A non-negative i64 as INCR writes it.
local function decode_u64(s)
  local value = parse_i64(s)
  if value == nil or value < 0 then return nil end
  return value
end

-- One or more digits, leading zeros allowed, at most u64::MAX.
local function parse_padded_u64(s)
  if s == '' or not string.find(s, '^%d+$') then return nil end
  local digits = string.gsub(s, '^0+', '')
  if digits == '' then return 0 end
  if #digits > 20 then return nil end
  if #digits == 20 and digits > '18446744073709551615' then return nil end
  return tonumber(digits)
end

-- `n` in decimal, zero-padded to `width` digits.
local function padded(n, width)
  local digits = fmt(n)
  if #digits < width then
    digits = string.rep('0', width - #digits) .. digits
  end
  return digits
end

-- Exact products of two non-negative integers below 10^21, as limbs of
-- 10^7, for the comparisons whose sides pass 2^53.
local LIMB = 1e7

local function wide(a, b)
  local x, y = {}, {}
  for i = 1, 3 do
    x[i] = math.fmod(a, LIMB)
    a = (a - x[i]) / LIMB
    y[i] = math.fmod(b, LIMB)
    b = (b - y[i]) / LIMB
  end
  local r = { 0, 0, 0, 0, 0, 0, 0 }
  for i = 1, 3 do
    for j = 1, 3 do
      r[i + j - 1] = r[i + j - 1] + x[i] * y[j]
    end
  end
  for i = 1, 6 do
    local low = math.fmod(r[i], LIMB)
    r[i + 1] = r[i + 1] + (r[i] - low) / LIMB
    r[i] = low
  end
  return r
end

-- a × b < c × d, exactly.
local function product_less(a, b, c, d)
  local x, y = wide(a, b), wide(c, d)
  for i = 7, 1, -1 do
    if x[i] ~= y[i] then return x[i] < y[i] end
  end
  return false
end

---------------------------------------------------------------------------
-- Arguments (src/args.rs)

local function is_keyword(word, name)
  return string.upper(word) == name
end

-- An integer argument in min..max, else `err`.
local function bounded(arg, min, max, err)
  local value = parse_i64(arg)
  if value == nil or value < 0 or value < min or value > max then
    fail(err)
  end
  return value
end

---------------------------------------------------------------------------
-- Keys: what they hold, and writing them (src/store/mod.rs)

local function key_type(key)
  return redis.call('TYPE', key).ok
end

-- The key's absolute expiry in UNIX ms, nil for none.
local function expiry_of(ctx, key)
  if HAS_PEXPIRETIME then
    local at = redis.call('PEXPIRETIME', key)
    if at < 0 then return nil end
    return at
  end
  -- Redis 6.2: PTTL counts from the server's clock when it runs; a reading
  -- of that clock on each side in the same millisecond pins it.
  local at
  for _ = 1, 5 do
    local before = ctx.clock()
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then return nil end
    local after = ctx.clock()
    at = after + ttl
    -- 0: the expiry has passed (a script sees keys as of its start), by
    -- an unknown amount; as of the call's instant, the state has ended.
    if ttl == 0 then return math.min(at, ctx.now()) end
    if before == after then break end
  end
  return at
end

-- The four layouts (src/limiter/*.rs, Layout::decode) in the order of
-- Id::ALL, which is also the order a value's kind is looked up in.
local KINDS = { 'FIXED', 'SLIDING', 'TOKEN', 'THROTTLE' }
local CHOSEN_BY = {
  FIXED = 'ALGORITHM FIXED',
  SLIDING = 'ALGORITHM SLIDING',
  TOKEN = 'ALGORITHM TOKEN',
  THROTTLE = 'RATELIMIT.THROTTLE',
}

local DECODE = {
  FIXED = function(value)
    local count = decode_u64(value)
    if count == nil then return nil end
    return { count = count, count_text = value }
  end,
  SLIDING = function(value)
    if string.sub(value, 1, 1) ~= 'S' then return nil end
    local colon = string.find(value, ':', 2, true)
    if colon == nil then return nil end
    local previous_text = string.sub(value, 2, colon - 1)
    local current_text = string.sub(value, colon + 1)
    local previous, current = decode_u64(previous_text), decode_u64(current_text)
    if previous == nil or current == nil then return nil end
    return {
      previous = previous,
      previous_text = previous_text,
      current = current,
      current_text = current_text,
    }
  end,
  TOKEN = function(value)
    if string.sub(value, 1, 1) ~= 'T' then return nil end
    local early = parse_padded_u64(string.sub(value, 2))
    if early == nil then return nil end
    return { early = early }
  end,
  THROTTLE = function(value)
    if string.sub(value, 1, 1) ~= 'G' then return nil end
    local early = parse_padded_u64(string.sub(value, 2))
    if early == nil then return nil end
    return { early = early }
  end,
}

local function kind_of_value(value)
  for _, kind in ipairs(KINDS) do
    if DECODE[kind](value) ~= nil then return kind end
  end
  return nil
end

-- The state of `kind` at `key`: { state = nil or decoded with .expires_at,
-- value = the stored bytes or '' }. Another kind's state is refused with
-- both kinds named; anything else with the standard WRONGTYPE.
local function load(ctx, key, kind)
  local t = key_type(key)
  if t == 'none' then
    return { state = nil, value = '' }
  end
  if t ~= 'string' then fail(ERR.wrongtype) end
  local value = redis.call('GET', key)
  local state = DECODE[kind](value)
  if state == nil then
    local held = kind_of_value(value)
    if held == nil then fail(ERR.wrongtype) end
    fail('WRONGTYPE the key holds ' .. held .. ' limiter state, not ' .. kind
      .. '; use ' .. CHOSEN_BY[held] .. ' or RATELIMIT.RESET it')
  end
  state.expires_at = expiry_of(ctx, key)
  return { state = state, value = value }
end

-- Stores `next` ({ value, expires_at, count for FIXED }) over `loaded`
-- with the module's effect: INCRBY for a counter grown in its window, SET
-- KEEPTTL for a new value, PEXPIREAT for a new expiry, SET PXAT for both.
local function write(key, loaded, next)
  local previous = loaded.state
  if previous == nil then
    redis.call('SET', key, next.value, 'PXAT', fmt(next.expires_at))
    return
  end
  local same_expiry = previous.expires_at == next.expires_at
  if same_expiry and next.count ~= nil and next.count > previous.count then
    redis.call('INCRBY', key, fmt(next.count - previous.count))
  elseif same_expiry then
    redis.call('SET', key, next.value, 'KEEPTTL')
  elseif loaded.value == next.value then
    redis.call('PEXPIREAT', key, fmt(next.expires_at))
  else
    redis.call('SET', key, next.value, 'PXAT', fmt(next.expires_at))
  end
end

---------------------------------------------------------------------------
-- The algorithms (src/limiter/*.rs). Each check(stored, cost, now_ms,
-- replaced_len) returns a decision { allowed, remaining, limit, retry
-- (nil: -1), reset } and the state to store, or nil.

local ALGORITHM = {}

-- Fixed window: the INCR + EXPIRE counter (fixed_window.rs).
ALGORITHM.FIXED = function(limit, period_ms)
  local self = {}
  function self.check(stored, cost, now_ms)
    local new_end = now_ms + period_ms
    local count, ends, count_text, fix_expiry = 0, new_end, nil, false
    if stored ~= nil then
      local at = stored.expires_at
      if at ~= nil and at > new_end then
        count, ends, count_text, fix_expiry = stored.count, new_end, stored.count_text, true
      elseif at ~= nil and at > now_ms then
        count, ends, count_text = stored.count, at, stored.count_text
      elseif at == nil then
        count, ends, count_text, fix_expiry = stored.count, new_end, stored.count_text, stored.count > 0
      end
    end
    -- A count above the limit (it was lowered) fits nothing.
    local fits = count <= limit and cost <= limit - count
    local count_after = count
    if fits then
      count_after = count + cost
      count_text = fmt(count_after)
    end
    local store
    if cost > 0 and (fits or fix_expiry) then
      store = { value = count_text, count = count_after, expires_at = ends }
    end
    local retry
    if not (fits or cost > limit) then retry = ends - now_ms end
    local reset = 0
    if count_after > 0 then reset = ends - now_ms end
    return {
      allowed = fits,
      remaining = math.max(limit - count_after, 0),
      limit = limit,
      retry = retry,
      reset = reset,
    }, store
  end
  return self
end

-- Sliding window counter, in unit-milliseconds (sliding_window.rs).
ALGORITHM.SLIDING = function(limit, period_ms)
  local self = {}
  local budget = limit * period_ms

  local function counts_at(stored, now_ms)
    local window = fdiv(now_ms, period_ms)
    local c = {
      window = window,
      elapsed = now_ms - window * period_ms,
      previous = 0, previous_text = '0',
      current = 0, current_text = '0',
      fix_expiry = false,
    }
    if stored == nil then return c end
    local bound = (window + 2) * period_ms
    local stored_window
    local at = stored.expires_at
    if at ~= nil and at <= bound then
      stored_window = math.max(fdiv(math.max(at - 1, 0), period_ms) - 1, 0)
    else
      c.fix_expiry = true
      stored_window = window
    end
    if stored_window == window then
      c.previous, c.previous_text = stored.previous, stored.previous_text
      c.current, c.current_text = stored.current, stored.current_text
    elseif stored_window + 1 == window then
      c.previous, c.previous_text = stored.current, stored.current_text
    end
    return c
  end

  -- Past 2^53 a weight is inexact, but then it is above the budget too.
  local function weighted(c)
    return c.previous * (period_ms - c.elapsed) + c.current * period_ms
  end

  local function first_fitting_elapsed(previous, room)
    if previous == 0 then return 0 end
    local allowance = fdiv(room * period_ms, previous)
    local elapsed = math.max(period_ms - allowance, 0)
    if elapsed < period_ms then return elapsed end
    return nil
  end

  local function first_admitting_ms(c, cost)
    local start = c.window * period_ms
    if c.current <= limit and cost <= limit - c.current then
      local e = first_fitting_elapsed(c.previous, limit - c.current - cost)
      if e ~= nil then return start + math.max(e, c.elapsed) end
    end
    local next_start = start + period_ms
    local e = first_fitting_elapsed(c.current, math.max(limit - cost, 0))
    if e ~= nil then return next_start + e end
    return next_start + period_ms
  end

  local function empty_at_ms(c)
    local start = c.window * period_ms
    if c.current > 0 then return start + 2 * period_ms end
    if c.previous > 0 then return start + period_ms end
    return 0
  end

  function self.check(stored, cost, now_ms)
    local c = counts_at(stored, now_ms)
    local fits = weighted(c) + cost * period_ms <= budget
    local after = {
      window = c.window, elapsed = c.elapsed,
      previous = c.previous, previous_text = c.previous_text,
      current = c.current, current_text = c.current_text,
    }
    if fits then
      after.current = c.current + cost
      after.current_text = fmt(after.current)
    end
    local store
    if cost > 0 and (fits or c.fix_expiry) then
      store = {
        value = 'S' .. after.previous_text .. ':' .. after.current_text,
        expires_at = (after.window + 2) * period_ms,
      }
    end
    local used = weighted(after)
    local remaining = 0
    if used <= budget then remaining = fdiv(budget - used, period_ms) end
    local retry
    if not (fits or cost > limit) then
      retry = math.max(first_admitting_ms(c, cost) - now_ms, 0)
    end
    return {
      allowed = fits,
      remaining = remaining,
      limit = limit,
      retry = retry,
      reset = math.max(empty_at_ms(after) - now_ms, 0),
    }, store
  end
  return self
end

-- How far past now (in units of 1/per_ms ms) a stored instant is: the key
-- expires at `at` ms, and the instant is `early` units before that (at most
-- per_ms - 1). Clamped to `bound`; the second result says it was. The
-- product (at - now) × per_ms is only formed when it stays within bound +
-- per_ms.
local function ahead_of_now(at, early, per_ms, bound, now_ms)
  if at == nil then return 0, false end
  local ms = at - now_ms
  if ms <= 0 then return 0, false end
  early = math.min(early, per_ms - 1)
  if ms > fdiv(bound, per_ms) + 1 then return bound, true end
  local whole = (ms - 1) * per_ms
  local part = per_ms - early
  if part > bound - whole then return bound, true end
  return whole + part, false
end

-- The state for an instant `ahead` units (of 1/per_ms ms) past now: its
-- expiry rounded up to the ms, and the units it was rounded by.
local function stored_at(ahead, per_ms, now_ms)
  local r = math.fmod(ahead, per_ms)
  local early = 0
  if r > 0 then early = per_ms - r end
  return now_ms + cdiv(ahead, per_ms), early
end

-- Token bucket, in ticks of 1/limit ms (token_bucket.rs).
ALGORITHM.TOKEN = function(limit, period_ms, burst)
  local self = {}
  local capacity = burst * period_ms

  function self.check(stored, cost, now_ms, replaced_len)
    local full_in, fix_expiry = 0, false
    if stored ~= nil then
      full_in, fix_expiry = ahead_of_now(stored.expires_at, stored.early, limit, capacity, now_ms)
    end
    local asked
    if cost <= burst then asked = cost * period_ms end
    local fits = asked ~= nil and full_in <= capacity - asked
    local after = full_in
    if fits then after = full_in + asked end
    local store
    if cost > 0 and (fits or fix_expiry) then
      local at, early = stored_at(after, limit, now_ms)
      store = { value = 'T' .. padded(early, math.max(replaced_len - 1, 0)), expires_at = at }
    end
    local retry
    if not fits and asked ~= nil then
      retry = cdiv(full_in - (capacity - asked), limit)
    end
    return {
      allowed = fits,
      remaining = fdiv(capacity - after, period_ms),
      limit = limit,
      retry = retry,
      reset = cdiv(after, limit),
    }, store
  end
  return self
end

-- GCRA as redis-cell's CL.THROTTLE computes it, in ns (gcra.rs).
local function throttle(max_burst, count_per_period, period_s)
  local self = {}
  -- redis-cell: ((ns as f64) / (n as f64)) as i64: a double, truncated.
  local interval = math.floor((period_s * NS_PER_S) / count_per_period)
  if interval <= 0 then fail(ERR.rate_too_high) end
  local limit = max_burst + 1
  if product_less(MAX_TOLERANCE_NS, 1, interval, limit) then fail(ERR.throttle_burst_too_large) end
  local tolerance = interval * limit
  if tolerance >= EXACT then fail(ERR.throttle_exact) end

  -- (τ − ttl) / T in whole microseconds through a double, as redis-cell.
  local function remaining(next_ns)
    local interval_us = fdiv(interval, 1000)
    if interval_us == 0 then return fdiv(next_ns, interval) end
    return math.floor(fdiv(next_ns, 1000) / interval_us)
  end

  function self.check(stored, quantity, now_ms, replaced_len)
    local tat_in, fix_expiry = 0, false
    if stored ~= nil then
      tat_in, fix_expiry = ahead_of_now(stored.expires_at, stored.early, NS_PER_MS, tolerance, now_ms)
    end
    -- Beyond max_burst + 1 the increment passes τ: limited, never retried.
    local increment
    if quantity <= limit then increment = interval * quantity end
    local limited = increment == nil or tat_in > tolerance - increment
    local ttl, store_at
    if limited then
      ttl = tat_in
      if quantity > 0 and fix_expiry then store_at = tat_in end
    else
      ttl = tat_in + increment
      if quantity > 0 then store_at = ttl end
    end
    local store
    if store_at ~= nil then
      local at, early = stored_at(store_at, NS_PER_MS, now_ms)
      store = { value = 'G' .. padded(early, math.max(replaced_len - 1, 0)), expires_at = at }
    end
    local retry
    if limited and increment ~= nil then retry = tat_in - (tolerance - increment) end
    return {
      limited = limited,
      limit = limit,
      remaining = math.min(remaining(tolerance - ttl), limit),
      retry = retry,
      reset = ttl,
    }, store
  end
  return self
end

-- What CHECK would answer for `cost`, storing nothing (Algorithm::peek).
local function peek(algorithm, stored, cost, now_ms, replaced_len)
  local asked = algorithm.check(stored, cost, now_ms, replaced_len)
  local looked = algorithm.check(stored, 0, now_ms, replaced_len)
  return {
    allowed = asked.allowed,
    remaining = looked.remaining,
    limit = asked.limit,
    retry = asked.retry,
    reset = looked.reset,
  }
end

local function fields(d)
  return { d.allowed and 1 or 0, d.remaining, d.limit, d.retry or -1, d.reset }
end

---------------------------------------------------------------------------
-- Parsing (src/commands/check.rs, mcheck.rs)

local ALGORITHM_NAMES = { FIXED = true, SLIDING = true, TOKEN = true }

-- `limit period [COST c] [ALGORITHM …] [BURST b]` from args[first..last]:
-- { kind, algorithm, cost }.
local function parse_limit(args, first, last)
  local limit = bounded(args[first], 1, MAX_LIMIT, ERR.limit)
  local period_s = bounded(args[first + 1], 1, MAX_PERIOD_S, ERR.period)
  local cost, kind, burst
  local i = first + 2
  while i <= last do
    local option = args[i]
    if i + 1 > last then fail(ERR.syntax) end
    local value = args[i + 1]
    if is_keyword(option, 'COST') and cost == nil then
      cost = bounded(value, 0, MAX_COST, ERR.cost)
    elseif is_keyword(option, 'ALGORITHM') and kind == nil then
      kind = string.upper(value)
      if not ALGORITHM_NAMES[kind] then fail(ERR.algorithm) end
    elseif is_keyword(option, 'BURST') and burst == nil then
      burst = bounded(value, 1, MAX_LIMIT, ERR.burst)
    else
      fail(ERR.syntax)
    end
    i = i + 2
  end
  kind = kind or 'FIXED'
  local period_ms = period_s * 1000
  local algorithm
  if kind == 'TOKEN' then
    burst = burst or limit
    if product_less(MAX_REFILL_MS, limit, burst, period_ms) then fail(ERR.burst_too_large) end
    if burst * period_ms >= EXACT then fail(ERR.token_exact) end
    algorithm = ALGORITHM.TOKEN(limit, period_ms, burst)
  else
    if burst ~= nil then fail(ERR.burst_without_token) end
    if kind == 'SLIDING' and limit * period_ms >= EXACT then fail(ERR.sliding_exact) end
    algorithm = ALGORITHM[kind](limit, period_ms)
  end
  return { kind = kind, algorithm = algorithm, cost = cost or 1 }
end

-- `numkeys key … LIMIT … [LIMIT …]` from args (numkeys first): the keys
-- and their limits, errors in argument order, then a key named twice.
local function parse_multi(args)
  local count = bounded(args[1], 1, MAX_KEYS, ERR.numkeys)
  if #args - 1 < count then fail(ERR.group_per_key) end
  local keys, limits = {}, {}
  for i = 1, count do keys[i] = args[1 + i] end
  local at = count + 2
  local n = #args
  for slot = 1, count do
    if n - at + 1 < 3 then
      if at <= n and is_keyword(args[at], 'LIMIT') then fail(ERR.syntax) end
      fail(ERR.group_per_key)
    end
    if not is_keyword(args[at], 'LIMIT') then fail(ERR.group_per_key) end
    -- The group's options run to the next LIMIT, in name-value pairs.
    local tail = at + 3
    local len = 0
    while tail + len <= n and not is_keyword(args[tail + len], 'LIMIT') do
      len = len + 2
    end
    local last = tail + len - 1
    if last > n then last = n end
    limits[slot] = parse_limit(args, at + 1, last)
    at = last + 1
  end
  if at <= n then fail(ERR.group_per_key) end
  for i = 1, count do
    for j = i + 1, count do
      if keys[i] == keys[j] then fail(ERR.duplicate_key) end
    end
  end
  return keys, limits
end

---------------------------------------------------------------------------
-- Leases (src/limiter/leases.rs, src/store/leases.rs): a sorted set,
-- member = id, score = deadline in UNIX ms, expiring with its last lease.

local function check_id(id)
  if #id < 1 or #id > MAX_ID_LEN then fail(ERR.lease_id) end
  return id
end

-- A score read back as a deadline: cut to the ms; 0 when not a time.
local function deadline_ms(score)
  local s = tonumber(score)
  if s == nil or s ~= s or s < 0 or s >= 1e19 then return 0 end
  return math.floor(s)
end

local function open_leases(key)
  local t = key_type(key)
  if t ~= 'none' and t ~= 'zset' then fail(ERR.wrongtype) end
  return { key = key, changed = false }
end

-- Counted first: a write command called at all makes Redis 6.2 propagate
-- a MULTI/EXEC around the script's effects, even an empty one.
local function prune(set, now_ms)
  local ended = redis.call('ZCOUNT', set.key, '-inf', fmt(now_ms))
  if ended > 0 then
    redis.call('ZREMRANGEBYSCORE', set.key, '-inf', fmt(now_ms))
    set.changed = true
  end
  return ended
end

local function nth_deadline(set, n)
  local found = redis.call('ZRANGE', set.key, fmt(n), fmt(n), 'WITHSCORES')
  if found[2] == nil then return nil end
  return deadline_ms(found[2])
end

local function put(set, id, deadline)
  redis.call('ZADD', set.key, fmt(deadline), id)
  set.changed = true
end

-- Moves the key's expiry to the last deadline when it moved.
local function finish(ctx, set)
  if not set.changed then return end
  local last = nth_deadline(set, -1)
  if last ~= nil and expiry_of(ctx, set.key) ~= last then
    redis.call('PEXPIREAT', set.key, fmt(last))
  end
end

-- An id for a new lease: 32 hex digits, unlike any live lease's.
local function new_id(ctx, set, now_ms)
  local seed = { set.key, fmt(now_ms), ctx.entropy(), tostring(math.random()) }
  for attempt = 1, 100 do
    seed[#seed + 1] = tostring(attempt)
    local id = string.sub(redis.sha1hex(table.concat(seed, '\0')), 1, 32)
    if not redis.call('ZSCORE', set.key, id) then return id end
  end
  fail('ERR could not make a lease id')
end

---------------------------------------------------------------------------
-- The commands (src/commands/*.rs). Each takes the call's context and the
-- module's arguments after the command name.

local COMMANDS = {}

local function check_arity(name, args, arity)
  local count = #args + 1
  if DECLARED_ARITY and ((arity >= 0 and count ~= arity) or (arity < 0 and count < -arity)) then
    arity_error(name)
  end
end

-- CHECK and PEEK: key limit period [options].
local function parse_check(name, args)
  check_arity(name, args, -4)
  if #args < 3 then arity_error(name) end
  return args[1], parse_limit(args, 2, #args)
end

COMMANDS.check = {
  name = 'ratelimit.check',
  run = function(ctx, args)
    local key, request = parse_check('ratelimit.check', args)
    local now_ms = ctx.now()
    local loaded = load(ctx, key, request.kind)
    local decision, store = request.algorithm.check(loaded.state, request.cost, now_ms, #loaded.value)
    if store ~= nil then write(key, loaded, store) end
    return fields(decision)
  end,
}

COMMANDS.peek = {
  name = 'ratelimit.peek',
  flags = { 'no-writes' },
  run = function(ctx, args)
    local key, request = parse_check('ratelimit.peek', args)
    local now_ms = ctx.now()
    local loaded = load(ctx, key, request.kind)
    return fields(peek(request.algorithm, loaded.state, request.cost, now_ms, #loaded.value))
  end,
}

COMMANDS.reset = {
  name = 'ratelimit.reset',
  flags = { 'allow-oom' },
  run = function(ctx, args)
    check_arity('ratelimit.reset', args, -2)
    if #args < 1 then arity_error('ratelimit.reset') end
    -- Every key is checked before any is removed: all or nothing.
    for _, key in ipairs(args) do
      local t = key_type(key)
      if t == 'string' then
        if kind_of_value(redis.call('GET', key)) == nil then fail(ERR.wrongtype) end
      elseif t ~= 'none' then
        fail(ERR.wrongtype)
      end
    end
    -- A key named twice is gone the second time; DEL only what is there
    -- (on Redis 6.2 any write command called propagates a MULTI/EXEC).
    local removed = 0
    for _, key in ipairs(args) do
      if redis.call('EXISTS', key) == 1 then
        removed = removed + redis.call('DEL', key)
      end
    end
    return removed
  end,
}

-- CL.THROTTLE's rounding: whole seconds, one more from a leftover ms.
local function seconds_rounded_up(ns)
  local seconds = fdiv(ns, NS_PER_S)
  if fdiv(ns - seconds * NS_PER_S, NS_PER_MS) > 0 then return seconds + 1 end
  return seconds
end

COMMANDS.throttle = {
  name = 'ratelimit.throttle',
  run = function(ctx, args)
    check_arity('ratelimit.throttle', args, -5)
    if #args ~= 4 and #args ~= 5 then arity_error('ratelimit.throttle') end
    local key = args[1]
    local max_burst = bounded(args[2], 0, MAX_LIMIT - 1, ERR.max_burst)
    local count = bounded(args[3], 1, MAX_LIMIT, ERR.count_per_period)
    local period_s = bounded(args[4], 1, MAX_PERIOD_S, ERR.period)
    local quantity = 1
    if args[5] ~= nil then quantity = bounded(args[5], 0, MAX_COST, ERR.quantity) end
    local gcra = throttle(max_burst, count, period_s)
    local now_ms = ctx.now()
    local loaded = load(ctx, key, 'THROTTLE')
    local verdict, store = gcra.check(loaded.state, quantity, now_ms, #loaded.value)
    if store ~= nil then write(key, loaded, store) end
    local retry = -1
    if verdict.retry ~= nil then retry = seconds_rounded_up(verdict.retry) end
    return {
      verdict.limited and 1 or 0,
      verdict.limit,
      verdict.remaining,
      retry,
      seconds_rounded_up(verdict.reset),
    }
  end,
}

-- Asks every key's limit at one instant (mcheck.rs ask_all, all_of.rs):
-- the verdict, and each limit's answer and write.
local function ask_all(ctx, args)
  local keys, limits = parse_multi(args)
  local now_ms = ctx.now()
  local asked = {}
  for i, key in ipairs(keys) do
    local limit = limits[i]
    local loaded = load(ctx, key, limit.kind)
    local charged, store = limit.algorithm.check(loaded.state, limit.cost, now_ms, #loaded.value)
    asked[i] = {
      key = key,
      loaded = loaded,
      store = store,
      charged = charged,
      looked = peek(limit.algorithm, loaded.state, limit.cost, now_ms, #loaded.value),
    }
  end
  local allowed = true
  for _, a in ipairs(asked) do
    if not a.charged.allowed then allowed = false end
  end
  local binding
  if allowed then
    -- The least room left, remaining / limit; the first of equals.
    for i, a in ipairs(asked) do
      local d = a.charged
      if binding == nil then
        binding = i
      else
        local b = asked[binding].charged
        if product_less(d.remaining, b.limit, b.remaining, d.limit) then binding = i end
      end
    end
  else
    -- The latest retry, never retried ranking first; the first of equals.
    local best
    for i, a in ipairs(asked) do
      if not a.looked.allowed then
        local rank = a.looked.retry or math.huge
        if best == nil or rank > best then
          binding, best = i, rank
        end
      end
    end
  end
  return allowed, binding, asked
end

local function multi_reply(allowed, binding, asked)
  local each = {}
  for i, a in ipairs(asked) do
    if allowed then each[i] = fields(a.charged) else each[i] = fields(a.looked) end
  end
  local b = each[binding]
  return { allowed and 1 or 0, b[2], b[3], b[4], b[5], binding, each }
end

COMMANDS.mcheck = {
  name = 'ratelimit.mcheck',
  keys_counted = true,
  run = function(ctx, args)
    check_arity('ratelimit.mcheck', args, -6)
    -- numkeys key LIMIT limit period at least, on every server: the module
    -- checks it itself where the server does not (Redis 6.2).
    if #args < 5 then arity_error('ratelimit.mcheck') end
    local allowed, binding, asked = ask_all(ctx, args)
    for _, a in ipairs(asked) do
      -- When denied, only what a denying limit stores by itself (a counter
      -- that had no expiry gets one).
      if a.store ~= nil and (allowed or not a.charged.allowed) then
        write(a.key, a.loaded, a.store)
      end
    end
    return multi_reply(allowed, binding, asked)
  end,
}

COMMANDS.mpeek = {
  name = 'ratelimit.mpeek',
  keys_counted = true,
  flags = { 'no-writes' },
  run = function(ctx, args)
    check_arity('ratelimit.mpeek', args, -6)
    if #args < 5 then arity_error('ratelimit.mpeek') end
    return multi_reply(ask_all(ctx, args))
  end,
}

COMMANDS.acquire = {
  name = 'ratelimit.acquire',
  run = function(ctx, args)
    check_arity('ratelimit.acquire', args, -4)
    if #args < 3 then arity_error('ratelimit.acquire') end
    local key = args[1]
    local max = bounded(args[2], 1, MAX_LEASES, ERR.max_leases)
    local lease_ms = bounded(args[3], 1, MAX_LEASE_MS, ERR.lease_ms)
    local id
    if #args == 5 and is_keyword(args[4], 'ID') then
      id = check_id(args[5])
    elseif #args ~= 3 then
      fail(ERR.syntax)
    end
    local now_ms = ctx.now()
    local set = open_leases(key)
    prune(set, now_ms)
    local deadline = now_ms + lease_ms
    local live = redis.call('ZCARD', key)
    local renewed = id ~= nil and redis.call('ZSCORE', key, id) ~= false
    local granted
    if renewed or live < max then
      granted = id or new_id(ctx, set, now_ms)
      put(set, granted, deadline)
    end
    local live_after = redis.call('ZCARD', key)
    local retry = -1
    if granted == nil then
      -- A slot frees once live - max + 1 leases have ended.
      retry = math.max(nth_deadline(set, live - max) - now_ms, 0)
    end
    local last = nth_deadline(set, -1)
    local reset = 0
    if last ~= nil then reset = math.max(last - now_ms, 0) end
    finish(ctx, set)
    return {
      granted and 1 or 0,
      math.max(max - live_after, 0),
      max,
      retry,
      reset,
      granted or false,
    }
  end,
}

COMMANDS.release = {
  name = 'ratelimit.release',
  flags = { 'allow-oom' },
  run = function(ctx, args)
    check_arity('ratelimit.release', args, -3)
    if #args < 2 then arity_error('ratelimit.release') end
    local key = args[1]
    for i = 2, #args do check_id(args[i]) end
    local now_ms = ctx.now()
    local set = open_leases(key)
    prune(set, now_ms)
    local released = 0
    for i = 2, #args do
      if redis.call('ZSCORE', key, args[i]) then
        redis.call('ZREM', key, args[i])
        set.changed = true
        released = released + 1
      end
    end
    finish(ctx, set)
    return released
  end,
}

COMMANDS.renew = {
  name = 'ratelimit.renew',
  run = function(ctx, args)
    check_arity('ratelimit.renew', args, 4)
    if #args ~= 3 then arity_error('ratelimit.renew') end
    local key = args[1]
    local id = check_id(args[2])
    local lease_ms = bounded(args[3], 1, MAX_LEASE_MS, ERR.lease_ms)
    local now_ms = ctx.now()
    local set = open_leases(key)
    prune(set, now_ms)
    local live = redis.call('ZSCORE', key, id) ~= false
    if live then put(set, id, now_ms + lease_ms) end
    finish(ctx, set)
    return live and 1 or 0
  end,
}

-- MODULE LIST's version: major * 10000 + minor * 100 + patch.
local function module_version()
  local major, minor, patch = string.match(VERSION, '^(%d+)%.(%d+)%.(%d+)$')
  return tonumber(major) * 10000 + tonumber(minor) * 100 + tonumber(patch)
end

COMMANDS.version = {
  flags = { 'no-writes' },
  run = function()
    return module_version()
  end,
}

---------------------------------------------------------------------------
-- Calls

-- The call's clock: NOW when given, else the server's TIME, read once.
local function context(pinned_ms)
  local ctx = {}
  local time_ms
  local function server_ms()
    local ok, t = pcall(redis.call, 'TIME')
    if not ok then return nil end
    return tonumber(t[1]) * 1000 + fdiv(tonumber(t[2]), 1000)
  end
  function ctx.now()
    if pinned_ms ~= nil then return pinned_ms end
    if time_ms == nil then
      time_ms = server_ms()
      if time_ms == nil then fail(ERR.no_time) end
    end
    return time_ms
  end
  -- The server's clock as it runs (Redis 6.2's PTTL counts from it).
  function ctx.clock()
    return server_ms() or ctx.now()
  end
  function ctx.entropy()
    local ok, t = pcall(redis.call, 'TIME')
    if ok then return t[1] .. '.' .. t[2] end
    return ''
  end
  return ctx
end

-- Runs command `name` for FCALL's keys and arguments: the module's
-- arguments are the keys then the arguments (numkeys first for the
-- commands that count their keys), less a final NOW unix_ms.
local function run(name, keys, argv)
  local command = COMMANDS[name]
  local args = {}
  if command.keys_counted then args[1] = tostring(#keys) end
  for _, key in ipairs(keys) do args[#args + 1] = key end
  local last = #argv
  local pinned
  if last >= 2 and is_keyword(argv[last - 1], 'NOW') then
    last = last - 2
  end
  local ok, result = pcall(function()
    if last < #argv then
      pinned = bounded(argv[#argv], 0, MAX_NOW_MS, ERR.now)
    end
    for i = 1, last do args[#args + 1] = argv[i] end
    return command.run(context(pinned), args)
  end)
  if ok then return result end
  if type(result) == 'table' and result.ratelimit_error ~= nil then
    return redis.error_reply(result.ratelimit_error)
  end
  error(result, 0)
end

-- Loading a library runs this chunk with little more than the redis table
-- in reach (no pairs, no tostring): plain loops only.
local VERBS = {
  'check', 'peek', 'reset', 'throttle', 'mcheck', 'mpeek', 'acquire', 'release', 'renew', 'version',
}

if redis.register_function then
  for i = 1, #VERBS do
    local verb = VERBS[i]
    redis.register_function({
      function_name = 'ratelimit_' .. verb,
      callback = function(keys, argv) return run(verb, keys, argv) end,
      flags = COMMANDS[verb].flags or {},
    })
  end
else
  -- A script (EVAL, Redis 6.2): ARGV[1] names the function.
  if redis.replicate_commands then redis.replicate_commands() end
  local verb = string.match(ARGV[1] or '', '^ratelimit_(%l+)$')
  if verb == nil or COMMANDS[verb] == nil then
    return redis.error_reply(ERR.no_function)
  end
  local argv = {}
  for i = 2, #ARGV do argv[i - 1] = ARGV[i] end
  return run(verb, KEYS, argv)
end
