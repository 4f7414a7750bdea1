"""Lua scripts of the store: each one is a single atomic step in Redis.

Times are integer epoch milliseconds. Every key a script touches is in one shard
(``keys.Keys``: on a Redis Cluster, one hash slot). The scripts name their keys through
KEYS, except ``LOAD`` and ``RESPOND``, which derive a vehicle's keys (twin, lock) or an
activation's from the shard's key base (ARGV): the activation and its vehicle are in
the same shard, so those keys are in the slot of the declared ones.
"""

from __future__ import annotations

# KEYS: act   ARGV: the shard's key base (``Keys.base``)
LOAD = """
local a = redis.call('HMGET', KEYS[1], 'doc', 'version', 'vin')
if not a[1] then return false end
local twin = redis.call('HGETALL', ARGV[1] .. ':twin:' .. a[3])
local lock = redis.call('GET', ARGV[1] .. ':lock:' .. a[3]) or ''
return {a[1], a[2], lock, twin}
"""

# KEYS: act timers outbox states open desired twin lock reconciled, then the list
#       indexes the activation joins (``listing.index_keys``)
# ARGV: id doc state due_ms request_hash vin open_member guard_feature now_ms timer_ms
#       guard_limit guard_window_ms index_entry, then n_events and 4 values per event
#       (event_id type at data)
# A guarded create (reconciliation: guard_feature set) is skipped when the feature is
# wanted active or already has an open activation, and refused ('limited') past
# guard_limit creations per vehicle within guard_window_ms.
# Returns {'created', lock_holder, twin_flat}: what the first step decides on, so the
# creating worker can take it at once without another round trip (``LOAD``).
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', redis.call('HGET', KEYS[1], 'request_hash') or '',
          redis.call('HGET', KEYS[1], 'doc')}
end
local feature = ARGV[8]
if feature ~= '' then
  if redis.call('HGET', KEYS[6], feature) == 'active' then return {'skip'} end
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if string.sub(m, 1, #feature + 1) == feature .. '|' then return {'skip'} end
  end
  if tonumber(redis.call('GET', KEYS[9]) or '0') >= tonumber(ARGV[11]) then
    return {'limited'}
  end
  if redis.call('INCR', KEYS[9]) == 1 then redis.call('PEXPIRE', KEYS[9], ARGV[12]) end
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'version', 1, 'state', ARGV[3],
           'due_ms', ARGV[4], 'request_hash', ARGV[5], 'vin', ARGV[6])
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
redis.call('ZADD', KEYS[2], ARGV[10], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[7])
for k = 10, #KEYS do redis.call('ZADD', KEYS[k], 0, ARGV[13]) end
local n = tonumber(ARGV[14])
for i = 0, n - 1 do
  local b = 14 + i * 4
  redis.call('XADD', KEYS[3], '*', 'event_id', ARGV[b + 1], 'type', ARGV[b + 2],
             'at', ARGV[b + 3], 'data', ARGV[b + 4])
end
return {'created', redis.call('GET', KEYS[8]) or '', redis.call('HGETALL', KEYS[7])}
"""

# KEYS: act timers leases outbox states twin lock waiting cmds open desired, then the
#       list indexes to leave, then those to join (``listing.index_moves``)
# ARGV: 1 id  2 expected_version  3 expected_lock  4 expected_rev  5 doc  6 state
#       7 old_state  8 due_ms  9 holds_lock  10 lock_ttl_ms  11 waiting  12 terminal
#       13 open_member  14 desired_op (set|del|'')  15 feature  16 now_ms  17 cmds_ttl_ms
#       18 index_entry  19 n_index_leave
#       20 n_cmds, then (command_id, info) pairs, then n_events and event quads
COMMIT = """
local id = ARGV[1]
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[2] then return {'conflict', 'version'} end
local holder = redis.call('GET', KEYS[7]) or ''
if holder ~= ARGV[3] then return {'conflict', 'lock'} end
if (redis.call('HGET', KEYS[6], 'rev') or '0') ~= ARGV[4] then return {'conflict', 'twin'} end
local version = tonumber(ARGV[2]) + 1
redis.call('HSET', KEYS[1], 'doc', ARGV[5], 'version', version, 'state', ARGV[6],
           'due_ms', ARGV[8])
