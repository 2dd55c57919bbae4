-- May a handler run start? Not if its task id is already done: then count a
-- duplicate; else count the start. One round trip per handler run.
--
-- KEYS[1]  the task's done record
-- KEYS[2]  metrics hash
-- ARGV[1]  ndup, the number of (field, increment) pairs counted on a duplicate
-- ARGV[2 .. 1+2*ndup]  those pairs
-- ARGV[2+2*ndup ..]    the pairs counted on a start
-- Returns 1 to run, 0 for a duplicate.
local ndup = tonumber(ARGV[1])
local first, last, result = 2 + 2 * ndup, #ARGV, 1
if redis.call('EXISTS', KEYS[1]) == 1 then
  first, last, result = 2, 1 + 2 * ndup, 0
end
for i = first, last, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1])) end
return result
