-- Failure groups (raptorflow_bus/dlq_groups.py), kept in step with the dead
-- letters by the scripts that include this file (dlq_put.lua, dlq_remove.lua),
-- in the same script call, so a group's count never disagrees with its letters.
--
-- <p> is the DLQ key prefix ('raptorbus:dlq:'); per group <gid> and letter
-- workspace <ws> ('' for none):
--   <cells>             hash  letter id -> '<gid>\n<event type>\n<ws>'
--   <groups>            zset  gid -> last seen (unix seconds)
--   <p>group:<gid>      hash  handler, guild, exception_type, pattern, count,
--                             and per workspace: n:<ws> letters, f:<ws> first
--                             seen, l:<ws> last seen, s:<ws> latest message,
--                             e:<ws>|<event type> letters of that type
--   <p>wsgroups:<ws>    zset  gid -> last seen in that workspace
--   <p>members:<gid>    zset  letter id -> its position in the DLQ index
--   <p>wsmembers:<gid>:<ws> zset the same, for one workspace's letters
local function group_key(p, gid) return p .. 'group:' .. gid end
local function members_key(p, gid, ws) return p .. 'wsmembers:' .. gid .. ':' .. ws end
local function ws_groups_key(p, ws) return p .. 'wsgroups:' .. ws end

local function group_drop(cells, groups, p, id)
  local cell = redis.call('HGET', cells, id)
  if not cell then return end
  redis.call('HDEL', cells, id)
  local gid, et, ws = string.match(cell, '^([^\n]*)\n([^\n]*)\n(.*)$')
  local group = group_key(p, gid)
  redis.call('ZREM', members_key(p, gid, ws), id)
  redis.call('ZREM', p .. 'members:' .. gid, id)
  local typed = 'e:' .. ws .. '|' .. et
  if redis.call('HINCRBY', group, typed, -1) <= 0 then redis.call('HDEL', group, typed) end
  if redis.call('HINCRBY', group, 'n:' .. ws, -1) <= 0 then
    redis.call('HDEL', group, 'n:' .. ws, 'f:' .. ws, 'l:' .. ws, 's:' .. ws)
    redis.call('ZREM', ws_groups_key(p, ws), gid)
  end
  if redis.call('HINCRBY', group, 'count', -1) <= 0 then
    redis.call('DEL', group)
    redis.call('ZREM', groups, gid)
  end
end

-- g: {gid, ws, event type, first failed, last failed, handler, guild,
--     exception type, pattern, message}
local function group_add(cells, groups, p, id, position, g)
  local gid, ws, et, first, last = g[1], g[2], g[3], g[4], g[5]
  redis.call('HSET', cells, id, gid .. '\n' .. et .. '\n' .. ws)
  redis.call('ZADD', members_key(p, gid, ws), position, id)
  redis.call('ZADD', p .. 'members:' .. gid, position, id)
  local group = group_key(p, gid)
  if redis.call('HINCRBY', group, 'count', 1) == 1 then
    redis.call('HSET', group, 'handler', g[6], 'guild', g[7], 'exception_type', g[8],
               'pattern', g[9])
  end
  redis.call('HINCRBY', group, 'n:' .. ws, 1)
  redis.call('HINCRBY', group, 'e:' .. ws .. '|' .. et, 1)
  local f = redis.call('HGET', group, 'f:' .. ws)
  if not f or tonumber(first) < tonumber(f) then redis.call('HSET', group, 'f:' .. ws, first) end
  local l = redis.call('HGET', group, 'l:' .. ws)
  if not l or tonumber(last) >= tonumber(l) then
    redis.call('HSET', group, 'l:' .. ws, last, 's:' .. ws, g[10])
  end
  redis.call('ZADD', groups, 'GT', last, gid)
  redis.call('ZADD', ws_groups_key(p, ws), 'GT', last, gid)
end
