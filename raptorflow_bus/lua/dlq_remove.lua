-- Remove dead letters (a replay that succeeded, a purge) and take them out of
-- their failure groups, in one step.
--
-- KEYS[1]  dead letters hash
-- KEYS[2]  dead letter index
-- KEYS[3]  group cells hash
-- KEYS[4]  groups zset
-- ARGV[1]  DLQ key prefix
-- ARGV[2..] letter ids
-- Returns how many letters were there.
-- #include dlq_groups
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  group_drop(KEYS[3], KEYS[4], ARGV[1], ARGV[i])
end
return removed
