-- Helpers shared by the store's scripts; the loader puts this text before each script.
-- A record is the string "<version>:<updated_at>:<value JSON>" (see store/keys.py).

local function record_version(raw)
  if not raw then return 0 end
  return tonumber(string.match(raw, '^(%d+):')) or 0
end

local function record_time(raw)
  return tonumber(string.match(raw, '^%d+:([^:]+):')) or -math.huge
end

local function write_record(key, version, updated_at, ttl_ms, body)
  local rec = version .. ':' .. updated_at .. ':' .. body
  if ttl_ms == '' then
    redis.call('SET', key, rec)
  else
    redis.call('SET', key, rec, 'PX', ttl_ms)
  end
end

-- Reconciliation write: applied only over an absent or older record; -1 when skipped.
local function put_if_newer(key, updated_at, ttl_ms, deleted, body)
  local cur = redis.call('GET', key)
  if cur and record_time(cur) >= tonumber(updated_at) then return -1 end
  if deleted == '1' then
    redis.call('DEL', key)
    return 0
  end
  local version = record_version(cur) + 1
  write_record(key, version, updated_at, ttl_ms, body)
  return version
end

-- Streams shorter than this are trimmed exactly, longer ones by whole nodes (MAXLEN ~).
local APPROXIMATE_TRIM_FROM = 1000
-- Each stream remembers at least this many recent dedupe ids.
local DEDUPE_MEMORY = 10000
-- The ids are trimmed back to the window only once they exceed it by this many, so an
-- append pays for ZREMRANGEBYRANK once per this many ids rather than every time.
local DEDUPE_TRIM_SLACK = 1000

local function append_event(stream, seq_key, dedupe_key, maxlen, dedupe_id, data)
  local seq = redis.call('INCR', seq_key)
  if dedupe_id ~= '' and redis.call('ZADD', dedupe_key, 'NX', seq, dedupe_id) == 0 then
    -- A repeat: give the number back (nothing outside the script saw it) and answer the
    -- sequence the id was first appended at.
    redis.call('DECR', seq_key)
    return tonumber(redis.call('ZSCORE', dedupe_key, dedupe_id))
  end
  local args = {'XADD', stream}
  local limit = nil
  if maxlen ~= '' then
    limit = tonumber(maxlen)
    args[#args + 1] = 'MAXLEN'
    if limit >= APPROXIMATE_TRIM_FROM then args[#args + 1] = '~' end
    args[#args + 1] = limit
  end
  local id_at = #args + 1
  args[id_at] = seq .. '-0'
  args[id_at + 1] = 'd'
  args[id_at + 2] = data
  local added = redis.pcall(unpack(args))
  if type(added) == 'table' and added.err then
    -- The counter is behind the stream (its key was lost): continue after the stream's end.
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if top[1] then
      seq = tonumber(string.match(top[1][1], '^(%d+)')) + 1
      redis.call('SET', seq_key, seq)
      args[id_at] = seq .. '-0'
      added = redis.pcall(unpack(args))
    end
    if type(added) == 'table' and added.err then
      -- Not appended: the id must not be remembered, so a retry is not taken for a repeat.
      if dedupe_id ~= '' then redis.call('ZREM', dedupe_key, dedupe_id) end
      return redis.error_reply(added.err)
    end
    if dedupe_id ~= '' then redis.call('ZADD', dedupe_key, seq, dedupe_id) end
  end
  if dedupe_id ~= '' then
    local window = DEDUPE_MEMORY
    if limit and limit > window then window = limit end
    if redis.call('ZCARD', dedupe_key) > window + DEDUPE_TRIM_SLACK then
      redis.call('ZREMRANGEBYRANK', dedupe_key, 0, -(window + 1))
    end
  end
  return seq
end

local function set_change(command, key, first, count)
  local i = first
  local last = first + count - 1
  while i <= last do
    local j = math.min(i + 999, last)
    redis.call(command, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
