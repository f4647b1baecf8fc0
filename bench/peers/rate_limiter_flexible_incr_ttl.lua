-- rate-limiter-flexible's consume on Redis: the incr-with-ttl script that
-- RateLimiterRedis.consume(key, points) runs (its ioredis path: a command
-- defined with defineCommand, sent as EVALSHA):
--   KEYS: <keyPrefix>:<key> (keyPrefix rlflx by default)
--   ARGV: points to consume, duration in seconds, the limiter's points,
--         the limiter's duration (the last two unused by the script)
-- It returns {consumed, ms to reset}; the JavaScript decides from them.
--
-- Project: rate-limiter-flexible 11.4.0 (animir/node-rate-limiter-flexible
-- on GitHub), ISC licence, Copyright 2019 Roman Voloboev
-- (bench/peers/LICENSES.md).
-- Source: incrTtlLuaScript in lib/RateLimiterRedis.js of the npm package.
-- The JavaScript template ends each line with a backslash, so the script is
-- a single line; the line below the blank line is that string, byte for
-- byte, with a newline after it (upstream's text, without the newline, has
-- SHA1 a1de965f42e177aa339706bd580f049065eca79a).
--
-- Changes: this header added.

redis.call('set', KEYS[1], 0, 'EX', ARGV[2], 'NX') local consumed = redis.call('incrby', KEYS[1], ARGV[1]) local ttl = redis.call('pttl', KEYS[1]) if ttl == -1 then   redis.call('expire', KEYS[1], ARGV[2])   ttl = 1000 * ARGV[2] end return {consumed, ttl} 
