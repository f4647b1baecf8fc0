-- go-redis/redis_rate's AllowN: GCRA (the generic cell rate algorithm), a
-- widely used Go limiter on Redis, as Limiter.AllowN(ctx, key, limit, n)
-- calls it (go-redis's Script.Run: EVALSHA, EVAL on NOSCRIPT):
--   KEYS: <prefix><key> (prefix rate: by default)
--   ARGV: limit.Burst, limit.Rate, limit.Period in seconds (a float, "1"
--         for a second), n
-- It returns {allowed, remaining, retry_after, reset_after}, the last two
-- as strings of seconds (retry_after "-1" when allowed).
--
-- Project: redis_rate v10 (go-redis/redis_rate on GitHub, a Go module: no
-- package registry this project reaches carries it).
-- NOT VENDORED: written for this benchmark, not copied from redis_rate,
-- and this project's, under its MIT licence (LICENSE at the repository's
-- root). It makes the same server calls in the same order as redis_rate's
-- allowN script (replicate_commands, TIME, GET, then SET … EX when the
-- request is allowed and the state outlives now), keeps the state as that
-- script does (the theoretical arrival time, seconds since 2017-01-01 as a
-- float, so a double keeps microseconds), and replies the same four
-- values: its instruction count approximates redis_rate's, it is not a
-- byte-exact copy. bench/peers/LICENSES.md says more.

redis.replicate_commands()

local key = KEYS[1]
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local n = tonumber(ARGV[4])

-- Seconds between two requests at the sustained rate, and how far ahead of
-- now the theoretical arrival time may run before a request is refused.
local interval = period / rate
local tolerance = interval * burst

local clock = redis.call('TIME')
local now = (clock[1] - 1483228800) + clock[2] / 1000000

local tat = redis.call('GET', key)
if tat then
  tat = math.max(tonumber(tat), now)
else
  tat = now
end

local new_tat = tat + interval * n
local headroom = now - (new_tat - tolerance)

if headroom < 0 then
  return {0, 0, tostring(-headroom), tostring(tat - now)}
end

local reset_after = new_tat - now
if reset_after > 0 then
  redis.call('SET', key, new_tat, 'EX', math.ceil(reset_after))
end
return {n, headroom / interval, tostring(-1), tostring(reset_after)}
