-- Release a lease held by ARGV[1]. KEYS[1] lease. Returns 1 if released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
