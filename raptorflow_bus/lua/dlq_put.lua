-- Store or replace a dead letter, evicting the oldest past capacity, and keep
-- its failure group up to date, in one step so the index, the entries and the
-- groups never disagree.
--
-- KEYS[1]  dead letters hash (id -> letter JSON)
-- KEYS[2]  dead letter index (zset id -> time, oldest first)
-- KEYS[3]  metrics hash
-- KEYS[4]  group cells hash (id -> group, event type, workspace)
-- KEYS[5]  groups zset (group id -> last seen)
-- ARGV[1]  letter id
-- ARGV[2]  letter JSON
-- ARGV[3]  time (unix seconds)
-- ARGV[4]  capacity
-- ARGV[5]  metrics field counting evictions
-- ARGV[6]  DLQ key prefix (the group keys of dlq_groups.lua are built from it)
-- ARGV[7..16] the letter's group: id, workspace ('' for none), event type,
--          first failed, last failed (unix seconds), handler, guild,
--          exception type, normalised message, message
-- Returns the evicted ids.
-- #include dlq_groups
local p = ARGV[6]
group_drop(KEYS[4], KEYS[5], p, ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
group_add(KEYS[4], KEYS[5], p, ARGV[1], ARGV[3],
          {ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14],
           ARGV[15], ARGV[16]})
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
local evicted = {}
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #popped, 2 do
    redis.call('HDEL', KEYS[1], popped[i])
    group_drop(KEYS[4], KEYS[5], p, popped[i])
    table.insert(evicted, popped[i])
  end
  redis.call('HINCRBY', KEYS[3], ARGV[5], #evicted)
end
return evicted
