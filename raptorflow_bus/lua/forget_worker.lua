-- Drop a dead worker's heartbeat once its deliveries are all restored, unless
-- it beat again meanwhile (a worker paused past the lapse comes back alive).
--
-- KEYS[1]  heartbeats (zset worker -> last beat)
-- KEYS[2]  the worker's deliveries hash
-- ARGV[1]  worker id
-- ARGV[2]  cutoff: the beat must be at or before it
-- Returns 1 if forgotten.
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not beat or tonumber(beat) > tonumber(ARGV[2]) then return 0 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
