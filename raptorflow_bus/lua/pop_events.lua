-- Pop up to N events for a guild worker's event hop and record each one as
-- unacked and owned in the same step, as pop.lua does for one message: at every
-- instant an event is in its queue or recorded against the worker that holds
-- it, whose reaper (or the visibility timeout) brings it back. Priority first
-- across all the worker's event queues; re-arms the wake token of every queue
-- still holding messages, so another worker of the guild shares a backlog.
--
-- KEYS[1]          unacked hash (tag -> [message, '', queue])
-- KEYS[2]          unacked index (zset tag -> delivery time)
-- KEYS[3]          malformed quarantine list
-- KEYS[4]          the owner's deliveries (hash tag -> queue), or '' for none
-- KEYS[5 .. 4+nq]  wake list of each queue
-- KEYS[5+nq ..]    priority lists: for each priority step, each queue in order
-- ARGV[1]          now (unix seconds)
-- ARGV[2]          nq, the number of queues
-- ARGV[3]          N, the most events to pop
-- ARGV[4 .. 3+nq]  queue names
-- Returns {more, then for each event popped: queue index, message, tag}; more
-- is 1 when any of the queues still holds messages. Unparseable messages go
-- to the malformed list and are not returned.
local nq = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local first = 5 + nq
local nlists = #KEYS - first + 1
local reply = {0}
local records, index, owned = {}, {}, {}
local j = 0
while want > 0 and j < nlists do
  local items = redis.call('RPOP', KEYS[first + j], want)
  if items then
    local qi = (j % nq) + 1
    local queue = ARGV[3 + qi]
    for _, item in ipairs(items) do
      local ok, msg = pcall(cjson.decode, item)
      if ok and type(msg) == 'table' and type(msg.properties) == 'table'
          and type(msg.properties.delivery_tag) == 'string' then
        local tag = msg.properties.delivery_tag
        -- Recorded against the anonymous exchange with its own queue as
        -- routing key: a restore puts it back on that queue only (trap 3).
        table.insert(records, tag)
        table.insert(records, '[' .. item .. ',"",' .. cjson.encode(queue) .. ']')
        table.insert(index, ARGV[1])
        table.insert(index, tag)
        table.insert(owned, tag)
        table.insert(owned, queue)
        table.insert(reply, qi)
        table.insert(reply, item)
        table.insert(reply, tag)
      else
        redis.call('LPUSH', KEYS[3], item)
      end
    end
    want = want - #items
  end
  j = j + 1
end
if #records > 0 then
  redis.call('HSET', KEYS[1], unpack(records))
  redis.call('ZADD', KEYS[2], unpack(index))
  if KEYS[4] ~= '' then redis.call('HSET', KEYS[4], unpack(owned)) end
end
for q = 1, nq do
  local lists = {}
  for s = first + q - 1, #KEYS, nq do table.insert(lists, KEYS[s]) end
  if redis.call('EXISTS', unpack(lists)) > 0 then
    reply[1] = 1
    -- A token already there (a consumer popping a backlog without BRPOP
    -- leaves it) is enough: one EXISTS instead of LPUSH and LTRIM.
    if redis.call('EXISTS', KEYS[4 + q]) == 0 then redis.call('LPUSH', KEYS[4 + q], '1') end
  else
    redis.call('DEL', KEYS[4 + q])
  end
end
return reply
