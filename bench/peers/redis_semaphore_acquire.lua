-- redis-semaphore's acquire: the script Semaphore.acquire() runs (EVALSHA,
-- falling back to EVAL on NOSCRIPT), one try of its retry loop:
--   KEYS: semaphore:<key>
--   ARGV: limit, identifier (a UUID), lockTimeout (ms, 10000 by default),
--         now (ms, the client's clock)
-- It returns 1 when acquired, 0 when not. Semaphore.release() is a plain
-- ZREM semaphore:<key> <identifier>, no script.
--
-- Project: redis-semaphore 5.8.0 (swarthy/redis-semaphore on GitHub), MIT
-- licence, Copyright (c) 2018 Alexander Mochalin (bench/peers/LICENSES.md).
-- Source: acquireLua in src/semaphore/acquire/lua.ts, taken from the npm
-- package's lib/semaphore/acquire/lua.js; the text below this header is
-- the package's byte for byte (it begins with a newline) with a newline
-- after it (upstream's text, without the newline, has SHA1
-- 43ebdb49120d170e08af560cb4e46e36f8585936).
--
-- Changes: this header added.

  local key = KEYS[1]
  local limit = tonumber(ARGV[1])
  local identifier = ARGV[2]
  local lockTimeout = tonumber(ARGV[3])
  local now = tonumber(ARGV[4])
  local expiredTimestamp = now - lockTimeout

  redis.call('zremrangebyscore', key, '-inf', expiredTimestamp)

  if redis.call('zcard', key) < limit then
    redis.call('zadd', key, now, identifier)
    redis.call('pexpire', key, lockTimeout)
    return 1
  else
    return 0
  end
