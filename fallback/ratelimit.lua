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
FCALL ratelimit_mcheck 2 k1 k2 LIMIT … LIMIT …. RESERVE and SETTLE take the
hash of holds first, then the limiter keys, FCALL's numkeys less one
standing for theirs: FCALL ratelimit_reserve 3 holds k1 k2 id ttl_ms LIMIT ….
Any call may end with NOW <unix_ms>, the instant to decide at, taken so when
the arguments before it still make the command's arity (no lease or hold id
may be NOW); without it the server's clock is read once (from the first
key with an expiry, else TIME: see now() below). Without
redis.register_function (EVAL, Redis 6.2) the same code runs as a script:
ARGV[1] names the function, the rest is as for FCALL.

The module's sources are the specification; the names below follow them
(src/commands, src/limiter, src/store). Lua numbers are doubles, exact for
integers below 2^53: every time is computed relative to now, every product
that could pass 2^53 is either bounded by the arguments (the fallback's own
bounds, refused with an error) or only ever compared, where a rounded value
past 2^53 still compares right against a bound below it. Replies hold no
integer above 2^53 - 1 (MAX_REPLY), as the module's: every one is bounded
by the arguments but a wait for a lease slot held by hand, which is capped,
and a hold's reply replayed from its record, which holds what was replied.

Every request runs this code, and each Lua instruction costs the server
tens of its own, so the common paths are counted in instructions: they
make nothing per call but the reply, an algorithm is a plain function
returning its decision, a limit, a throttle's rate or a state seen before
is looked up rather than parsed again, CHECK writes out the steps of its
commonest case where a call would cost as much as they do, and no server
command is called that the decision does not need. fallback/README.md
says what a call costs.
]]

local VERSION = '0.2.0'

-- The module's bounds (src/limiter/mod.rs, gcra.rs, leases.rs, mcheck.rs,
-- holds.rs).
local MAX_LIMIT = 1e15
local MAX_COST = 1e15
local MAX_PERIOD_S = 1e9
local MAX_REFILL_MS = MAX_PERIOD_S * 1000
local MAX_TOLERANCE_NS = 1e18
local MAX_KEYS = 16
local MAX_LEASES = 100000
local MAX_LEASE_MS = 86400000
local MAX_ID_LEN = 64
local MAX_HOLD_TTL_MS = 86400000
local NS_PER_MS = 1e6
local NS_PER_S = 1e9

-- The fallback's own: integers stay exact below 2^53.
local EXACT = 2 ^ 53
local MAX_NOW_MS = 1e15

-- The module's options that shape holds (src/config.rs), at their defaults:
-- the library has no options. A held estimate is at most this percent of
-- what one request can take from its limit, and a hold lasts at most this.
local HOLD_MAX_PERCENT = 50
local HOLD_MAX_TTL_MS = 60000

-- The largest integer any reply holds, the module's MAX_REPLY: exact in a
-- double, so in every client. A longer wait (a lease slot held by hand
-- until released) is replied as this.
local MAX_REPLY = EXACT - 1

-- The module's NEVER_MS, 2^63 - 1, the latest expiry Redis keeps: a lease
-- deadline for a score of 2^63 or more (+inf: a slot held by hand until
-- released). A double rounds it to 2^63, which stands for it here and is
-- written out as NEVER_TEXT.
local NEVER_MS = 2 ^ 63
local NEVER_TEXT = '9223372036854775807'

-- PEXPIRETIME arrived with 7.0; Redis 6.2 only has PTTL.
local HAS_PEXPIRETIME = redis.REDIS_VERSION_NUM ~= nil
-- Redis 6.2 propagates a MULTI/EXEC around a script's effects as soon as
-- it calls a write command, even one that changes nothing; 7.0+ propagate
-- only what changed.
local EMPTY_WRITES_PROPAGATE = redis.REDIS_VERSION_NUM == nil

local ERR = {
  limit = 'ERR limit must be a positive integer (at most 1000000000000000)',
  period = 'ERR period must be a positive integer number of seconds (at most 1000000000)',
  cost = 'ERR cost must be a non-negative integer (at most 1000000000000000)',
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
  lease_id = 'ERR id must be 1 to 64 bytes and not NOW',
  wrongtype = 'WRONGTYPE Operation against a key holding the wrong kind of value',
  not_limiter_state = 'WRONGTYPE the key holds a string that is not limiter state',
  short_group = 'ERR syntax error: LIMIT needs a limit and a period',
  hold_ttl = 'ERR ttl_ms must be an integer from 1 to 86400000',
  estimate = 'ERR estimate must be a non-negative integer (at most 1000000000000000)',
  actual = 'ERR actual must be a non-negative integer (at most 1000000000000000)',
  cost_or_hold = 'ERR syntax error: a LIMIT takes COST or HOLD, not both',
  needs_actual = 'ERR syntax error: each LIMIT of SETTLE needs ACTUAL',
  holds_is_limiter = 'ERR the holds key cannot also be a limiter key',
  not_holds = 'WRONGTYPE the key holds a hash that is not a record of holds',
  -- The fallback's own.
  now = 'ERR NOW must be a UNIX time in milliseconds, an integer from 0 to 1000000000000000',
  sliding_exact = 'ERR limit x period is too large for the script fallback: a SLIDING window needs limit x period_ms below 2^53',
  token_exact = 'ERR burst x period is too large for the script fallback: a TOKEN bucket needs burst x period_ms below 2^53',
  throttle_exact = 'ERR max_burst is too large for this rate for the script fallback: THROTTLE needs (max_burst + 1) x period / count_per_period below 2^53 ns (about 104 days)',
  no_function = 'ERR Function not found',
  no_time = 'ERR the server refused TIME in a script: pass NOW unix_ms',
}

-- The standard functions the library calls on every request, bound at its
-- first call (the chunk that loads a library sees only `redis`): a local
-- costs far less than looking a global up, then its field, on each use.
local find, match, byte, sub, upper, rep, format, concat
local floor, max, min, redis_call, redis_pcall
-- serve's pcall, bound as the others are, under another name: a local
-- named pcall would hide the global it is read from.
local protected

local function bind_standard_functions()
  find, match, byte, sub, upper, rep, format = string.find, string.match, string.byte, string.sub, string.upper,
    string.rep, string.format
  concat = table.concat
  floor, max, min = math.floor, math.max, math.min
  redis_call, redis_pcall, protected = redis.call, redis.pcall, pcall
end

-- Errors travel as a table through error() and become the reply at the
-- top (serve), with their text exactly as given.
local function fail(text)
  error({ ratelimit_error = text }, 0)
end

local function arity_error(command)
  fail("ERR wrong number of arguments for '" .. command .. "' command")
end

---------------------------------------------------------------------------
-- Integers (src/decimal.rs)

-- floor(a / b) and ceil(a / b) for integers 0 <= a < 2^53, b > 0. Below
-- 2^53 the double a / b never rounds up to the next integer (it is at
-- least 1/b away, more than half its ulp), so a % b, Lua's a - floor(a /
-- b) * b, is the exact remainder, and dividing the exact multiple it leaves
-- is exact too. An operator, where math.fmod is a call.
local function fdiv(a, b)
  return (a - a % b) / b
end

local function cdiv(a, b)
  local r = a % b
  if r > 0 then return (a - r) / b + 1 end
  return (a - r) / b
end

-- An integer in decimal, at half the cost of '%.0f'. '%d' (a C long)
-- prints every integer below 2^63 exactly: all those below 2^53, and the
-- lease deadlines past it, read from scores that are integers there.
local function fmt(n)
  return format('%d', n)
end

-- The value of a string of digits with no leading zero (or '0'), at most
-- `most`, the largest such integer written out: nil past it.
local function digits_at_most(digits, most)
  local len = #digits
  if len >= #most and (len > #most or digits > most) then return nil end
  return tonumber(digits)
end

local I64_MAX = '9223372036854775807'
local I64_MIN_MAGNITUDE = '9223372036854775808'
local U64_MAX = '18446744073709551615'

-- An i64 with Redis' string2ll rules: optional '-', no '+', no spaces, no
-- leading zeros. Exact below 2^53; larger values keep their order. One
-- anchored pattern rejects every other form tonumber would take ('+5',
-- ' 5', '1e3', '0x10', '05'); tonumber then converts what is left.
local function parse_i64(s)
  if not find(s, '^%-?[1-9]%d*$') then
    if s == '0' then return 0 end
    return nil
  end
  if byte(s) == 45 then
    local magnitude = digits_at_most(string.sub(s, 2), I64_MIN_MAGNITUDE)
    return magnitude and -magnitude
  end
  return digits_at_most(s, I64_MAX)
end

-- A non-negative i64 as INCR writes it.
local function decode_u64(s)
  if find(s, '^[1-9]%d*$') then
    if #s < #I64_MAX then return tonumber(s) end
    return digits_at_most(s, I64_MAX)
  end
  if s == '0' then return 0 end
  return nil
end

-- A string of digits as INCR writes it: no leading zero.
local function canonical_u64(digits)
  if #digits > 1 and byte(digits) == 48 then return nil end
  if #digits < #I64_MAX then return tonumber(digits) end
  return digits_at_most(digits, I64_MAX)
end

-- The most digits a number field is padded to: a u64's 20 (Digits::padded).
local MAX_PADDED = #U64_MAX

