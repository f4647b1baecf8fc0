-- Every counter of INFO ratelimit, for redis_exporter's --script option:
--
--   redis_exporter --script /path/to/ratelimit.lua
--
-- The exporter runs this with EVAL and expects a flat list of name, value
-- strings (as HGETALL replies); each pair becomes
-- redis_script_values{key="<name>"} <value>. The fields are read from the
-- section as it is, so counters added to the module appear without a change
-- here. A value that is not a number is left out: the exporter would drop
-- the whole list for it.
local result = {}
local info = redis.call('INFO', 'ratelimit')
for line in string.gmatch(info, '[^\r\n]+') do
  local name, value = string.match(line, '^(ratelimit_[%w_]+):(.*)$')
  if name and tonumber(value) then
    result[#result + 1] = name
    result[#result + 1] = value
  end
end
return result
