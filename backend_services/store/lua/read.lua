-- Events after a position. KEYS: stream, its sequence counter. ARGV: after, count.
-- Returns {resync (0/1), stream end, entries}; resync when the reader's position is past
-- the end (the stream was reset) or older than the oldest retained event (trimmed).
local after = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if after > last then return {1, last} end
if after == last then return {0, last} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local floor = last
if first[1] then floor = tonumber(string.match(first[1][1], '^(%d+)')) - 1 end
if after < floor then return {1, last} end
return {0, last, redis.call('XRANGE', KEYS[1], (after + 1) .. '-0', '+', 'COUNT', ARGV[2])}
