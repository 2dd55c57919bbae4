-- May a handler run start? Not if its task id is already done: then count a
-- duplicate; else count the start. One round trip per handler run.
--
-- KEYS[1]  the task's done record
-- KEYS[2]  metrics hash
-- ARGV[1]  ndup, the number of duplicate counter fields that follow
-- ARGV[2 .. 1+ndup]  fields to increment on a duplicate
-- ARGV[2+ndup ..]    fields to increment on a start
-- Returns 1 to run, 0 for a duplicate.
local ndup = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 2, ndup + 1 do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
  return 0
end
for i = ndup + 2, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i], 1) end
return 1
