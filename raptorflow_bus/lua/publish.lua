-- Fan one batch of events out to its queues, all of it or none of it: a queue
-- that would go over its limit refuses the whole batch (Backpressure).
--
-- The caller computed the queues from its cached copy of the exchange's
-- binding table, read at the token ARGV[1] ('<version>:<member count>'). If
-- the table has changed since (a bind or unbind through the bus's transport
-- bumps the version; a stock Kombu client's changes the count), nothing is
-- written and the script answers with the new token and the members, and the
-- caller recomputes and calls again. ARGV[1] = '' skips the check.
--
-- KEYS[1]                       metrics hash
-- KEYS[2]                       binding table version counter
-- KEYS[3]                       binding table set (Kombu's)
-- KEYS[4 .. 3+nq*ns]            for each queue, its list at each priority step
-- KEYS[4+nq*ns .. 3+nq*ns+nq]   each queue's wake list
-- ARGV[1]                       the table token, or ''
-- ARGV[2]                       nq, the number of queues
-- ARGV[3]                       ns, the number of priority steps
-- then nq limits, nq queue names,
-- then npush and npush triples (queue index, step index, message),
-- then nm and nm pairs (metrics field, increment).
-- Returns {1} when published, {0, queue, depth, limit} when refused,
-- {2, token, member...} when the table changed.
if ARGV[1] ~= '' then
  local token = (redis.call('GET', KEYS[2]) or '0') .. ':' .. redis.call('SCARD', KEYS[3])
  if token ~= ARGV[1] then
    local reply = redis.call('SMEMBERS', KEYS[3])
    table.insert(reply, 1, token)
    table.insert(reply, 1, 2)
    return reply
  end
end
local nq = tonumber(ARGV[2])
local ns = tonumber(ARGV[3])
local p = 4
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
  for s = 1, ns do len = len + redis.call('LLEN', KEYS[3 + (i - 1) * ns + s]) end
  if len + (adds[i] or 0) > limits[i] then return {0, names[i], len, limits[i]} end
end
for j = 1, npush do
  redis.call('LPUSH', KEYS[3 + (tonumber(ARGV[p]) - 1) * ns + tonumber(ARGV[p + 1])], ARGV[p + 2])
  p = p + 3
end
for i = 1, nq do
  local wake = KEYS[3 + nq * ns + i]
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
local nm = tonumber(ARGV[p]); p = p + 1
for j = 1, nm do
  redis.call('HINCRBY', KEYS[1], ARGV[p], tonumber(ARGV[p + 1]))
  p = p + 2
end
return {1}
