-- Upstash's sliding-window limiter, single region: the script that
-- Ratelimit.slidingWindow(tokens, window).limit() runs, as its JavaScript
-- calls it (EVALSHA, falling back to EVAL on NOSCRIPT):
--   KEYS: <prefix>:<identifier>:<current window>, <prefix>:<identifier>:<previous window>
--   ARGV: tokens, now (ms), window (ms), incrementBy (1)
-- It returns {remaining, limit}; remaining below 0 is a denial.
--
-- Project: @upstash/ratelimit 2.2.0 (upstash/ratelimit-js on GitHub), MIT
-- licence, Copyright (c) 2021 Upstash, Inc. (bench/peers/LICENSES.md).
-- Source: slidingWindowLimitScript in src/lua-scripts/single.ts, taken
-- from the npm package's dist/index.js. The text below the blank line is
-- the package's byte for byte but for its first line, the shebang
-- `#!lua flags=allow-key-locking`, which Redis 7.0 refuses ("ERR Unexpected
-- flag in script shebang: allow-key-locking"); without it the server runs
-- the script with a flagless script's defaults. Upstream's text, shebang
-- included, has SHA1 74740bb3d7792848093cdef586b6b6037c455fd6, the hash
-- the package sends to EVALSHA.
--
-- Changes: the shebang line removed; this header added.

  local currentKey  = KEYS[1]           -- identifier including prefixes
  local previousKey = KEYS[2]           -- key of the previous bucket
  local dynamicLimitKey = KEYS[3]       -- optional: key for dynamic limit in redis
  local tokens      = tonumber(ARGV[1]) -- default tokens per window
  local now         = ARGV[2]           -- current timestamp in milliseconds
  local window      = ARGV[3]           -- interval in milliseconds
  local incrementBy = tonumber(ARGV[4]) -- increment rate per request at a given value, default is 1

  -- Check for dynamic limit
  local effectiveLimit = tokens
  if dynamicLimitKey and dynamicLimitKey ~= "" then
    local dynamicLimit = redis.call("GET", dynamicLimitKey)
    if dynamicLimit then
      effectiveLimit = tonumber(dynamicLimit)
    end
  end

  local requestsInCurrentWindow = redis.call("GET", currentKey)
  if requestsInCurrentWindow == false then
    requestsInCurrentWindow = 0
  end

  local requestsInPreviousWindow = redis.call("GET", previousKey)
  if requestsInPreviousWindow == false then
    requestsInPreviousWindow = 0
  end
  local percentageInCurrent = ( now % window ) / window
  -- weighted requests to consider from the previous window
  requestsInPreviousWindow = math.floor(( 1 - percentageInCurrent ) * requestsInPreviousWindow)

  -- Only check limit if not refunding (negative rate)
  if incrementBy > 0 and requestsInPreviousWindow + requestsInCurrentWindow >= effectiveLimit then
    return {-1, effectiveLimit}
  end

  local newValue = redis.call("INCRBY", currentKey, incrementBy)
  if newValue == incrementBy then
    -- The first time this key is set, the value will be equal to incrementBy.
    -- So we only need the expire command once
    redis.call("PEXPIRE", currentKey, window * 2 + 1000) -- Enough time to overlap with a new window + 1 second
  end
  return {effectiveLimit - ( newValue + requestsInPreviousWindow ), effectiveLimit}