-- `n` in decimal, zero-padded to `width` digits, at most MAX_PADDED.
local function padded(n, width)
  local digits = fmt(n)
  if #digits < width then
    if width > MAX_PADDED then width = MAX_PADDED end
    digits = rep('0', width - #digits) .. digits
  end
  return digits
end

-- Arguments repeat from call to call (an application asks the same limits
-- over and over): a table lookup by the argument's text costs far less
-- than checking and converting its digits again. Only integers are kept,
-- and the table starts over when full, so it stays small.
local ARGUMENTS_KEPT = 1024
local parsed_arguments, arguments_kept = {}, 0

local function parse_argument(s)
  local value = parse_i64(s)
  if value == nil then return nil end
  if arguments_kept >= ARGUMENTS_KEPT then
    parsed_arguments, arguments_kept = {}, 0
  end
  parsed_arguments[s] = value
  arguments_kept = arguments_kept + 1
  return value
end

-- The rounding error of the double product x = a × b: a × b = x + that,
-- exactly (Dekker's product, each factor split in halves of 26 bits whose
-- partial products doubles hold exactly).
local SPLITTER = 2 ^ 27 + 1

local function split(a)
  local t = SPLITTER * a
  local high = t - (t - a)
  return high, a - high
end

local function product_error(a, b, x)
  local a_high, a_low = split(a)
  local b_high, b_low = split(b)
  return ((a_high * b_high - x) + a_high * b_low + a_low * b_high) + a_low * b_low
end

-- a × b < c × d, exactly, for non-negative integers below 10^21. Doubles
-- round each product once, and rounding keeps order: the rounded products
-- decide whenever they differ, and equal ones below 2^53 are exact. Equal
-- ones above differ by their rounding errors alone.
local function product_less(a, b, c, d)
  local x, y = a * b, c * d
  if x ~= y then return x < y end
  if x < EXACT then return false end
  return product_error(a, b, x) < product_error(c, d, y)
end

---------------------------------------------------------------------------
-- Arguments (src/args.rs)

-- Keywords match in any case. They mostly come in upper case, which a
-- lookup finds without making a new string.
local KEYWORDS = {
  COST = 'COST', ALGORITHM = 'ALGORITHM', BURST = 'BURST', LIMIT = 'LIMIT', ID = 'ID', NOW = 'NOW',
  HOLD = 'HOLD', ACTUAL = 'ACTUAL',
}

local function keyword(word)
  return KEYWORDS[word] or upper(word)
end

local function is_keyword(word, name)
  return (KEYWORDS[word] or upper(word)) == name
end

-- A client's word as an error quotes it (src/error.rs, Word): at most 32
-- bytes, printable ASCII as given and any other byte as `?`, with `...`
-- after a longer word.
local function shown(word)
  local text = string.gsub(string.sub(word, 1, 32), '[^\32-\126]', '?')
  if #word > 32 then text = text .. '...' end
  return text
end

local function unknown_option(word)
  fail("ERR syntax error: unknown option '" .. shown(word) .. "'")
end

local function repeated_option(name)
  fail('ERR syntax error: ' .. name .. ' given twice')
end

local function missing_value(name)
  fail('ERR syntax error: ' .. name .. ' needs a value')
end

-- An integer argument in low..high, else `err`.
local function bounded(arg, low, high, err)
  local value = parsed_arguments[arg] or parse_argument(arg)
  if value == nil or value < low or value > high then
    fail(err)
  end
  return value
end

---------------------------------------------------------------------------
-- The call's instant: NOW when given, else the server's clock, read once.
-- Set by serve before each call (a call runs alone: nothing else in the
-- library runs until it returns).
--
-- Where PEXPIRETIME exists (7.0+), the first key with an expiry that a
-- call loads reads the clock: its PTTL counts from the instant the server
-- reads (the clock TIME reads, or the command's frozen one where the
-- server freezes it), so that key's expiry is known relative to the
-- instant, which is all a fixed window or a bucket needs to decide. The
-- instant itself, when something absolute is to be written or another
-- key compared, is that key's PEXPIRETIME less its PTTL. A PTTL costs
-- less than TIME (an integer, where TIME is two strings to convert), and
-- a counter grown in its window needs nothing more. Without such a key,
-- TIME is read.

-- The instant in UNIX ms once known (NOW's when pinned), and the key whose
-- PTTL (clock_ttl) fixed it before that.
local time_ms, clock_key, clock_ttl

-- TIME's seconds change once a second: the last ones read are kept, as
-- text and value, which spares converting them on every call.
local seconds_text, seconds = '', 0

-- TIME in ms, nil when the server refuses it: the microseconds less
-- their remainder by 1000 divide exactly.
local function server_ms()
  local t = redis_pcall('TIME')
  if t.err ~= nil then return nil end
  if t[1] ~= seconds_text then seconds_text, seconds = t[1], tonumber(t[1]) end
  local us = tonumber(t[2])
  return seconds * 1000 + (us - us % 1000) / 1000
end

local function now()
  if time_ms == nil then
    if clock_key ~= nil then
      time_ms = redis_call('PEXPIRETIME', clock_key) - clock_ttl
    else
      time_ms = server_ms()
      if time_ms == nil then fail(ERR.no_time) end
    end
  end
  return time_ms
end

-- The server's clock as it runs (Redis 6.2's PTTL counts from it).
local function clock()
  return server_ms() or now()
end

---------------------------------------------------------------------------
-- Keys: what they hold, and writing them (src/store/mod.rs)

-- A command's refusal of a key of another type, as redis.pcall returns it:
-- the standard WRONGTYPE error; any other error goes on as raised.
local function refuse_type(reply)
  if find(reply.err, '^WRONGTYPE') then fail(ERR.wrongtype) end
  error(reply, 0)
end

-- The string at `key`, nil for none. GET refuses a key of another type
-- itself, which spares a TYPE on every call.
local function get_string(key)
  local value = redis_pcall('GET', key)
  if type(value) == 'table' then refuse_type(value) end
  return value or nil
end

-- The key's absolute expiry in UNIX ms, nil for none.
local function expiry_of(key)
  if HAS_PEXPIRETIME then
    local at = redis_call('PEXPIRETIME', key)
    if at < 0 then return nil end
    return at
  end
  -- Redis 6.2: PTTL counts from the server's clock when it runs; a reading
  -- of that clock on each side in the same millisecond pins it.
  local at
  for _ = 1, 5 do
    local before = clock()
    local ttl = redis_call('PTTL', key)
    if ttl < 0 then return nil end
    local after = clock()
    at = after + ttl
    -- 0: the expiry has passed (a script sees keys as of its start), by
    -- an unknown amount; as of the call's instant, the state has ended.
    if ttl == 0 then return min(at, now()) end
    if before == after then break end
  end
  return at
end

-- The four layouts (src/limiter/*.rs, Layout::decode): each returns the
-- state's fields, nil for a value of another layout. FIXED's is the count
-- itself (decode_u64).

-- SLIDING's: previous, current, and their texts (kept: past 2^53 a count
-- does not survive the trip through a double, and a moved window stores
-- it again).
local function decode_sliding(value)
  local previous_text, current_text = match(value, '^S(%d+):(%d+)$')
  if previous_text == nil then return nil end
  local previous, current = canonical_u64(previous_text), canonical_u64(current_text)
  if previous == nil or current == nil then return nil end
  return previous, current, previous_text, current_text
end

-- TOKEN's and THROTTLE's: how early the stored instant is, before the
-- key's expiry: the digits after the layout's letter (`tag`, as a byte),
-- leading zeros allowed, at most u64::MAX.
local function decode_early(value, tag)
  if byte(value) ~= tag or #value < 2 then return nil end
  -- The digits after the zeros: none when all are zeros.
  local digits = match(value, '^.0*(%d*)$')
  if digits == nil then return nil end
  if digits == '' then return 0 end
  if #digits < #U64_MAX then return tonumber(digits) end
  return digits_at_most(digits, U64_MAX)
end

local function decode_token(value)
  return decode_early(value, 84) -- 'T'
end

local function decode_throttle(value)
  return decode_early(value, 71) -- 'G'
end

-- Stores `value` expiring `left` ms after the call's instant over the
-- key's `old_value` (nil: no key) expiring `old_left` after it, with the
-- module's effect: INCRBY for a counter grown in its window (by `grown`;
-- `value` is then not needed), SET KEEPTTL for a new value, PEXPIREAT for
-- a new expiry, SET PXAT for both. Integers go to the server as numbers,
-- which it writes out in full below 2^53 (Redis 7.0's "%.17g", 7.2's
-- integer printing), for less than a string.format here.
local function write(key, old_value, old_left, value, left, grown)
  if old_value == nil then
    redis_call('SET', key, value, 'PXAT', now() + left)
  elseif old_left == left and grown ~= nil then
    redis_call('INCRBY', key, grown)
  elseif old_left == left then
    redis_call('SET', key, value, 'KEEPTTL')
  elseif old_value == value then
    redis_call('PEXPIREAT', key, now() + left)
  else
    redis_call('SET', key, value, 'PXAT', now() + left)
  end
end

-- A force-charge's or a refund's change (store/holds.rs, Adjustment):
-- `value` written over the key's `old_value` as write makes it, or the
-- key deleted when the state has already ended (a bucket refunded to
-- full).
local function adjust(key, old_value, old_left, value, left, grown)
  if left <= 0 then
    redis_call('DEL', key)
  else
    write(key, old_value, old_left, value, left, grown)
  end
end

---------------------------------------------------------------------------
-- The algorithms (src/limiter/*.rs). Each takes the limit `l` (kind,
-- limit, period_ms, burst: parse_limit's, or a hold's), the request's cost
-- and the loaded state (value, the ms from the call's instant to its
-- expiry, fields), and returns the decision, allowed, remaining, retry
-- (nil: never, -1 in the reply), reset, then what to store: the value and
-- the ms to its expiry (nil: nothing), and for a counter grown in its
-- window the growth (write). Times are relative to the instant, which only
-- the sliding window needs itself. Plain values, no tables: these run on
-- every call.

-- Fixed window: the INCR + EXPIRE counter (fixed_window.rs).
local function fixed_window(l, cost, value, left, count)
  local limit, period_ms = l.limit, l.period_ms
  -- The steady state, a counter with room in its window, answered first:
  -- what the rest below makes of it, in a third of the instructions.
  if left ~= nil and left > 0 and left <= period_ms and value ~= nil and count <= limit and cost <= limit - count then
    local count_after = count + cost
    if cost > 0 then return true, limit - count_after, nil, left, nil, left, cost end
    return true, limit - count_after, nil, count_after > 0 and left or 0, nil, left
  end
  local ends, fix_expiry, in_window = period_ms, false, false
  if value == nil then
    count = 0
  elseif left == nil then
    fix_expiry = count > 0
  elseif left > period_ms then
    fix_expiry = true
  elseif left > 0 then
    ends, in_window = left, true
  else
    -- The window ended: a fresh one, whatever was counted.
    count = 0
  end
  -- A count above the limit (it was lowered) fits nothing.
  local fits = count <= limit and cost <= limit - count
  local count_after = count
  if fits then count_after = count + cost end
  local store, grown
  if cost > 0 and fits and in_window then
    grown = cost
  elseif cost > 0 and fits then
    store = fmt(count_after)
  elseif cost > 0 and fix_expiry then
    store = value
  end
  local retry
  if not (fits or cost > limit) then retry = ends end
  local reset = 0
  if count_after > 0 then reset = ends end
  local remaining = 0
  if count_after < limit then remaining = limit - count_after end
  return fits, remaining, retry, reset, store, ends, grown
end

-- Force-charges and refunds (Algorithm::force, Algorithm::refund): what
-- SETTLE and a sweep of ended holds do to a limit, with the algorithm's
-- arguments but `units` for the cost, the call's instant, and for a
-- refund `charged_at_ms`, the instant the units were taken. Each returns
-- the value to store and the ms to its expiry (and a counter's growth, as
-- the algorithms do), nil when nothing changes. A force-charge of units
-- always stores.

-- A count after `units` more: at most MAX_COUNT, 2^53 - 1 (a count set
-- higher by hand comes down to it).
local MAX_COUNT = MAX_REPLY

local function counted(count, units)
  return min(count + units, MAX_COUNT)
end

-- `units` more in the window CHECK sees, fitting or not.
local function fixed_force(l, units, _, value, left, count)
  if units == 0 then return nil end
  local period_ms = l.period_ms
  local ends, in_window = period_ms, false
  if value == nil then
    count = 0
  elseif left ~= nil and left > 0 and left <= period_ms then
    ends, in_window = left, true
  elseif left ~= nil and left <= 0 then
    count = 0
  end
  local after = counted(count, units)
  if in_window and after > count then return fmt(after), ends, after - count end
  return fmt(after), ends
end

-- `units` back while the window they were taken in lasts.
local function fixed_refund(l, units, charged_at_ms, now_ms, value, left, count)
  if units == 0 or value == nil or left == nil or left <= 0 then return nil end
  local at = now_ms + left
  if charged_at_ms < at - l.period_ms or charged_at_ms >= at then return nil end
  local taken = min(units, count)
  if taken == 0 then return nil end
  return fmt(count - taken), left
end

-- The sliding window's counts, in unit-milliseconds (sliding_window.rs).
-- Past 2^53 a weight is inexact, but then it is above the budget too.
local function weighted(previous, current, elapsed, period_ms)
  return previous * (period_ms - elapsed) + current * period_ms
end

local function first_fitting_elapsed(previous, room, period_ms)
  if previous == 0 then return 0 end
  local allowance = fdiv(room * period_ms, previous)
  local elapsed = max(period_ms - allowance, 0)
  if elapsed < period_ms then return elapsed end
  return nil
end

local function first_admitting_ms(window, elapsed, previous, current, limit, period_ms, cost)
  local start = window * period_ms
  if current <= limit and cost <= limit - current then
    local e = first_fitting_elapsed(previous, limit - current - cost, period_ms)
    if e ~= nil then return start + max(e, elapsed) end
  end
  local next_start = start + period_ms
  local e = first_fitting_elapsed(current, max(limit - cost, 0), period_ms)
  if e ~= nil then return next_start + e end
  return next_start + period_ms
end

local function empty_at_ms(window, previous, current, period_ms)
  local start = window * period_ms
  if current > 0 then return start + 2 * period_ms end
  if previous > 0 then return start + period_ms end
  return 0
end

-- The counts of a stored state seen from the window of now (counts_at):
-- that window, the ms elapsed in it, previous and current with their
-- texts, and whether the stored expiry is not the one they call for.
local function sliding_counts(period_ms, now_ms, value, left,
                              stored_previous, stored_current, stored_previous_text, stored_current_text)
  local window = fdiv(now_ms, period_ms)
  local elapsed = now_ms - window * period_ms
  if value == nil then return window, elapsed, 0, '0', 0, '0', false end
  local stored_window, fix_expiry = window, true
  local at = left and now_ms + left
  if at ~= nil and at <= (window + 2) * period_ms then
    stored_window, fix_expiry = max(fdiv(max(at - 1, 0), period_ms) - 1, 0), false
  end
  if stored_window == window then
    return window, elapsed, stored_previous, stored_previous_text, stored_current, stored_current_text, fix_expiry
  elseif stored_window + 1 == window then
    return window, elapsed, stored_current, stored_current_text, 0, '0', fix_expiry
  end
  return window, elapsed, 0, '0', 0, '0', fix_expiry
end

-- Sliding window counter (sliding_window.rs): the windows are the
-- clock's, so it asks for the instant.
local function sliding_window(l, cost, value, left, a, b, c, d)
  local limit, period_ms = l.limit, l.period_ms
  local now_ms = now()
  local window, elapsed, previous, previous_text, current, current_text, fix_expiry =
    sliding_counts(period_ms, now_ms, value, left, a, b, c, d)
  local budget = limit * period_ms
  local fits = weighted(previous, current, elapsed, period_ms) + cost * period_ms <= budget
  local current_after, current_after_text = current, current_text
  if fits then
    current_after = current + cost
    current_after_text = fmt(current_after)
  end
  local used = weighted(previous, current_after, elapsed, period_ms)
  local remaining = 0
  if used <= budget then remaining = fdiv(budget - used, period_ms) end
  local retry
  if not (fits or cost > limit) then
    retry = max(first_admitting_ms(window, elapsed, previous, current, limit, period_ms, cost) - now_ms, 0)
  end
  local reset = max(empty_at_ms(window, previous, current_after, period_ms) - now_ms, 0)
  if cost > 0 and (fits or fix_expiry) then
    return fits, remaining, retry, reset,
      'S' .. previous_text .. ':' .. current_after_text, (window + 2) * period_ms - now_ms
  end
  return fits, remaining, retry, reset
end

-- `units` more in the current window, fitting or not.
local function sliding_force(l, units, now_ms, value, left, a, b, c, d)
  if units == 0 then return nil end
  local period_ms = l.period_ms
  local window, _, _, previous_text, current, current_text =
    sliding_counts(period_ms, now_ms, value, left, a, b, c, d)
  return 'S' .. previous_text .. ':' .. fmt(counted(current, units)), (window + 2) * period_ms - now_ms
end

-- `units` back from the window they were taken in, while it is the
-- current or the previous one.
local function sliding_refund(l, units, charged_at_ms, now_ms, value, left, a, b, c, d)
  if units == 0 or value == nil then return nil end
  local period_ms = l.period_ms
  local window, _, previous, previous_text, current, current_text =
    sliding_counts(period_ms, now_ms, value, left, a, b, c, d)
  local charged_window = fdiv(charged_at_ms, period_ms)
  if charged_window == window and current > 0 then
    current_text = fmt(current - min(units, current))
  elseif charged_window + 1 == window and previous > 0 then
    previous_text = fmt(previous - min(units, previous))
  else
    return nil
  end
  return 'S' .. previous_text .. ':' .. current_text, (window + 2) * period_ms - now_ms
end

-- How far past now (in units of 1/per_ms ms) a stored instant is: the key
-- expires `ms` after now, and the instant is `early` units before that (at
-- most per_ms - 1). Clamped to `bound` (below 2^53); the second result
-- says it was. The whole ms, (ms - 1) × per_ms, is compared before it is
-- used: past 2^53 the double rounds, but never to bound or below.
local function ahead_of_now(ms, early, per_ms, bound)
  if ms == nil or ms <= 0 then return 0, false end
  local whole = (ms - 1) * per_ms
  if whole > bound then return bound, true end
  if early >= per_ms then early = per_ms - 1 end
  local part = per_ms - early
  if part > bound - whole then return bound, true end
  return whole + part, false
end

-- The value of a state `early` units (of 1/per_ms ms) before its expiry:
-- `tag` .. early, as wide as the value it replaces (`replaced`, whose early
-- was `replaced_early`). The value replaced says the same when the early
-- is (and its width is not past MAX_PADDED): it is kept, which spares
-- writing the number out.
local function early_text(tag, early, replaced, replaced_early)
  if replaced == nil then return tag .. fmt(early) end
  if early == replaced_early and #replaced <= MAX_PADDED + 1 then return replaced end
  return tag .. padded(early, #replaced - 1)
end

-- The state for an instant `ahead` units past now: its value (early_text)
-- and its expiry in ms from now, rounded up.
local function stored_at(tag, ahead, per_ms, replaced, replaced_early)
  local r = ahead % per_ms
  if r == 0 then return early_text(tag, 0, replaced, replaced_early), ahead / per_ms end
  return early_text(tag, per_ms - r, replaced, replaced_early), (ahead - r) / per_ms + 1
end

-- Token bucket, in ticks of 1/limit ms (token_bucket.rs). The reset is
-- the stored expiry: the instant the bucket is full again, rounded up to
-- the ms (stored_at's work, done here once for both; fdiv and cdiv
-- written out, a call costing as much as they do).
local function token_bucket(l, cost, value, left, early)
  local limit, period_ms, burst = l.limit, l.period_ms, l.burst
  local capacity = burst * period_ms
  local full_in, fix_expiry = 0, false
  if value ~= nil then
    full_in, fix_expiry = ahead_of_now(left, early, limit, capacity)
  end
  local asked
  if cost <= burst then asked = cost * period_ms end
  local fits = asked ~= nil and full_in <= capacity - asked
  local after = full_in
  if fits then after = full_in + asked end
  local retry
  if not fits and asked ~= nil then
    retry = cdiv(full_in - (capacity - asked), limit)
  end
  local room = capacity - after
  local remaining = (room - room % period_ms) / period_ms
  local r = after % limit
  local reset, after_early = (after - r) / limit, 0
  if r > 0 then reset, after_early = reset + 1, limit - r end
  if cost > 0 and (fits or fix_expiry) then
    return fits, remaining, retry, reset, early_text('T', after_early, value, early), reset
  end
  return fits, remaining, retry, reset
end

-- `units` tokens more taken, fitting or not, down to an empty bucket and
-- no further.
local function token_force(l, units, _, value, left, early)
  if units == 0 then return nil end
  local limit, period_ms, burst = l.limit, l.period_ms, l.burst
  local capacity = burst * period_ms
  local full_in = 0
  if value ~= nil then full_in = ahead_of_now(left, early, limit, capacity) end
  -- units × period_ms is exact when units <= burst, and past capacity else.
  local after = capacity
  if units <= burst then after = min(full_in + units * period_ms, capacity) end
  return stored_at('T', after, limit, value, early)
end

-- `units` tokens back, up to a full bucket, whenever they were taken. A
-- bucket emptied under slower or larger parameters stores the empty one
-- of these, even for no units.
local function token_refund(l, units, _, _, value, left, early)
  if value == nil then return nil end
  local limit, period_ms, burst = l.limit, l.period_ms, l.burst
  local full_in, clamped = ahead_of_now(left, early, limit, burst * period_ms)
  local after = 0
  if units < burst then after = max(full_in - units * period_ms, 0) end
  if after == full_in and not clamped then return nil end
  return stored_at('T', after, limit, value, early)
end

-- GCRA as redis-cell's CL.THROTTLE computes it, in ns (gcra.rs): a rate,
-- { interval = the emission interval T, limit, tolerance = τ, interval_us
-- = T in whole microseconds }.
local function throttle_rate(max_burst, count_per_period, period_s)
  -- redis-cell: ((ns as f64) / (n as f64)) as i64: a double, truncated.
  local interval = floor((period_s * NS_PER_S) / count_per_period)
  if interval <= 0 then fail(ERR.rate_too_high) end
  local limit = max_burst + 1
  if product_less(MAX_TOLERANCE_NS, 1, interval, limit) then fail(ERR.throttle_burst_too_large) end
  local tolerance = interval * limit
  if tolerance >= EXACT then fail(ERR.throttle_exact) end
  return { interval = interval, limit = limit, tolerance = tolerance, interval_us = fdiv(interval, 1000) }
end

-- (τ − ttl) / T in whole microseconds through a double, as redis-cell: the
-- quotient of two non-negative integers below 2^53, truncated.
local function throttle_remaining(next_ns, rate)
  local interval_us = rate.interval_us
  if interval_us == 0 then return fdiv(next_ns, rate.interval) end
  local q = (next_ns - next_ns % 1000) / 1000 / interval_us
  return q - q % 1
end

-- limited, remaining, retry (ns, nil: never), reset (ns), then what to
-- store as for the algorithms above.
local function gcra(rate, quantity, value, left, early)
  local interval, limit, tolerance = rate.interval, rate.limit, rate.tolerance
  local tat_in, fix_expiry = 0, false
  if value ~= nil then
    tat_in, fix_expiry = ahead_of_now(left, early, NS_PER_MS, tolerance)
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
  local retry
  if limited and increment ~= nil then retry = tat_in - (tolerance - increment) end
  local remaining = throttle_remaining(tolerance - ttl, rate)
  if remaining > limit then remaining = limit end
  if store_at ~= nil then
    return limited, remaining, retry, ttl, stored_at('G', store_at, NS_PER_MS, value, early)
  end
  return limited, remaining, retry, ttl
end

---------------------------------------------------------------------------
-- The kinds (src/limiter/mod.rs, kinds!): every kind of limiter state a
-- key can hold, in the module's order, which is also the order a value's
-- kind is looked up in. Each has its name (ALGORITHM's keyword), its
-- layout's decoder, how a request reaches it (for the error that meets its
-- key elsewhere) and the algorithm CHECK chooses by that name, nil for one
-- no ALGORITHM chooses, with its force-charge and refund (holds). Everything
-- else about kinds is derived from here.

local KINDS = {
  {
    name = 'FIXED', decode = decode_u64, chosen_by = 'ALGORITHM FIXED',
    algorithm = fixed_window, force = fixed_force, refund = fixed_refund,
  },
  {
    name = 'SLIDING', decode = decode_sliding, chosen_by = 'ALGORITHM SLIDING',
    algorithm = sliding_window, force = sliding_force, refund = sliding_refund,
  },
  {
    name = 'TOKEN', decode = decode_token, chosen_by = 'ALGORITHM TOKEN',
    algorithm = token_bucket, force = token_force, refund = token_refund,
  },
  { name = 'THROTTLE', decode = decode_throttle, chosen_by = 'RATELIMIT.THROTTLE', algorithm = nil },
}

-- Every kind by name, and the ones CHECK can choose (Chosen::named); the
-- error for another name lists those (Chosen::NAMES, OneOf). Plain loops
-- and `..`: loading sees no table library.
local KIND, CHOSEN, chosen_names = {}, {}, {}
for i = 1, #KINDS do
  local kind = KINDS[i]
  KIND[kind.name] = kind
  kind.decoded, kind.kept = {}, 0
  if kind.algorithm ~= nil then
    CHOSEN[kind.name] = kind
    chosen_names[#chosen_names + 1] = kind.name
  end
end
local one_of = chosen_names[1]
for i = 2, #chosen_names do
  one_of = one_of .. (i == #chosen_names and ' or ' or ', ') .. chosen_names[i]
end
ERR.algorithm = 'ERR ALGORITHM must be ' .. one_of

-- CHECK without ALGORITHM.
local FIXED, THROTTLE = KIND.FIXED, KIND.THROTTLE
local DEFAULT_ALGORITHM = FIXED

-- The kind whose state `value` is, nil for none (Id::of_value).
local function kind_of_value(value)
  for i = 1, #KINDS do
    if KINDS[i].decode(value) ~= nil then return KINDS[i] end
  end
  return nil
end

-- The values of the layouts of one field (a count, an early) repeat from
-- call to call as arguments do: each kind keeps those it decoded, by the
-- value (kind.decoded, started over when full), and a value seen before
-- is looked up rather than matched and converted again.
local DECODED_KEPT = 1024

-- The state of `kind` at `key`, whose GET replied `value`: the stored
-- bytes (nil for none), the ms from the call's instant to the key's expiry
-- (0 or less: it has come; nil: none), then the layout's fields. Another
-- kind's state is refused with both kinds named; anything else with the
-- standard WRONGTYPE (GET refuses a key of another type itself, which
-- spares a TYPE on every call). The first key with an expiry loaded before
-- the instant is known fixes it (see now): no write may move that key's
-- expiry before now() has been asked, which every write of an expiry does
-- first.
local function loaded(key, kind, value)
  if not value then return nil end
  -- Only strings are kept: a value found is one.
  local a, b, c, d = kind.decoded[value]
  if a == nil then
    if type(value) == 'table' then refuse_type(value) end
    a, b, c, d = kind.decode(value)
    if a == nil then
      local held = kind_of_value(value)
      if held == nil then fail(ERR.not_limiter_state) end
      fail('WRONGTYPE the key holds ' .. held.name .. ' limiter state, not ' .. kind.name
        .. '; use ' .. held.chosen_by .. ' or RATELIMIT.RESET it')
    end
    if b == nil then
      if kind.kept >= DECODED_KEPT then kind.decoded, kind.kept = {}, 0 end
      kind.decoded[value] = a
      kind.kept = kind.kept + 1
    end
  end
  if time_ms == nil and clock_key == nil and HAS_PEXPIRETIME then
    local ttl = redis_call('PTTL', key)
    if ttl > 0 then
      clock_key, clock_ttl = key, ttl
      return value, ttl, a, b, c, d
    end
    if ttl < 0 then return value, nil, a, b, c, d end
    -- 0: the expiry has come by the server's clock (a script sees keys
    -- as of its start), by an unknown amount: TIME says how far.
  end
  local at = expiry_of(key)
  return value, at and at - now(), a, b, c, d
end

local function load(key, kind)
  return loaded(key, kind, redis_pcall('GET', key))
end

---------------------------------------------------------------------------
-- Parsing (src/commands/check.rs, mcheck.rs)

-- The options RESERVE's limits take (COST or HOLD) and SETTLE's (ACTUAL,
-- which they need); CHECK's (and PEEK's, MCHECK's, MPEEK's) are COST,
-- ALGORITHM and BURST.
local RESERVE_OPTIONS = { COST = true, HOLD = true, ALGORITHM = true, BURST = true }
local SETTLE_OPTIONS = { ACTUAL = true, ALGORITHM = true, BURST = true }

-- `limit period [COST c] [ALGORITHM …] [BURST b]` from args[first..last],
-- with the `options` given (nil: CHECK's): the kind (its entry in KINDS),
-- limit, period_ms, burst (TOKEN's), cost, then HOLD's estimate and
-- ACTUAL's value when given.
local function parse_limit(args, first, last, options)
  local limit = bounded(args[first], 1, MAX_LIMIT, ERR.limit)
  local period_s = bounded(args[first + 1], 1, MAX_PERIOD_S, ERR.period)
  local cost, kind, burst, hold, actual
  -- As the module: an unknown option first, then one given twice (or COST
  -- with HOLD), then one without its value.
  for i = first + 2, last, 2 do
    local option = keyword(args[i])
    if options ~= nil and not options[option] then unknown_option(args[i]) end
    local given
    if option == 'COST' then
      if hold ~= nil then fail(ERR.cost_or_hold) end
      given = cost ~= nil
    elseif option == 'ALGORITHM' then
      given = kind ~= nil
    elseif option == 'BURST' then
      given = burst ~= nil
    elseif option == 'HOLD' and options ~= nil then
      if cost ~= nil then fail(ERR.cost_or_hold) end
      given = hold ~= nil
    elseif option == 'ACTUAL' and options ~= nil then
      given = actual ~= nil
    else
      unknown_option(args[i])
    end
    if given then repeated_option(option) end
    if i + 1 > last then missing_value(option) end
    local value = args[i + 1]
    if option == 'COST' then
      cost = bounded(value, 0, MAX_COST, ERR.cost)
    elseif option == 'ALGORITHM' then
      kind = CHOSEN[value] or CHOSEN[upper(value)]
      if kind == nil then fail(ERR.algorithm) end
    elseif option == 'BURST' then
      burst = bounded(value, 1, MAX_LIMIT, ERR.burst)
    elseif option == 'HOLD' then
      hold = bounded(value, 0, MAX_COST, ERR.estimate)
    else
      actual = bounded(value, 0, MAX_COST, ERR.actual)
    end
  end
  kind = kind or DEFAULT_ALGORITHM
  local period_ms = period_s * 1000
  if kind.name == 'TOKEN' then
    burst = burst or limit
    if product_less(MAX_REFILL_MS, limit, burst, period_ms) then fail(ERR.burst_too_large) end
    if burst * period_ms >= EXACT then fail(ERR.token_exact) end
  else
    if burst ~= nil then fail(ERR.burst_without_token) end
    if kind.name == 'SLIDING' and limit * period_ms >= EXACT then fail(ERR.sliding_exact) end
  end
  return kind, limit, period_ms, burst, cost or 1, hold, actual
end

-- CHECK's and PEEK's limit, args[1..n], as a table (kind, limit,
-- period_ms, burst, cost), parsed once per list of words: an application
-- asks the same few limits over and over, and looking them up costs a
-- fraction of parsing. The limits are kept in a tree of tables, one level
-- per word (looking a word up costs less than joining the words into one
-- key), each limit under LIMIT_HERE in the table its last word leads to.
-- The tree starts over when it holds LIMITS_KEPT limits.
local LIMITS_KEPT = 256
local LIMIT_HERE = true
local parsed_limits, limits_kept = {}, 0

local function limit_of(args, n)
  local node = parsed_limits
  for i = 1, n do
    node = node[args[i]]
    if node == nil then break end
  end
  if node ~= nil and node[LIMIT_HERE] ~= nil then return node[LIMIT_HERE] end
  local kind, limit, period_ms, burst, cost = parse_limit(args, 1, n)
  if limits_kept >= LIMITS_KEPT then parsed_limits, limits_kept = {}, 0 end
  node = parsed_limits
  for i = 1, n do
    local next = node[args[i]]
    if next == nil then
      next = {}
      node[args[i]] = next
    end
    node = next
  end
  local l = { kind = kind, limit = limit, period_ms = period_ms, burst = burst, cost = cost }
  node[LIMIT_HERE] = l
  limits_kept = limits_kept + 1
  return l
end

-- `numkeys key … LIMIT … [LIMIT …]` from args[from..] (args[1..] by
-- default), each group with `options` (nil: CHECK's): the keys and their
-- limits, errors in argument order, then a key named twice.
local function parse_multi(args, from, options)
  from = from or 1
  local count = bounded(args[from], 1, MAX_KEYS, ERR.numkeys)
  if #args - from < count then fail(ERR.group_per_key) end
  local keys, limits = {}, {}
  for i = 1, count do keys[i] = args[from + i] end
  local at = from + count + 1
  local n = #args
  for slot = 1, count do
    if n - at + 1 < 3 then
      if at <= n and is_keyword(args[at], 'LIMIT') then fail(ERR.short_group) end
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
    local kind, limit, period_ms, burst, cost, hold, actual = parse_limit(args, at + 1, last, options)
    limits[slot] = {
      kind = kind, limit = limit, period_ms = period_ms, burst = burst, cost = cost, hold = hold, actual = actual,
    }
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

-- A lease id as a client gives it (check_id): 1 to 64 bytes, any bytes,
-- but not the word NOW in any case, which a call's clock pair could not be
-- told apart from.
local function check_id(id)
  local len = #id
  if len < 1 or len > MAX_ID_LEN or (len == 3 and is_keyword(id, 'NOW')) then
    fail(ERR.lease_id)
  end
  return id
end

-- A score read back as a deadline (deadline_ms). A score no command wrote
-- (a set changed by hand) is cut to the ms; a negative one is an ended
-- lease, and one of 2^63 or more (+inf) a slot held until released, whose
-- deadline is NEVER_MS, the latest expiry a key can have. Below 2^63 a
-- score past 2^53 is an integer already, which fmt prints exactly.
local function deadline_ms(score)
  local s = tonumber(score)
  if s == nil or s ~= s or s < 0 then return 0 end
  if s >= NEVER_MS then return NEVER_MS end
  return floor(s)
end

-- A deadline as PEXPIREAT takes it.
local function deadline_text(ms)
  if ms >= NEVER_MS then return NEVER_TEXT end
  return fmt(ms)
end

-- The ms from `now_ms` until `deadline`, 0 once it has come, as a reply
-- gives it: at most MAX_REPLY. The difference of two integers as doubles
-- is exact whenever it is below 2^53, and any larger one is capped, so
-- this is the module's exact answer.
local function wait_ms(deadline, now_ms)
  local ms = deadline - now_ms
  if ms <= 0 then return 0 end
  if ms > MAX_REPLY then return MAX_REPLY end
  return ms
end

-- Removes the leases ended by now_ms, refusing a key that is not a sorted
-- set (the command itself does); returns how many were removed. Where a
-- write that changes nothing propagates (Redis 6.2), they are counted
-- first. (now_ms goes as a number: the server writes it out in full.)
local function prune(key, now_ms)
  if not EMPTY_WRITES_PROPAGATE then
    local ended = redis_pcall('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    if type(ended) == 'table' then refuse_type(ended) end
    return ended
  end
  local ended = redis_pcall('ZCOUNT', key, '-inf', now_ms)
  if type(ended) == 'table' then refuse_type(ended) end
  if ended > 0 then redis_call('ZREMRANGEBYSCORE', key, '-inf', now_ms) end
  return ended
end

-- The leases at `key`, ended or not, refusing a key that is not a sorted
-- set: 0 for none, when the key does not exist (Redis deletes an empty
-- set).
local function lease_count(key)
  local count = redis_pcall('ZCARD', key)
  if type(count) == 'table' then refuse_type(count) end
  return count
end

-- The deadline of the lease at `rank` ('-1': the last), nil for none.
local function nth_deadline(key, rank)
  local found = redis_call('ZRANGE', key, rank, rank, 'WITHSCORES')
  if found[2] == nil then return nil end
  return deadline_ms(found[2])
end

-- Ends a command's changes to the leases at `key` (KeyLeases::finish):
-- when it `changed` anything, moves the key's expiry to the last deadline
-- when that moved. A set left empty is gone, its expiry with it. `last` is
-- the last deadline when the caller has read it. The expiry is compared
-- as the key has it now: pruning may have deleted the set that had one.
-- Past 2^53 an expiry read as a double may round to the deadline without
-- being it: such a deadline is always written.
local function finish(key, changed, last)
  if not changed then return end
  if last == nil then
    last = nth_deadline(key, '-1')
    if last == nil then return end
  end
  if last >= EXACT or expiry_of(key) ~= last then
    redis_call('PEXPIREAT', key, deadline_text(last))
  end
end

-- An id for a new lease: 32 hex digits, unlike any live lease's.
local function new_id(key, now_ms)
  local entropy = ''
  local t = redis_pcall('TIME')
  if t.err == nil then entropy = t[1] .. '.' .. t[2] end
  local seed = { key, fmt(now_ms), entropy, tostring(math.random()) }
  for attempt = 1, 100 do
    seed[#seed + 1] = tostring(attempt)
    local id = string.sub(redis.sha1hex(table.concat(seed, '\0')), 1, 32)
    if not redis_call('ZSCORE', key, id) then return id end
  end
  fail('ERR could not make a lease id')
end

---------------------------------------------------------------------------
-- Holds (src/limiter/holds.rs, src/store/holds.rs): a hash, each field a
-- request's record by its id, ASCII words separated by single spaces
-- (integers as INCR writes them, a key's bytes counted out), and the field
-- "" the sweep time: the earliest deadline among the records, when a hold
-- may have expired. The hash expires when no record matters any more.
--
--   live     L <deadline> <charged_at> <ttl_ms> <m> <hold>… <reply>
--   settled  S <deadline> <reply>
--
-- A <hold> is one HOLD limit: <ALGORITHM> <limit> <period_s> <burst>
-- <held> <key_len> <key>, the burst 0 but for TOKEN. <reply> is what
-- RESERVE's admitted reply needs to be given again: <binding> <n> and each
-- limit's <remaining> <limit> <reset_after_ms> (the rest is 1 and -1).

-- Whether canonical_u64 would read `word` (digits, matched by '%d+'),
-- without the cost of reading it.
local function digits_ok(word)
  if byte(word) == 48 then return word == '0' end
  return #word < #I64_MAX or digits_at_most(word, I64_MAX) ~= nil
end

-- A record read back (Record::decode), nil when the text is none: its
-- fields, the text of RESERVE's reply as stored (record_reply reads it),
-- and each hold's `held` as its word (exact past 2^53). The checks are the
-- module's: a hold's parameters must make the algorithm (any case names
-- it, any burst but TOKEN's is none), the reply must read to the last byte
-- and name one of its limits as binding; the counts may be anything the
-- words bear out. Each part of a record is taken in one match: a call per
-- word would cost several times as much.
local function decode_record(text)
  local record, at
  local deadline, charged_at, ttl, m
  if byte(text) == 76 then -- L
    deadline, charged_at, ttl, m, at = match(text, '^L (%d+) (%d+) (%d+) (%d+) ()')
    if at == nil then return nil end
    deadline, charged_at, ttl, m = canonical_u64(deadline), canonical_u64(charged_at), canonical_u64(ttl), canonical_u64(m)
    if deadline == nil or charged_at == nil or ttl == nil or m == nil then return nil end
    record = { live = true, deadline = deadline, charged_at = charged_at, ttl = ttl }
    local holds = {}
    for i = 1, m do
      local name, limit, period_s, burst, held_text, key_len, key_at =
        match(text, '^([^ ]+) (%d+) (%d+) (%d+) (%d+) (%d+) ()', at)
      if key_at == nil then return nil end
      local kind = CHOSEN[name] or CHOSEN[upper(name)]
      limit, period_s, burst = canonical_u64(limit), canonical_u64(period_s), canonical_u64(burst)
      local held = canonical_u64(held_text)
      key_len = canonical_u64(key_len)
      if kind == nil or limit == nil or period_s == nil or burst == nil or held == nil or key_len == nil
        or limit < 1 or limit > MAX_LIMIT or period_s < 1 or period_s > MAX_PERIOD_S then
        return nil
      end
      local period_ms = period_s * 1000
      if kind.name ~= 'TOKEN' then
        burst = nil
      elseif burst < 1 or burst > MAX_LIMIT or product_less(MAX_REFILL_MS, limit, burst, period_ms) then
        return nil
      end
      -- The key's bytes, then a space unless they end the text.
      local key = sub(text, key_at, key_at + key_len - 1)
      if #key ~= key_len then return nil end
      at = key_at + key_len
      if at > #text then
        -- The reply is missing.
        return nil
      elseif byte(text, at) ~= 32 then
        return nil
      end
      at = at + 1
      holds[i] = {
        kind = kind, limit = limit, period_ms = period_ms, burst = burst, held = held, held_text = held_text, key = key,
      }
    end
    record.holds = holds
  else
    deadline, at = match(text, '^S (%d+) ()')
    if at == nil then return nil end
    deadline = canonical_u64(deadline)
    if deadline == nil then return nil end
    record = { live = false, deadline = deadline }
  end
  -- The reply follows, to the last byte: binding, n, then n triples.
  local binding, n, each_at = match(text, '^(%d+) (%d+)()', at)
  if each_at == nil then return nil end
  binding, n = canonical_u64(binding), canonical_u64(n)
  if binding == nil or n == nil or binding < 1 or binding > n then return nil end
  for _ = 1, n do
    local remaining, limit, reset, after = match(text, '^ (%d+) (%d+) (%d+)()', each_at)
    if after == nil or not (digits_ok(remaining) and digits_ok(limit) and digits_ok(reset)) then return nil end
    each_at = after
  end
  if each_at ~= #text + 1 then return nil end
  record.reply_text = sub(text, at)
  return record
end

-- RESERVE's first reply as a record keeps it (checked by decode_record):
-- MCHECK's head and each limit's five.
local function record_reply(record)
  local words = {}
  for word in string.gmatch(record.reply_text, '%d+') do words[#words + 1] = canonical_u64(word) end
  local each = {}
  for i = 1, words[2] do
    local r = 3 * i
    each[i] = { 1, words[r], words[r + 1], -1, words[r + 2] }
  end
  local b = each[words[1]]
  return { 1, b[2], b[3], -1, b[5], words[1] }, each
end

-- The words of numbers a record repeats call after call (limits, periods,
-- bursts, key lengths, counts), kept: format costs about as much as a
-- server call's own work, once per number. Started over when full.
local words_kept, words_kept_count = {}, 0

local function fmt_kept(n)
  local text = words_kept[n]
  if text == nil then
    text = fmt(n)
    if words_kept_count >= LIMITS_KEPT then words_kept, words_kept_count = {}, 0 end
    words_kept[n] = text
    words_kept_count = words_kept_count + 1
  end
  return text
end

-- A hold as a record keeps it: the algorithm by its name, the burst 0
-- but for TOKEN.
local function hold_words(words, kind, limit, period_ms, burst, held_text, key)
  local n = #words
  words[n + 1], words[n + 2] = kind.name, fmt_kept(limit)
  words[n + 3], words[n + 4] = fmt_kept(period_ms / 1000), fmt_kept(burst or 0)
  words[n + 5], words[n + 6], words[n + 7] = held_text, fmt_kept(#key), key
end

-- A live record's text (Live::encode), its reply as read.
local function live_text(record)
  local words = { 'L', fmt(record.deadline), fmt(record.charged_at), fmt(record.ttl), fmt(#record.holds) }
  for i = 1, #record.holds do
    local h = record.holds[i]
    hold_words(words, h.kind, h.limit, h.period_ms, h.burst, h.held_text, h.key)
  end
  words[#words + 1] = record.reply_text
  return concat(words, ' ')
end

-- Until when a record matters (keep_until_ms): a live one two of its
-- longest periods past its deadline, while a refund can still reach a
-- window; a settled one until its deadline.
local function keep_until(record)
  if not record.live then return record.deadline end
  local longest = 0
  for i = 1, #record.holds do longest = max(longest, record.holds[i].period_ms) end
  return record.deadline + 2 * longest
end

-- The units a live record holds, as RESERVE replies them: the least of
-- its holds, 0 for none.
local function least_held(record)
  local least
  for i = 1, #record.holds do
    local held = record.holds[i].held
    if least == nil or held < least then least = held end
  end
  return min(least or 0, MAX_REPLY)
end

-- The change `units` make at `key` under limit `l` (plan): a force-charge,
-- or with `charged_at_ms` a refund of units taken then; nil for none.
-- Worked out, not made (adjust makes it).
local function change_at(key, l, units, charged_at_ms, now_ms)
  local value, left, a, b, c, d = load(key, l.kind)
  local stored, stored_left, grown
  if charged_at_ms == nil then
    stored, stored_left, grown = l.kind.force(l, units, now_ms, value, left, a, b, c, d)
  else
    stored, stored_left = l.kind.refund(l, units, charged_at_ms, now_ms, value, left, a, b, c, d)
  end
  if stored == nil then return nil end
  return { key = key, value = value, left = left, stored = stored, stored_left = stored_left, grown = grown }
end

local function make_change(change)
  adjust(change.key, change.value, change.left, change.stored, change.stored_left, change.grown)
end

-- A refund of an expired hold: a key that holds something else now has
-- nothing to give back and is left alone (refund_expired).
local function refund_expired(hold, charged_at_ms, now_ms)
  local ok, change = pcall(change_at, hold.key, hold, hold.held, charged_at_ms, now_ms)
  if not ok then
    if type(change) == 'table' and change.ratelimit_error ~= nil then return end
    error(change, 0)
  end
  if change ~= nil then make_change(change) end
end

-- The parameters of a hold the fallback cannot refund exactly (recorded
-- by the module with a limit the library refuses) are its own error.
local function refused_beyond(hold)
  if hold.burst ~= nil and hold.burst * hold.period_ms >= EXACT then fail(ERR.token_exact) end
  if hold.kind.name == 'SLIDING' and hold.limit * hold.period_ms >= EXACT then fail(ERR.sliding_exact) end
end

-- Opens the hash of holds at `key` at `now_ms` (HoldsKey::open): when its
-- sweep time has come, every record is read (a value that is no record is
-- refused before anything changes); then each ended record in turn, a
-- live one refunding what it holds, is deleted, and the sweep time moves
-- to the next deadline, or the hash is deleted when no record is left.
-- Returns what the command needs of the key: its name, whether it exists,
-- its sweep time.
local function open_holds(key, now_ms)
  local due_text = redis_pcall('HGET', key, '')
  if type(due_text) == 'table' then refuse_type(due_text) end
  local holds = { key = key }
  if due_text then
    holds.due = decode_u64(due_text)
    if holds.due == nil then fail(ERR.not_holds) end
    if now_ms < holds.due then
      holds.exists = true
      return holds
    end
  end
  local fields = redis_call('HGETALL', key)
  if #fields == 0 then return holds end
  local records, next_due = {}, nil
  for i = 1, #fields, 2 do
    if fields[i] ~= '' then
      local record = decode_record(fields[i + 1])
      if record == nil then fail(ERR.not_holds) end
      records[#records + 1] = { id = fields[i], record = record }
      if record.deadline > now_ms and (next_due == nil or record.deadline < next_due) then
        next_due = record.deadline
      end
    end
  end
  for i = 1, #records do
    local record = records[i].record
    if record.live and record.deadline <= now_ms then
      for j = 1, #record.holds do refused_beyond(record.holds[j]) end
    end
  end
  for i = 1, #records do
    local record = records[i].record
    if record.deadline <= now_ms then
      if record.live then
        for j = 1, #record.holds do refund_expired(record.holds[j], record.charged_at, now_ms) end
      end
      redis_call('HDEL', key, records[i].id)
    end
  end
  if next_due == nil then
    -- The last record gone takes the hash with it, unless "" is left.
    if due_text then redis_call('DEL', key) end
    holds.due = nil
    return holds
  end
  holds.exists = true
  if next_due ~= holds.due then
    redis_call('HSET', key, '', fmt(next_due))
    holds.due = next_due
  end
  return holds
end

-- The record kept under `id`, nil for none.
local function record_of(holds, id)
  if not holds.exists then return nil end
  local text = redis_call('HGET', holds.key, id)
  if not text then return nil end
  local record = decode_record(text)
  if record == nil then fail(ERR.not_holds) end
  return record
end

-- Keeps the record `text` under `id` (HoldsKey::put): the sweep time moved
-- to its deadline when that is earlier, in the same HSET, and the hash's
-- expiry, when it comes before `keep`, to twice as far from now as `keep`
-- (so that most records written need no new expiry).
local function put_record(holds, id, text, deadline, keep, now_ms)
  local expires
  if holds.exists then expires = expiry_of(holds.key) end
  if holds.due == nil or deadline < holds.due then
    redis_call('HSET', holds.key, id, text, '', fmt(deadline))
    holds.due = deadline
  else
    redis_call('HSET', holds.key, id, text)
  end
  holds.exists = true
  if expires == nil or expires < keep then
    redis_call('PEXPIREAT', holds.key, fmt(keep + max(keep - now_ms, 0)))
  end
end

-- The units a HOLD of `estimate` holds on limit `l` (held_for): at most
-- HOLD_MAX_PERCENT of what one request can take (a bucket's burst, a
-- window's limit), rounded down but at least 1; none for an estimate of 0.
-- The share is taken in two parts, each exact.
local function held_of(l, estimate)
  if estimate == 0 then return 0 end
  local capacity = l.burst or l.limit
  local share = fdiv(capacity, 100) * HOLD_MAX_PERCENT + fdiv(capacity % 100 * HOLD_MAX_PERCENT, 100)
  return min(estimate, max(1, share))
end

-- A key both holds and limits is refused (holds_apart).
local function holds_apart(holds, keys)
  for i = 1, #keys do
    if keys[i] == holds then fail(ERR.holds_is_limiter) end
  end
end

---------------------------------------------------------------------------
-- The commands (src/commands/*.rs). Those of one key take it apart from
-- the module's other arguments, rest[1..n]; the others take the module's
-- arguments as one list. Each counts its arguments as the module does,
-- which is also what the server checks against the declared arity where it
-- has one (7.0+): either way the same wrong-arity error. `least` is the
-- fewest arguments the module's arity allows after the command's name
-- (MCHECK's and MPEEK's numkeys included), for serve.

local COMMANDS = {}

local function reply_of(allowed, remaining, limit, retry, reset)
  return { allowed and 1 or 0, remaining, limit, retry or -1, reset }
end

COMMANDS.check = {
  name = 'ratelimit.check',
  least = 3,
  -- CHECK is the call made most, and on its path a Lua call costs about
  -- as much as the work it does: the common cases of limit_of (a limit
  -- seen before) and load (a state decoded before, on the key's clock)
  -- are inlined, and so is fixed_window's steady state, a counter with
  -- room in its window.
  run = function(key, rest, n)
    if n < 2 then arity_error('ratelimit.check') end
    local l
    if n == 2 then
      l = parsed_limits[rest[1]]
      l = l and l[rest[2]]
      l = l and l[LIMIT_HERE]
    end
    if l == nil then l = limit_of(rest, n) end
    local kind = l.kind
    local value = redis_pcall('GET', key)
    local left, a, b, c, d
    a = value and kind.decoded[value]
    if a and time_ms == nil and HAS_PEXPIRETIME then left = redis_call('PTTL', key) end
    if left ~= nil and left > 0 then
      local limit, cost = l.limit, l.cost
      if kind == FIXED and left <= l.period_ms and a <= limit and cost <= limit - a then
        if cost > 0 then redis_call('INCRBY', key, cost) end
        local count_after = a + cost
        return { 1, limit - count_after, limit, -1, count_after > 0 and left or 0 }
      end
      clock_key, clock_ttl = key, left
    else
      value, left, a, b, c, d = loaded(key, kind, value)
    end
    local allowed, remaining, retry, reset, store, store_left, grown =
      kind.algorithm(l, l.cost, value, left, a, b, c, d)
    if store ~= nil or grown ~= nil then write(key, value, left, store, store_left, grown) end
    return { allowed and 1 or 0, remaining, l.limit, retry or -1, reset }
  end,
}

-- What CHECK would answer for `cost`, storing nothing (Algorithm::peek):
-- the decision for `cost`, with the room and reset of a check of 0.
COMMANDS.peek = {
  name = 'ratelimit.peek',
  least = 3,
  flags = { 'no-writes' },
  run = function(key, rest, n)
    if n < 2 then arity_error('ratelimit.peek') end
    local l = limit_of(rest, n)
    local value, left, a, b, c, d = load(key, l.kind)
    local algorithm = l.kind.algorithm
    local allowed, _, retry = algorithm(l, l.cost, value, left, a, b, c, d)
    local _, remaining, _, reset = algorithm(l, 0, value, left, a, b, c, d)
    return reply_of(allowed, remaining, l.limit, retry, reset)
  end,
}

COMMANDS.reset = {
  name = 'ratelimit.reset',
  least = 1,
  flags = { 'allow-oom' },
  run = function(args)
    if #args < 1 then arity_error('ratelimit.reset') end
    -- Every key is checked before any is removed: all or nothing.
    for i = 1, #args do
      local value = get_string(args[i])
      if value ~= nil and kind_of_value(value) == nil then fail(ERR.not_limiter_state) end
    end
    -- A key named twice is gone the second time; DEL only what is there
    -- (on Redis 6.2 any write command called propagates a MULTI/EXEC).
    local removed = 0
    for i = 1, #args do
      if redis_call('EXISTS', args[i]) == 1 then
        removed = removed + redis_call('DEL', args[i])
      end
    end
    return removed
  end,
}

-- CL.THROTTLE's rounding: whole seconds, one more from a leftover ms.
local function seconds_rounded_up(ns)
  local part = ns % NS_PER_S
  if part >= NS_PER_MS then return (ns - part) / NS_PER_S + 1 end
  return (ns - part) / NS_PER_S
end

-- THROTTLE's rates by their words, max_burst, count and period, kept as
-- CHECK's limits are: a tree of one level per word, started over when it
-- holds RATES_KEPT rates.
local RATES_KEPT = 256
local parsed_rates, rates_kept = {}, 0

local function keep_rate(words, rate)
  if rates_kept >= RATES_KEPT then parsed_rates, rates_kept = {}, 0 end
  local by_count = parsed_rates[words[1]] or {}
  parsed_rates[words[1]] = by_count
  local by_period = by_count[words[2]] or {}
  by_count[words[2]] = by_period
  by_period[words[3]] = rate
  rates_kept = rates_kept + 1
  return rate
end

COMMANDS.throttle = {
  name = 'ratelimit.throttle',
  least = 4,
  run = function(key, rest, n)
    if n ~= 3 and n ~= 4 then arity_error('ratelimit.throttle') end
    -- A rate seen before (the three levels written out: a call would
    -- cost as much as the lookups).
    local rate = parsed_rates[rest[1]]
    rate = rate and rate[rest[2]]
    rate = rate and rate[rest[3]]
    local max_burst, count, period_s
    if rate == nil then
      max_burst = bounded(rest[1], 0, MAX_LIMIT - 1, ERR.max_burst)
      count = bounded(rest[2], 1, MAX_LIMIT, ERR.count_per_period)
      period_s = bounded(rest[3], 1, MAX_PERIOD_S, ERR.period)
    end
    local quantity = 1
    if n == 4 then quantity = bounded(rest[4], 0, MAX_COST, ERR.quantity) end
    if rate == nil then rate = keep_rate(rest, throttle_rate(max_burst, count, period_s)) end
    local value, left, early = load(key, THROTTLE)
    local limited, remaining, retry, reset, store, store_left = gcra(rate, quantity, value, left, early)
    if store ~= nil then write(key, value, left, store, store_left) end
    if retry ~= nil then retry = seconds_rounded_up(retry) end
    return { limited and 1 or 0, rate.limit, remaining, retry or -1, seconds_rounded_up(reset) }
  end,
}

-- Asks every key's limit at one instant (mcheck.rs ask_all, all_of.rs)
-- and replies as MCHECK does, or MPEEK with `peek`: the verdict, the
-- binding limit's numbers and index, then every limit's. MCHECK shows a
-- limit as charged when the request is admitted and writes every limit's
-- state; when it is denied, each limit as PEEK would show it, and only
-- what a denying limit stores by itself is written (a counter that had no
-- expiry gets one: charge_all). MPEEK shows each limit as PEEK would and
-- writes nothing; its verdict and binding limit are still MCHECK's. The
-- PEEK view (a check of 0) is worked out only where it is shown.
local NEVER_RETRIED = 1 / 0

local function ask_all(keys, limits, peek)
  local n = #keys
  local rows, states = {}, {}
  local allowed = true
  for i = 1, n do
    local l = limits[i]
    local kind = l.kind
    local value, left, a, b, c, d = loaded(keys[i], kind, redis_pcall('GET', keys[i]))
    local fits, remaining, retry, reset, store, store_left, grown =
      kind.algorithm(l, l.cost, value, left, a, b, c, d)
    if not fits then allowed = false end
    rows[i] = { fits and 1 or 0, remaining, l.limit, retry or -1, reset }
    states[i] = { value, left, a, b, c, d, store, store_left, grown }
  end
  local binding
  if allowed then
    -- The least room left, remaining / limit; the first of equals. Of
    -- two equal limits, the smaller remaining (product_less's answer,
    -- without its products).
    binding = 1
    for i = 2, n do
      local row, best = rows[i], rows[binding]
      if row[3] == best[3] then
        if row[2] < best[2] then binding = i end
      elseif product_less(row[2], best[3], best[2], row[3]) then
        binding = i
      end
    end
  else
    -- The latest retry (a retry is never negative: -1 is never), never
    -- retried ranking first; the first of equals.
    local latest
    for i = 1, n do
      local row = rows[i]
      if row[1] == 0 then
        local rank = row[4]
        if rank == -1 then rank = NEVER_RETRIED end
        if latest == nil or rank > latest then binding, latest = i, rank end
      end
    end
  end
  if not peek then
    for i = 1, n do
      local s = states[i]
      if (s[7] ~= nil or s[9] ~= nil) and (allowed or rows[i][1] == 0) then
        write(keys[i], s[1], s[2], s[7], s[8], s[9])
      end
    end
  end
  if peek or not allowed then
    for i = 1, n do
      local l, s, row = limits[i], states[i], rows[i]
      local _, remaining, _, reset = l.kind.algorithm(l, 0, s[1], s[2], s[3], s[4], s[5], s[6])
      row[2], row[5] = remaining, reset
    end
  end
  local b = rows[binding]
  return { allowed and 1 or 0, b[2], b[3], b[4], b[5], binding, rows }
end

-- MCHECK's and MPEEK's limits, one per key, from FCALL's keys and the
-- arguments after them, kept as CHECK's are: a tree of one level per word
-- for each number of keys, started over when it holds LIMITS_KEPT lists.
-- A list not kept is read from the module's arguments as the module reads
-- them (parse_multi, errors in its order); a kept one parsed, so only the
-- keys are left to check, for one named twice.
local parsed_multis, multis_kept = {}, 0

local function multi_limits(command, keys, argv, last)
  local count = #keys
  local node = parsed_multis[count]
  for i = 1, last do
    if node == nil then break end
    node = node[argv[i]]
  end
  local limits = node and node[LIMIT_HERE]
  if limits ~= nil then
    for i = 1, count do
      for j = i + 1, count do
        if keys[i] == keys[j] then fail(ERR.duplicate_key) end
      end
    end
    return limits
  end
  local args = { fmt(count) }
  for i = 1, count do args[i + 1] = keys[i] end
  for i = 1, last do args[count + 1 + i] = argv[i] end
  -- numkeys key LIMIT limit period at least.
  if #args < command.least then arity_error(command.name) end
  local _
  _, limits = parse_multi(args)
  if multis_kept >= LIMITS_KEPT then parsed_multis, multis_kept = {}, 0 end
  node = parsed_multis[count] or {}
  parsed_multis[count] = node
  for i = 1, last do
    local next = node[argv[i]] or {}
    node[argv[i]] = next
    node = next
  end
  node[LIMIT_HERE] = limits
  multis_kept = multis_kept + 1
  return limits
end

-- MCHECK and MPEEK take FCALL's keys and arguments apart (keys_apart):
-- numkeys is FCALL's.
COMMANDS.mcheck = {
  name = 'ratelimit.mcheck',
  least = 5,
  keys_counted = true,
  keys_apart = true,
  run = function(keys, argv, last)
    return ask_all(keys, multi_limits(COMMANDS.mcheck, keys, argv, last))
  end,
}

COMMANDS.mpeek = {
  name = 'ratelimit.mpeek',
  least = 5,
  keys_counted = true,
  keys_apart = true,
  flags = { 'no-writes' },
  run = function(keys, argv, last)
    return ask_all(keys, multi_limits(COMMANDS.mpeek, keys, argv, last), true)
  end,
}

COMMANDS.acquire = {
  name = 'ratelimit.acquire',
  least = 3,
  run = function(key, rest, n)
    if n < 2 then arity_error('ratelimit.acquire') end
    local max_leases = bounded(rest[1], 1, MAX_LEASES, ERR.max_leases)
    local lease_ms = bounded(rest[2], 1, MAX_LEASE_MS, ERR.lease_ms)
    local id
    if n >= 3 then
      if not is_keyword(rest[3], 'ID') then unknown_option(rest[3]) end
      if n == 3 then missing_value('ID') end
      if n >= 5 then
        if not is_keyword(rest[5], 'ID') then unknown_option(rest[5]) end
        repeated_option('ID')
      end
      id = check_id(rest[4])
    end
    -- The leases before pruning, then the live ones: a set with none is
    -- not pruned, having nothing to prune.
    local live = lease_count(key)
    local now_ms = now()
    local pruned = 0
    if live > 0 then pruned = prune(key, now_ms) end
    live = live - pruned
    local changed = pruned > 0
    if live == 0 then
      -- No live lease: Redis deletes an empty set, so the key is gone, its
      -- expiry with it, and the new lease is all of the new one: what
      -- finish would do is known without reading anything back.
      local granted = id or new_id(key, now_ms)
      local deadline = now_ms + lease_ms
      redis_call('ZADD', key, deadline, granted)
      redis_call('PEXPIREAT', key, deadline)
      return { 1, max_leases - 1, max_leases, -1, lease_ms, granted }
    end
    -- Below max_leases any id is granted; at max, only a live one, renewed.
    local granted
    if live < max_leases or (id ~= nil and redis_call('ZSCORE', key, id)) then
      granted = id or new_id(key, now_ms)
      -- ZADD counts a new member; a renewed one is there already.
      live = live + redis_call('ZADD', key, now_ms + lease_ms, granted)
      changed = true
    end
    local retry = -1
    if granted == nil then
      -- A slot frees once live - max_leases + 1 leases have ended.
      retry = wait_ms(nth_deadline(key, fmt(live - max_leases)), now_ms)
    end
    -- The set holds a lease still: the one granted, or the max live.
    local last = nth_deadline(key, '-1')
    finish(key, changed, last)
    return { granted and 1 or 0, max(max_leases - live, 0), max_leases, retry, wait_ms(last, now_ms), granted or false }
  end,
}

COMMANDS.release = {
  name = 'ratelimit.release',
  least = 2,
  flags = { 'allow-oom' },
  run = function(key, rest, n)
    if n < 1 then arity_error('ratelimit.release') end
    for i = 1, n do check_id(rest[i]) end
    -- No lease, no key: nothing to release, nor a clock to read.
    local count = lease_count(key)
    if count == 0 then return 0 end
    local pruned = prune(key, now())
    local released = 0
    for i = 1, n do
      if not EMPTY_WRITES_PROPAGATE or redis_call('ZSCORE', key, rest[i]) then
        released = released + redis_call('ZREM', key, rest[i])
      end
    end
    -- None left: the set is gone, its expiry with it.
    if count - pruned - released > 0 then finish(key, pruned > 0 or released > 0) end
    return released
  end,
}

COMMANDS.renew = {
  name = 'ratelimit.renew',
  least = 3,
  run = function(key, rest, n)
    if n ~= 2 then arity_error('ratelimit.renew') end
    local id = check_id(rest[1])
    local lease_ms = bounded(rest[2], 1, MAX_LEASE_MS, ERR.lease_ms)
    local now_ms = now()
    local changed = prune(key, now_ms) > 0
    local live = redis_call('ZSCORE', key, id) ~= false
    if live then
      redis_call('ZADD', key, now_ms + lease_ms, id)
      changed = true
    end
    finish(key, changed)
    return live and 1 or 0
  end,
}

-- RESERVE's reply: MCHECK's seven, the units held and the ms until the
-- hold expires (0 and -1 when nothing is held).
local function reserved_reply(head, each, held, lasts)
  return { head[1], head[2], head[3], head[4], head[5], head[6], each, held, lasts }
end

-- RESERVE's, SETTLE's and EXTEND's first key is the hash of holds;
-- RESERVE's and SETTLE's limiter keys follow their first `holds_first`
-- arguments and numkeys (all_arguments).
COMMANDS.reserve = {
  name = 'ratelimit.reserve',
  -- holds id ttl_ms numkeys key LIMIT limit period
  least = 8,
  holds_first = 2,
  run = function(args)
    if #args < 8 then arity_error('ratelimit.reserve') end
    local id = check_id(args[2])
    local ttl_ms = bounded(args[3], 1, MAX_HOLD_TTL_MS, ERR.hold_ttl)
    local keys, limits = parse_multi(args, 4, RESERVE_OPTIONS)
    holds_apart(args[1], keys)
    ttl_ms = min(ttl_ms, HOLD_MAX_TTL_MS)
    local now_ms = now()
    local holds = open_holds(args[1], now_ms)
    -- An id recorded already: the first reply, charging nothing.
    local record = record_of(holds, id)
    if record ~= nil then
      local head, each = record_reply(record)
      if record.live then
        return reserved_reply(head, each, least_held(record), min(max(record.deadline - now_ms, 0), MAX_REPLY))
      end
      return reserved_reply(head, each, 0, -1)
    end
    -- A HOLD limit is charged the units it holds.
    for i = 1, #limits do
      local l = limits[i]
      if l.hold ~= nil then l.cost = held_of(l, l.hold) end
    end
    local reply = ask_all(keys, limits)
    local allowed, binding = reply[1] == 1, reply[6]
    if not allowed then
      reply[8], reply[9] = 0, -1
      return reply
    end
    -- L deadline charged_at ttl_ms m, each HOLD limit, then what the reply
    -- needs again: binding, n, each limit's remaining, limit and reset.
    -- Numbers that change from call to call are written by one format for
    -- each run of them (a call costs little beside each number it writes);
    -- `m`, words[4], once the HOLD limits are counted.
    local deadline = now_ms + ttl_ms
    local words = { 'L', format('%d %d', deadline, now_ms), fmt_kept(ttl_ms), '' }
    local held, longest, m = nil, 0, 0
    for i = 1, #limits do
      local l = limits[i]
      if l.hold ~= nil then
        hold_words(words, l.kind, l.limit, l.period_ms, l.burst, fmt(l.cost), keys[i])
        if held == nil or l.cost < held then held = l.cost end
        longest = max(longest, l.period_ms)
        m = m + 1
      end
    end
    words[4] = fmt_kept(m)
    local each = reply[7]
    words[#words + 1] = fmt_kept(binding)
    words[#words + 1] = fmt_kept(#each)
    for i = 1, #each do
      local row = each[i]
      words[#words + 1] = format('%d %d %d', row[2], row[3], row[5])
    end
    put_record(holds, id, concat(words, ' '), deadline, deadline + 2 * longest, now_ms)
    reply[8], reply[9] = held or 0, ttl_ms
    return reply
  end,
}

-- SETTLE's status: the id held nothing (each limit charged ACTUAL), was
-- live (settled now), was settled already (nothing charged).
local SETTLED_NOTHING, SETTLED, SETTLED_BEFORE = 0, 1, 2

COMMANDS.settle = {
  name = 'ratelimit.settle',
  -- holds id numkeys key LIMIT limit period ACTUAL actual
  least = 9,
  holds_first = 1,
  flags = { 'allow-oom' },
  run = function(args)
    if #args < 9 then arity_error('ratelimit.settle') end
    local id = check_id(args[2])
    local keys, limits = parse_multi(args, 3, SETTLE_OPTIONS)
    -- Once every group has been read.
    for i = 1, #limits do
      if limits[i].actual == nil then fail(ERR.needs_actual) end
    end
    holds_apart(args[1], keys)
    local now_ms = now()
    local holds = open_holds(args[1], now_ms)
    local record = record_of(holds, id)
    local status = SETTLED_NOTHING
    if record ~= nil then status = record.live and SETTLED or SETTLED_BEFORE end
    -- Every key's change worked out, then made: ACTUAL less what the hold
    -- holds there, a refund into the window charged when less.
    local changes = {}
    for i = 1, #keys do
      local l = limits[i]
      local change
      if status == SETTLED_NOTHING then
        change = change_at(keys[i], l, l.actual, nil, now_ms)
      elseif status == SETTLED_BEFORE then
        change = change_at(keys[i], l, 0, nil, now_ms)
      else
        local held = 0
        for j = 1, #record.holds do
          if record.holds[j].key == keys[i] then
            held = record.holds[j].held
            break
          end
        end
        if l.actual >= held then
          change = change_at(keys[i], l, l.actual - held, nil, now_ms)
        else
          change = change_at(keys[i], l, held - l.actual, record.charged_at, now_ms)
        end
      end
      changes[#changes + 1] = change
    end
    for i = 1, #changes do make_change(changes[i]) end
    if status == SETTLED then
      local deadline = now_ms + record.ttl
      put_record(holds, id, 'S ' .. fmt(deadline) .. ' ' .. record.reply_text, deadline, deadline, now_ms)
    end
    -- Each limit as PEEK of one unit sees it, settled.
    local each = {}
    for i = 1, #keys do
      local l = limits[i]
      local algorithm = l.kind.algorithm
      local value, left, a, b, c, d = load(keys[i], l.kind)
      local allowed, _, retry = algorithm(l, 1, value, left, a, b, c, d)
      local _, remaining, _, reset = algorithm(l, 0, value, left, a, b, c, d)
      each[i] = reply_of(allowed, remaining, l.limit, retry, reset)
    end
    return { status, each }
  end,
}

COMMANDS.extend = {
  name = 'ratelimit.extend',
  least = 3,
  flags = { 'allow-oom' },
  run = function(key, rest, n)
    if n ~= 2 then arity_error('ratelimit.extend') end
    local id = check_id(rest[1])
    local ttl_ms = min(bounded(rest[2], 1, MAX_HOLD_TTL_MS, ERR.hold_ttl), HOLD_MAX_TTL_MS)
    local now_ms = now()
    local holds = open_holds(key, now_ms)
    local record = record_of(holds, id)
    if record == nil or not record.live then return 0 end
    record.deadline, record.ttl = now_ms + ttl_ms, ttl_ms
    put_record(holds, id, live_text(record), record.deadline, keep_until(record), now_ms)
    return ttl_ms
  end,
}

-- MODULE LIST's version: major * 10000 + minor * 100 + patch.
local function module_version()
  local major, minor, patch = match(VERSION, '^(%d+)%.(%d+)%.(%d+)$')
  return tonumber(major) * 10000 + tonumber(minor) * 100 + tonumber(patch)
end

COMMANDS.version = {
  name = 'ratelimit.version',
  least = 0,
  flags = { 'no-writes' },
  all_arguments = true,
  run = function()
    return module_version()
  end,
}

COMMANDS.reset.all_arguments = true
COMMANDS.reserve.all_arguments = true
COMMANDS.reserve.keys_counted = true
COMMANDS.settle.all_arguments = true
COMMANDS.settle.keys_counted = true

---------------------------------------------------------------------------
-- Calls

-- The module's arguments are FCALL's keys then its arguments up to `last`
-- (numkeys first for the commands that count their keys). RESERVE's and
-- SETTLE's are the hash of holds (FCALL's first key), their first
-- `holds_first` arguments, numkeys (FCALL's less the holds) and the other
-- keys, then the rest of the arguments.
local function all_arguments(command, keys, argv, last)
  local args, n = {}, 0
  local before = command.holds_first
  if before ~= nil then
    args[1], n = keys[1], 1
    for i = 1, min(before, last) do
      n = n + 1
      args[n] = argv[i]
    end
    n = n + 1
    args[n] = fmt(#keys - 1)
    for i = 2, #keys do
      n = n + 1
      args[n] = keys[i]
    end
    for i = before + 1, last do
      n = n + 1
      args[n] = argv[i]
    end
    return args
  end
  if command.keys_counted then
    args[1], n = tostring(#keys), 1
  end
  for i = 1, #keys do args[n + i] = keys[i] end
  n = n + #keys
  for i = 1, last do args[n + i] = argv[i] end
  return args
end

-- The function that serves `command`: FCALL's keys then its arguments,
-- less a final NOW unix_ms, are the module's arguments. The pair is the
-- clock only when what remains still makes the command's least number of
-- arguments; otherwise the call is the module's as it stands (RENEW k NOW
-- 5 names the lease NOW, and both refuse that id).
local function serve(command)
  local run, all, apart = command.run, command.all_arguments, command.keys_apart
  local least, counted = command.least, command.keys_counted and 1 or 0
  -- A command of one key given as FCALL's one key, the commonest call.
  local by_key = not (all or apart)
  return function(keys, argv)
    if find == nil then bind_standard_functions() end
    time_ms, clock_key = nil, nil
    local last = #argv
    if last >= 2 and #argv[last - 1] == 3 and is_keyword(argv[last - 1], 'NOW')
      and #keys + counted + last - 2 >= least then
      time_ms = parsed_arguments[argv[last]] or parse_argument(argv[last])
      if time_ms == nil or time_ms < 0 or time_ms > MAX_NOW_MS then
        return redis.error_reply(ERR.now)
      end
      last = last - 2
    end
    local ok, result
    if by_key and #keys == 1 then
      ok, result = protected(run, keys[1], argv, last)
    elseif apart then
      ok, result = protected(run, keys, argv, last)
    elseif all then
      if command.holds_first ~= nil and #keys == 0 then
        -- No hash of holds, and numkeys -1: FCALL's stands for one more.
        if 1 + last < command.least then
          return redis.error_reply("ERR wrong number of arguments for '" .. command.name .. "' command")
        end
        return redis.error_reply(ERR.numkeys)
      end
      ok, result = protected(run, all_arguments(command, keys, argv, last))
    else
      -- The key given among the arguments, or more than one: the module's
      -- first argument is the key whichever list it came in.
      local args = all_arguments(command, keys, argv, last)
      local rest = {}
      for i = 2, #args do rest[i - 1] = args[i] end
      ok, result = protected(run, args[1], rest, #args - 1)
    end
    if ok then return result end
    if type(result) == 'table' and result.ratelimit_error ~= nil then
      return redis.error_reply(result.ratelimit_error)
    end
    error(result, 0)
  end
end

-- Loading a library runs this chunk with little more than the redis table
-- in reach (no pairs, no tostring): plain loops only.
local VERBS = {
  'check', 'peek', 'reset', 'throttle', 'mcheck', 'mpeek', 'acquire', 'release', 'renew',
  'reserve', 'settle', 'extend', 'version',
}

if redis.register_function then
  for i = 1, #VERBS do
    local command = COMMANDS[VERBS[i]]
    redis.register_function({
      function_name = 'ratelimit_' .. VERBS[i],
      callback = serve(command),
      flags = command.flags or {},
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
  return serve(COMMANDS[verb])(KEYS, argv)
end
