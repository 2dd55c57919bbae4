-- Pop one message for a consumer and record it as unacked in the same step
-- (after acking the deliveries the consumer acked since its last pop).
-- Priority first across all the consumer's queues, as stock Kombu's BRPOP key
-- order does; re-arms the wake token of every queue still holding messages.
--
-- KEYS[1]          unacked hash (tag -> [message, '', queue])
-- KEYS[2]          unacked index (zset tag -> delivery time)
-- KEYS[3]          malformed quarantine list
-- KEYS[4]          the owner's deliveries (hash tag -> queue), or '' for none
-- KEYS[5 .. 4+nq]  wake list of each queue
-- KEYS[5+nq ..]    priority lists: for each priority step, each queue in order
-- ARGV[1]          now (unix seconds)
-- ARGV[2]          nq, the number of queues
-- ARGV[3 .. 2+nq]  '1' where the queue's consumer acks (record it), else '0'
-- ARGV[3+nq .. 2+2nq]  queue names
-- ARGV[3+2nq]      na, the number of deliveries to ack first (whose acks the
--                  consumer held back for this call), then their tags
-- Returns false when nothing was queued, or {message, tag or '', queue index,
-- more}; message '' = quarantined; more = 1 when any queue still holds
-- messages (the consumer then pops again without waiting for a token).
local nq = tonumber(ARGV[2])
local first = 5 + nq
local na = tonumber(ARGV[3 + 2 * nq] or '0')
if na > 0 then
  local tags = {}
  for i = 1, na do tags[i] = ARGV[3 + 2 * nq + i] end
  redis.call('HDEL', KEYS[1], unpack(tags))
  redis.call('ZREM', KEYS[2], unpack(tags))
  if KEYS[4] ~= '' then redis.call('HDEL', KEYS[4], unpack(tags)) end
end
local item, qi
for j = 0, #KEYS - first do
  item = redis.call('RPOP', KEYS[first + j])
  if item then qi = (j % nq) + 1; break end
end
local more = 0
for q = 1, nq do
  -- One EXISTS per queue over its priority lists (an empty list does not
  -- exist), not one LLEN per list.
  local lists = {}
  for s = first + q - 1, #KEYS, nq do table.insert(lists, KEYS[s]) end
  if redis.call('EXISTS', unpack(lists)) > 0 then
    more = 1
    -- A token already there (a consumer popping a backlog without BRPOP
    -- leaves it) is enough: one EXISTS instead of LPUSH and LTRIM.
    if redis.call('EXISTS', KEYS[4 + q]) == 0 then redis.call('LPUSH', KEYS[4 + q], '1') end
  else
    redis.call('DEL', KEYS[4 + q])
  end
end
if not item then return false end
if ARGV[2 + qi] ~= '1' then return {item, '', qi, more} end
local ok, msg = pcall(cjson.decode, item)
if not ok or type(msg) ~= 'table' or type(msg.properties) ~= 'table'
    or type(msg.properties.delivery_tag) ~= 'string' then
  redis.call('LPUSH', KEYS[3], item)
  return {'', '', qi, more}
end
-- Recorded against the anonymous exchange with the queue it was taken from as
-- routing key, whatever the message says it was published to: a restore (the
-- visibility timeout, a closing channel) puts it back on this queue only, never
-- through the exchange to every bound queue again (trap 3).
local tag = msg.properties.delivery_tag
redis.call('HSET', KEYS[1], tag, '[' .. item .. ',"",' .. cjson.encode(ARGV[2 + nq + qi]) .. ']')
redis.call('ZADD', KEYS[2], ARGV[1], tag)
if KEYS[4] ~= '' then redis.call('HSET', KEYS[4], tag, ARGV[2 + nq + qi]) end
return {item, tag, qi, more}
