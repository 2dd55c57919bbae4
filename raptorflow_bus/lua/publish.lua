-- Fan events out to their queues, in one of two modes:
--
--   'all'   the whole call lands or none of it does: a queue whose depth plus
--           its reserve (the copies the caller's whole batch adds to it)
--           would go over its limit refuses everything (Backpressure). Each
--           list gets its copies in one LPUSH.
--   'each'  every event is checked on its own, in order, against the depth
--           plus the copies the events accepted before it in this call add,
--           and lands whole or not at all; the reply lists the refused ones.
--           (The async publish's group commit: one call, many callers.)
--
-- The caller computed the queues from its cached copy of the exchange's
-- binding table, read at the token ARGV[1] ('<version>:<member count>'). If
-- the table has changed since (a bind or unbind through the bus's transport
-- bumps the version; a stock Kombu client's changes the count), nothing is
-- written and the script answers with the new token and the members, and the
-- caller recomputes and calls again. ARGV[1] = '' skips the check.
--
-- A batch too big for one call (it would stall Redis) is split into calls
-- 1..n that run in order: call k runs only if KEYS[4] says calls 1..k-1 ran,
-- and a call that already ran (the caller sent the batch again after a lost
-- connection) answers 'published' without writing again. ARGV[3] = 0 for a
-- call that is not part of a split batch.
--
-- KEYS[1]                       metrics hash
-- KEYS[2]                       binding table version counter
-- KEYS[3]                       binding table set (Kombu's)
-- KEYS[4]                       the split batch's progress marker
-- KEYS[5 .. 4+nq*ns]            for each queue, its list at each priority step
--                               (list index li: KEYS[4 + li])
-- KEYS[5+nq*ns .. 4+nq*ns+nq]   each queue's wake list
-- ARGV[1]                       the table token, or ''
-- ARGV[2]                       mode, 'all' or 'each'
-- ARGV[3]                       k, this call's place in a split batch (0: not split)
-- ARGV[4]                       how long the progress marker lives, ms
-- ARGV[5]                       nq, the number of queues
-- ARGV[6]                       ns, the number of priority steps
-- ARGV[7]                       the index (1..ns) of the step most events use
--                               (its list is read first)
-- then nq limits, nq queue names, nq reserves (mode 'all'; 0 = no check),
-- then nf and nf metrics fields, then
--   'all':  nf increments, then nr and nr runs of events that go to the
--           same lists: nl and nl list indexes, ne, then ne times nl copies
--           (each event's copies, in its lists' order);
--   'each': ne and ne events: nfe and nfe field indexes, np and np pairs
--           (list index, message).
-- Returns {1} when published ('each': {1, then event index, queue, depth,
-- limit for each refused event}), {0, queue, depth, limit} when refused,
-- {2, token, member...} when the table changed, {3} when an earlier call of
-- the split batch did not run. A queue that got copies gets its wake token
-- (``transport``) if it has none: the list holds at most one.
if ARGV[1] ~= '' then
  local token = (redis.call('GET', KEYS[2]) or '0') .. ':' .. redis.call('SCARD', KEYS[3])
  if token ~= ARGV[1] then
    local reply = redis.call('SMEMBERS', KEYS[3])
    table.insert(reply, 1, token)
    table.insert(reply, 1, 2)
    return reply
  end
end
local k = tonumber(ARGV[3])
if k > 0 then
  local done = tonumber(redis.call('GET', KEYS[4]) or '0')
  if done >= k then return {1} end
  if done ~= k - 1 then return {3} end
end
local nq = tonumber(ARGV[5])
local ns = tonumber(ARGV[6])
local first = tonumber(ARGV[7])
-- ARGV[LIMIT + q], ARGV[NAME + q], ARGV[RESERVE + q]: queue q's; ARGV[F + i]: field i.
local LIMIT, NAME, RESERVE = 7, 7 + nq, 7 + 2 * nq
local F = 8 + 3 * nq
local nf = tonumber(ARGV[F])
local p = F + nf + 1

-- A queue's depth is the sum of its lists' lengths. Most of its lists do not
-- exist (Redis deletes an empty list), so one EXISTS counts those that do and
-- LLEN stops once it has found them all, trying first the normal priority's
-- list: two calls where four were.
local depths = {}
local function depth(q)
  local d = depths[q]
  if d == nil then
    d = 0
    local base = 4 + (q - 1) * ns
    local left = redis.call('EXISTS', unpack(KEYS, base + 1, base + ns))
    local s = first
    while left > 0 do
      local n = redis.call('LLEN', KEYS[base + s])
      if n > 0 then
        d = d + n
        left = left - 1
      end
      s = s % ns + 1
    end
    depths[q] = d
  end
  return d
end

local added, counts, reply = {}, {}, {1}
for q = 1, nq do added[q] = 0 end

if ARGV[2] == 'all' then
  for q = 1, nq do
    local reserve = tonumber(ARGV[RESERVE + q])
    if reserve > 0 then
      local limit = tonumber(ARGV[LIMIT + q])
      if depth(q) + reserve > limit then return {0, ARGV[NAME + q], depths[q], limit} end
    end
  end
  for i = 1, nf do counts[i] = tonumber(ARGV[p + i - 1]) end
  p = p + nf
  local nr = tonumber(ARGV[p])
  p = p + 1
  for _ = 1, nr do
    -- A run of events with the same lists: nl list indexes, ne, then each
    -- event's nl copies. One LPUSH per list (in slices, under Lua's stack
    -- limit); the first given is the first popped.
    local nl = tonumber(ARGV[p])
    local ne = tonumber(ARGV[p + nl + 1])
    local m0 = p + nl + 2
    for j = 0, nl - 1 do
      local li = tonumber(ARGV[p + 1 + j])
      local copies = {}
      for e = 0, ne - 1 do copies[e + 1] = ARGV[m0 + e * nl + j] end
      for i = 1, ne, 1000 do
        redis.call('LPUSH', KEYS[4 + li], unpack(copies, i, math.min(i + 999, ne)))
      end
      local q = math.floor((li - 1) / ns) + 1
      added[q] = added[q] + ne
    end
    p = m0 + ne * nl
  end
else
  for i = 1, nf do counts[i] = 0 end
  local lists, order = {}, {}
  local ne = tonumber(ARGV[p])
  p = p + 1
  for e = 1, ne do
    local nfe = tonumber(ARGV[p])
    local f0 = p + 1
    local np = tonumber(ARGV[f0 + nfe])
    local c0 = f0 + nfe + 1
    p = c0 + 2 * np
    local refused = nil
    for j = 0, np - 1 do
      local q = math.floor((tonumber(ARGV[c0 + 2 * j]) - 1) / ns) + 1
      local limit = tonumber(ARGV[LIMIT + q])
      if depth(q) + added[q] + 1 > limit then
        refused = q
        table.insert(reply, e)
        table.insert(reply, ARGV[NAME + q])
        table.insert(reply, depths[q] + added[q])
        table.insert(reply, limit)
        break
      end
    end
    if not refused then
      for j = 0, np - 1 do
        local li = tonumber(ARGV[c0 + 2 * j])
        local q = math.floor((li - 1) / ns) + 1
        added[q] = added[q] + 1
        local list = lists[li]
        if list == nil then
          list = {}
          lists[li] = list
          table.insert(order, li)
        end
        list[#list + 1] = ARGV[c0 + 2 * j + 1]
      end
      for j = f0, f0 + nfe - 1 do
        local f = tonumber(ARGV[j])
        counts[f] = counts[f] + 1
      end
    end
  end
  for _, li in ipairs(order) do
    local list = lists[li]
    for i = 1, #list, 1000 do
      redis.call('LPUSH', KEYS[4 + li], unpack(list, i, math.min(i + 999, #list)))
    end
  end
end

for q = 1, nq do
  if added[q] > 0 then
    local wake = KEYS[4 + nq * ns + q]
    if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
  end
end
for i = 1, nf do
  if counts[i] > 0 then redis.call('HINCRBY', KEYS[1], ARGV[F + i], counts[i]) end
end
if k > 0 then redis.call('SET', KEYS[4], k, 'PX', ARGV[4]) end
return reply
