-- The classic fixed-window limiter as a Lua script, the alternative the
-- module is measured against (make bench runs it through EVALSHA).
--
-- KEYS[1]: the counter; ARGV[1]: limit; ARGV[2]: period in seconds.
-- Returns {allowed, remaining}.
local count = redis.call('INCRBY', KEYS[1], 1)
if count == 1 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local limit = tonumber(ARGV[1])
if count > limit then
    return {0, 0}
end
return {1, limit - count}
