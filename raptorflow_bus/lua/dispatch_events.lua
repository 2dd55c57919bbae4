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
-- An event whose tasks were written before (its dispatched marker is set) is
-- a second copy: an emit that spooled though its write landed, a resend by a
-- stock producer. It is acked and writes nothing, so that no handler queue
-- holds two copies of a task, which two pool children could run at once.
--
-- KEYS[1]           unacked hash
-- KEYS[2]           unacked index
-- KEYS[3]           the owner's deliveries hash, or '' for none
-- KEYS[4 .. 3+nw]   the wake lists of the handler queues written to
-- KEYS[4+nw ..]     the handler queues' priority lists written to
-- ARGV[1]           nw
-- ARGV[2]           ne, the number of events
-- ARGV[3]           the dispatched markers' time to live, seconds
-- then per event: its tag, its dispatched marker ('' when it has no tasks),
-- npush, and npush pairs (list: index into KEYS counted from 4+nw, starting
-- at 1; the task message)
-- Returns one flag per event: 1 if its tasks were written, 0 if it had been
-- restored, 2 if they had been written before.
local nw = tonumber(ARGV[1])
local ne = tonumber(ARGV[2])
local ttl = ARGV[3]
local tags, marks, at = {}, {}, {}
local p = 4
for e = 1, ne do
  tags[e] = ARGV[p]
  marks[e] = ARGV[p + 1]
  at[e] = p + 2
  p = p + 3 + 2 * tonumber(ARGV[p + 2])
end
local held = redis.call('HMGET', KEYS[1], unpack(tags))
local pushes, order, flags = {}, {}, {}
for e = 1, ne do
  flags[e] = 0
  if held[e] and marks[e] ~= '' and not redis.call('SET', marks[e], '1', 'NX', 'EX', ttl) then
    flags[e] = 2
  elseif held[e] then
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
