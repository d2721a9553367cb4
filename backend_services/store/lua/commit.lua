-- Apply operations all or nothing. ARGV[1] = updated_at of Put records; then, per operation
-- (k = its first index in KEYS):
--   P k expect ttl_ms json     put            D k expect                 delete
--   C k expect                 check          A k n member*n             set add
--   R k n member*n             set remove     N k updated_at ttl_ms deleted json  put if newer
--   E k maxlen dedupe_id json  append (KEYS k, k+1, k+2 = stream, counter, dedupe ids)
-- Every condition is checked against the state before the commit; only when all hold are
-- the operations applied, in order. Returns {1, result per operation} (new version,
-- 0 for a delete, -1 for a skipped put-if-newer, sequence of an append), or
-- {0, index of the failed operation, actual version}.
local ops = {}
local i = 2
local n = #ARGV
while i <= n do
  local code = ARGV[i]
  ops[#ops + 1] = {code, tonumber(ARGV[i + 1]), i}
  if code == 'P' or code == 'E' then i = i + 5
  elseif code == 'D' or code == 'C' then i = i + 3
  elseif code == 'A' or code == 'R' then i = i + 3 + tonumber(ARGV[i + 2])
  elseif code == 'N' then i = i + 6
  else return redis.error_reply('commit: unknown operation ' .. tostring(code)) end
end

for index, op in ipairs(ops) do
  local code, at = op[1], op[3]
  if (code == 'P' or code == 'D' or code == 'C') and ARGV[at + 2] ~= '' then
    local actual = record_version(redis.call('GET', KEYS[op[2]]))
    if actual ~= tonumber(ARGV[at + 2]) then return {0, index, actual} end
  end
end

local out = {1}
for _, op in ipairs(ops) do
  local code, k, at = op[1], op[2], op[3]
  local key = KEYS[k]
  local result = 0
  if code == 'P' then
    result = record_version(redis.call('GET', key)) + 1
    write_record(key, result, ARGV[1], ARGV[at + 3], ARGV[at + 4])
  elseif code == 'D' then
    redis.call('DEL', key)
  elseif code == 'A' then
    set_change('SADD', key, at + 3, tonumber(ARGV[at + 2]))
  elseif code == 'R' then
    set_change('SREM', key, at + 3, tonumber(ARGV[at + 2]))
  elseif code == 'N' then
    result = put_if_newer(key, ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5])
  elseif code == 'E' then
    result = append_event(key, KEYS[k + 1], KEYS[k + 2], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4])
  end
  out[#out + 1] = result
end
return out