if ARGV[7] ~= ARGV[6] then
  redis.call('HINCRBY', KEYS[5], ARGV[7], -1)
  redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
end
if ARGV[8] ~= '' then redis.call('ZADD', KEYS[2], ARGV[8], id)
else redis.call('ZREM', KEYS[2], id) end
redis.call('ZREM', KEYS[3], id)
local wake = false
if ARGV[9] == '1' then redis.call('SET', KEYS[7], id, 'PX', ARGV[10])
elseif holder == id then redis.call('DEL', KEYS[7]); wake = true end
if ARGV[11] == '1' then redis.call('SADD', KEYS[8], id) else redis.call('SREM', KEYS[8], id) end
if wake then
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[8])) do
    redis.call('ZADD', KEYS[2], 'LT', ARGV[16], m)
  end
end
if ARGV[12] == '1' then
  redis.call('SREM', KEYS[10], ARGV[13])
  if ARGV[14] == 'set' then redis.call('HSET', KEYS[11], ARGV[15], 'active')
  elseif ARGV[14] == 'del' then redis.call('HDEL', KEYS[11], ARGV[15]) end
end
local leave = 11 + tonumber(ARGV[19])
for k = 12, #KEYS do
  if k <= leave then redis.call('ZREM', KEYS[k], ARGV[18])
  else redis.call('ZADD', KEYS[k], 0, ARGV[18]) end
