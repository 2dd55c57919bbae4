-- A handler run succeeded: write its done record and count it, in one step
-- (one command to send and one reply to read, where a pipeline of the same
-- writes cost a command and a reply each). The done record is what makes a
-- redelivery of the task a counted duplicate instead of a second run.
--
-- KEYS[1]  the task's done record
-- KEYS[2]  metrics hash
-- ARGV[1]  the done record's time to live, seconds
-- ARGV[2 ..]  (field, increment) pairs counted on success
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], tonumber(ARGV[i + 1])) end
return 1
