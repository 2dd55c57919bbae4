-- Store or replace a dead letter, evicting the oldest past capacity, in one
-- step so the index and the entries never disagree.
--
-- KEYS[1]  dead letters hash (id -> letter JSON)
-- KEYS[2]  dead letter index (zset id -> time, oldest first)
-- KEYS[3]  metrics hash
-- ARGV[1]  letter id
-- ARGV[2]  letter JSON
-- ARGV[3]  time (unix seconds)
-- ARGV[4]  capacity
-- ARGV[5]  metrics field counting evictions
-- Returns the evicted ids.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
local evicted = {}
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #popped, 2 do
    redis.call('HDEL', KEYS[1], popped[i])
    table.insert(evicted, popped[i])
  end
  redis.call('HINCRBY', KEYS[3], ARGV[5], #evicted)
end
return evicted