end
local n = tonumber(ARGV[20])
local i = 21
for _ = 1, n do
  redis.call('HSET', KEYS[9], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if n > 0 then redis.call('PEXPIRE', KEYS[9], ARGV[17]) end
local m = tonumber(ARGV[i])
for _ = 1, m do
  redis.call('XADD', KEYS[4], '*', 'event_id', ARGV[i + 1], 'type', ARGV[i + 2],
             'at', ARGV[i + 3], 'data', ARGV[i + 4])
  i = i + 4
end
return {'ok', tostring(version)}
"""

# One page of the activation list (``listing.plan`` says what ARGV holds).
# KEYS: one list index, or two an entry must both be in
# ARGV: 1 page_from  2 page_to (ZRANGEBYLEX bounds in reading order)  3 limit
#       4 reverse (1|0)  5 count_min  6 count_max (the whole filtered range)
# Returns {next_after ('' on the last page), total, entry...}.
# Two sets: the one with fewer entries in the range is walked, in chunks, and each
# entry looked up in the other (ZSCORE, O(1)); one set: a plain range and ZLEXCOUNT.
LIST = """
local reverse = ARGV[4] == '1'
local limit = tonumber(ARGV[3])
local function range(key, from, to, n, rev)
  if rev then return redis.call('ZREVRANGEBYLEX', key, from, to, 'LIMIT', 0, n) end
  return redis.call('ZRANGEBYLEX', key, from, to, 'LIMIT', 0, n)
end
local function finish(page, total)
  local after = ''
  if #page > limit then page[#page] = nil; after = page[limit] end
  local out = {after, total}
  for _, m in ipairs(page) do out[#out + 1] = m end
  return out
end
if #KEYS == 1 then
  local page = range(KEYS[1], ARGV[1], ARGV[2], limit + 1, reverse)
  return finish(page, redis.call('ZLEXCOUNT', KEYS[1], ARGV[5], ARGV[6]))
end
local walk, other = KEYS[1], KEYS[2]
if redis.call('ZLEXCOUNT', other, ARGV[5], ARGV[6])
    < redis.call('ZLEXCOUNT', walk, ARGV[5], ARGV[6]) then
  walk, other = other, walk
end
-- calls keep(entry) on each entry of walk in both sets, from..to, until it says stop
local function each(from, to, rev, keep)
  while true do
    local chunk = range(walk, from, to, 256, rev)
    for _, m in ipairs(chunk) do
      if redis.call('ZSCORE', other, m) and keep(m) then return end
    end
    if #chunk < 256 then return end
    from = '(' .. chunk[#chunk]
  end
end
local total = 0
each(ARGV[5], ARGV[6], false, function() total = total + 1; return false end)
local page = {}
each(ARGV[1], ARGV[2], reverse, function(m)
  page[#page + 1] = m
  return #page > limit
end)
return finish(page, total)
"""

# Put an activation in exactly the list indexes it belongs in (one stored before they
# existed, or changed by a worker that did not keep them), unless it changed since it
# was read (then it is read again).
# KEYS: act, then the indexes it belongs in, then every other one it could be in
# ARGV: version_read index_entry n_belongs
REINDEX = """
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
local last = 1 + tonumber(ARGV[3])
for k = 2, #KEYS do
  if k <= last then redis.call('ZADD', KEYS[k], 0, ARGV[2])
  else redis.call('ZREM', KEYS[k], ARGV[2]) end
end
return 1
"""

# KEYS: timers leases   ARGV: now_ms lease_until_ms limit
CLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('ZADD', KEYS[1], 'LT', ARGV[1], m)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], ARGV[2], m)
end
return due
"""

# A lease held by one worker at a time (the gauge exporter, so that a sum over workers
# is right; a shard's events forwarder, so that its events keep their order): acquire
# it, or renew it if this worker holds it.
# KEYS: the lease   ARGV: worker_id lease_ms   Returns 1 when this worker holds it.
LEASE_HOLD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: the lease   ARGV: worker_id   (a clean stop hands the lease over at once)
LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Cluster mode: the forwarder copied a shard's outbox up to ARGV[2] into the events
# stream; move the cursor there and drop what is copied, unless another forwarder
# moved the cursor meanwhile (a lease that lapsed): then nothing, and it reads again.
# KEYS: forwarded outbox   ARGV: cursor_read new_cursor trim_minid
FORWARDED = """
if (redis.call('GET', KEYS[1]) or '0-0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
return 1
"""

# A live query's command, indexed so that whichever worker gets the answer knows which
# worker waits for it (a script so that it goes in the auto-pipeline: 200 queries at
# once take a few connections, not 200).
# KEYS: cmds   ARGV: command_id info ttl_ms
REGISTER = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: act timers leases   ARGV: id lease_until_ms retry_ms
RELEASE = """
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], 'LT', ARGV[3], ARGV[1])
  return 1
end
local due = redis.call('HGET', KEYS[1], 'due_ms')
if due and due ~= '' then redis.call('ZADD', KEYS[2], 'LT', due, ARGV[1]) end
return 1
"""

# The twin update shared by TWIN and RESPOND, as a Lua function of K (twin waiting
# timers outbox) and A:
#   1 kind (state|presence|response)  2 state_json ('' none)  3 seq  4 vehicle_ms
#   5 recv_ms  6 presence_json  7 online (1|0)  8 rtt_ms ('' none)
#   9 event_id  10 event_at  11 event_data  12 state_ms (the state's own time)
# Vehicle times arrive clamped to at most the receive time (gateway/intake.py).
# A state replaces the stored one when its ``seq`` is higher OR its time is newer: the
# counter of a rebooted vehicle may start again, and a bogus huge ``seq`` must not
# freeze the twin; a replayed or reordered older state has neither.
# Returns (changed, state_changed); a change bumps ``rev`` and wakes the waiters.
_UPDATE_TWIN = """
local function update_twin(K, A)
  local changed = false
  local state_changed = false
  redis.call('HSET', K[1], 'seen_ms', A[5])
  if A[2] ~= '' then
    local cur = redis.call('HMGET', K[1], 'seq', 'state_ms')
    if not cur[1] or tonumber(A[3]) > tonumber(cur[1])
        or tonumber(A[12]) > tonumber(cur[2] or '0') then
      redis.call('HSET', K[1], 'state', A[2], 'seq', A[3], 'state_ms', A[12])
      changed = true
      state_changed = true
    end
  end
  if A[1] == 'presence' then
    local cur = redis.call('HGET', K[1], 'presence_ms')
    if not cur or tonumber(A[4]) >= tonumber(cur) then
      local was = redis.call('HGET', K[1], 'online')
      redis.call('HSET', K[1], 'presence', A[6], 'presence_ms', A[4], 'online', A[7])
      changed = true
      if was ~= A[7] then
        redis.call('XADD', K[4], '*', 'event_id', A[9], 'type', 'vehicle.presence',
                   'at', A[10], 'data', A[11])
      end
    end
  elseif A[1] == 'response' then
    local cur = tonumber(redis.call('HGET', K[1], 'response_ms') or '0')
    if tonumber(A[4]) > cur then
      redis.call('HSET', K[1], 'response_ms', A[4])
      changed = true
    end
  end
  if A[8] ~= '' then
    local rtt = tonumber(A[8])
    redis.call('HINCRBY', K[1], 'rtt_count', 1)
    redis.call('HINCRBYFLOAT', K[1], 'rtt_sum_ms', rtt)
    redis.call('HSET', K[1], 'rtt_last_ms', A[8])
    if rtt > tonumber(redis.call('HGET', K[1], 'rtt_max_ms') or '0') then
      redis.call('HSET', K[1], 'rtt_max_ms', A[8])
    end
  end
  -- an answer to one of our commands is fresh when it arrives, whatever the vehicle clock
  local fresh = tonumber(A[5])
  if A[1] ~= 'response' then fresh = math.min(tonumber(A[4]), fresh) end
  if fresh > tonumber(redis.call('HGET', K[1], 'fresh_ms') or '0') then
    redis.call('HSET', K[1], 'fresh_ms', fresh)
    changed = true
  end
  if changed then
    redis.call('HINCRBY', K[1], 'rev', 1)
    for _, m in ipairs(redis.call('SMEMBERS', K[2])) do
      redis.call('ZADD', K[3], 'LT', A[5], m)
    end
  end
  return changed, state_changed
end
"""

# KEYS: twin waiting timers outbox   ARGV: as A of update_twin
TWIN = (
    _UPDATE_TWIN
    + """
local changed, state_changed = update_twin(KEYS, ARGV)
return {changed and 1 or 0, state_changed and 1 or 0}
"""
)

# A vehicle's answer to one of our commands, in one round trip: match the command_id
# (the index is per vehicle), store what the answer says in the twin (RTT from the
# indexed send time), and load the activation it belongs to, as ``LOAD`` would.
# KEYS: cmds twin waiting timers outbox
# ARGV: 1 command_id  2 the shard's key base  3 state_json ('' none)  4 seq  5 vehicle_ms  6 recv_ms
#       7 recv_exact_ms (fractional)  8 state_ms
# Returns false (unknown command), {info, state_changed} (a live query, or its
# activation is gone) or {info, state_changed, doc, version, lock_holder, twin_flat}.
# ``state_changed``: the answer's state became the twin's (it is the newest known).
RESPOND = (
    _UPDATE_TWIN
    + """
local info = redis.call('HGET', KEYS[1], ARGV[1])
if not info then return false end
local cmd = cjson.decode(info)
local rtt = math.max(0, tonumber(ARGV[7]) - tonumber(cmd['sent_ms']))
local _, state_changed = update_twin(
  {KEYS[2], KEYS[3], KEYS[4], KEYS[5]},
  {'response', ARGV[3], ARGV[4], ARGV[5], ARGV[6], '', '0',
   string.format('%.3f', rtt), '', '', '', ARGV[8]})
local newest = state_changed and 1 or 0
if cmd['act'] == '' then return {info, newest} end
local a = redis.call('HMGET', ARGV[2] .. ':act:' .. cmd['act'], 'doc', 'version', 'vin')
if not a[1] then return {info, newest} end
local lock = redis.call('GET', ARGV[2] .. ':lock:' .. a[3]) or ''
return {info, newest, a[1], a[2], lock, redis.call('HGETALL', KEYS[2])}
"""
)
