-- Compare-and-delete. KEYS[1] record; ARGV[1] expected version (0 = absent).
-- Returns 1 if deleted, 0 if absent, or -(1 + actual version) when the expectation failed.
local raw = redis.call('GET', KEYS[1])
local current = record_version(raw)
if tonumber(ARGV[1]) ~= current then return -1 - current end
if raw then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
