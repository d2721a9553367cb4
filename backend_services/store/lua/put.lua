-- Write a record, optionally compare-and-set, optionally expiring (PX, server clock).
-- KEYS[1] record; ARGV: expect ('' = any, 0 = absent), updated_at, ttl_ms ('' = none), JSON.
-- Returns the new version, or -(1 + actual version) when the expectation failed.
local current = record_version(redis.call('GET', KEYS[1]))
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= current then return -1 - current end
write_record(KEYS[1], current + 1, ARGV[2], ARGV[3], ARGV[4])
return current + 1
