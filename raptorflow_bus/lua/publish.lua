-- Fan one batch of events out to every bound queue, all of it or none of it:
-- a queue that would go over its limit refuses the whole batch (Backpressure).
--
-- KEYS[1]                       metrics hash
-- KEYS[2 .. 1+nq*ns]            for each queue, its list at each priority step
-- KEYS[2+nq*ns .. 1+nq*ns+nq]   each queue's wake list
-- ARGV[1]                       nq, the number of queues
-- ARGV[2]                       ns, the number of priority steps
-- then nq limits, nq queue names,
-- then npush and npush triples (queue index, step index, message),
-- then nm and nm pairs (metrics field, increment).
-- Returns {1} when published, {0, queue, depth, limit} when refused.
local nq = tonumber(ARGV[1])
local ns = tonumber(ARGV[2])
local p = 3
local limits, names, adds = {}, {}, {}
for i = 1, nq do limits[i] = tonumber(ARGV[p]); p = p + 1 end
for i = 1, nq do names[i] = ARGV[p]; p = p + 1 end
local npush = tonumber(ARGV[p]); p = p + 1
for j = 0, npush - 1 do
  local qi = tonumber(ARGV[p + 3 * j])
  adds[qi] = (adds[qi] or 0) + 1
end
for i = 1, nq do
  local len = 0
  for s = 1, ns do len = len + redis.call('LLEN', KEYS[1 + (i - 1) * ns + s]) end
  if len + (adds[i] or 0) > limits[i] then return {0, names[i], len, limits[i]} end
end
for j = 1, npush do
  redis.call('LPUSH', KEYS[1 + (tonumber(ARGV[p]) - 1) * ns + tonumber(ARGV[p + 1])], ARGV[p + 2])
  p = p + 3
end
for i = 1, nq do
  local wake = KEYS[1 + nq * ns + i]
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
local nm = tonumber(ARGV[p]); p = p + 1
for j = 1, nm do
  redis.call('HINCRBY', KEYS[1], ARGV[p], tonumber(ARGV[p + 1]))
  p = p + 2
end
return {1}
