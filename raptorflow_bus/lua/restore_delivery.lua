-- Put one unacked delivery back on its queue, unless it was acked meanwhile:
-- the unacked hash is the truth, so two reapers racing, or a reaper racing the
-- owner's late ack, restore a delivery at most once.
--
-- KEYS[1]  unacked hash
-- KEYS[2]  unacked index
-- KEYS[3]  the owner's deliveries hash (tag -> queue)
-- KEYS[4]  the queue's list for the message's priority
-- KEYS[5]  the queue's wake list
-- ARGV[1]  delivery tag
-- ARGV[2]  the message to push (marked redelivered)
-- Returns 1 if restored, 0 if it was no longer unacked.
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[2])
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 0)
return 1
