-- The event hop's commit: write the handler tasks of a batch of popped events,
-- wake the handler queues, and ack the events, all in one step. A crash leaves
-- either the events still recorded against their worker (the reaper or the
-- worker's own sweep restores them) or their tasks written and the events
-- acked, never neither and never both.
--
-- An event that is no longer unacked was restored meanwhile (a reaper that
-- took this worker for dead, or this worker's sweep after a lost reply): its
-- tasks are not written, since its redelivery writes them.
--
-- KEYS[1]           unacked hash
-- KEYS[2]           unacked index
-- KEYS[3]           the owner's deliveries hash, or '' for none
-- KEYS[4 .. 3+nw]   the wake lists of the handler queues written to
-- KEYS[4+nw ..]     the handler queues' priority lists written to
-- ARGV[1]           nw
-- ARGV[2]           ne, the number of events
-- then per event: its tag, npush, and npush pairs (list: index into KEYS
-- counted from 4+nw, starting at 1; the task message)
-- Returns one flag per event: 1 if its tasks were written, 0 if it had been
-- restored.
local nw = tonumber(ARGV[1])
local ne = tonumber(ARGV[2])
local tags, at = {}, {}
local p = 3
for e = 1, ne do
  tags[e] = ARGV[p]
  at[e] = p + 1
  p = p + 2 + 2 * tonumber(ARGV[p + 1])
end
local held = redis.call('HMGET', KEYS[1], unpack(tags))
local pushes, order, flags = {}, {}, {}
for e = 1, ne do
  flags[e] = 0
  if held[e] then
    flags[e] = 1
    local q = at[e]
    for k = 1, tonumber(ARGV[q]) do
      local key = KEYS[3 + nw + tonumber(ARGV[q + 2 * k - 1])]
      if not pushes[key] then pushes[key] = {}; table.insert(order, key) end
      table.insert(pushes[key], ARGV[q + 2 * k])
    end
  end
end
for _, key in ipairs(order) do redis.call('LPUSH', key, unpack(pushes[key])) end
if #order > 0 then
  for w = 4, 3 + nw do
    redis.call('LPUSH', KEYS[w], '1')
    redis.call('LTRIM', KEYS[w], 0, 0)
  end
end
redis.call('HDEL', KEYS[1], unpack(tags))
redis.call('ZREM', KEYS[2], unpack(tags))
if KEYS[3] ~= '' then redis.call('HDEL', KEYS[3], unpack(tags)) end
return flags
