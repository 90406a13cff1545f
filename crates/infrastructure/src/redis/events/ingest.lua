-- The event sequencer of ADR 0017: every call is one atomic step on the keys of one run.
--
-- KEYS: 1 the run hash (seq, status, terminal), 2 its producer ids (id -> seq), 3 its
-- history stream, 4 its partition's queue.
-- ARGV[1] names the operation: append | server | seed | ids | read | status (below).
--
-- Events travel as one JSON array per call (`events`), its elements the events without
-- their seq: the i-th has seq `first + i - 1`. The script never splits, joins or re-encodes
-- it: Redis hashes every byte of every string a script creates, and per-event strings made
-- that most of the script's cost. A history entry and a queue entry each hold one call's
-- array: history entry id `<last seq>-1`, fields `first` and `events`; queue entry fields
-- `tenant`, `run`, `first_seq`, `last_seq`, `events`, and `traceparent` when the call was
-- traced (the W3C trace context of the ingest, which the worker's span links to).
local run, ids, hist, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]

-- Appends the events `first`..`last`, keeping at least the `maxlen` newest events: an entry
-- is evicted only once its last event is more than `maxlen` behind (MINID, approximate, so
-- whole stream nodes go).
local function record(first, last, events, maxlen)
  local min = last - tonumber(maxlen) + 1
  if min < 1 then
    min = 1
  end
  redis.call('XADD', hist, 'MINID', '~', min .. '-0', last .. '-1', 'first', first, 'events', events)
end

local function enqueue(tenant, run_id, first, last, events, traceparent)
  if traceparent and traceparent ~= '' then
    redis.call('XADD', queue, '*', 'tenant', tenant, 'run', run_id, 'first_seq', first, 'last_seq', last,
      'events', events, 'traceparent', traceparent)
  else
    redis.call('XADD', queue, '*', 'tenant', tenant, 'run', run_id, 'first_seq', first, 'last_seq', last,
      'events', events)
  end
end

local function expire_run(ttl)
  redis.call('EXPIRE', run, ttl)
  redis.call('EXPIRE', ids, ttl)
  redis.call('EXPIRE', hist, ttl)
end

-- append tenant run_id expected new_status new_terminal maxlen ttl n {producer_id}*n events
--   [traceparent]
-- (the n producer ids are distinct; `events` is the JSON array of their n events)
-- -> {'NEEDS_SEED'} | {'TERMINAL', status} | {'CONFLICT', status}
--    | {'KNOWN', status, seq_1, ..., seq_n}: every id was recorded before (a retry), nothing
--      written, whatever the run's state
--    | {'PARTIAL', seq_1 or 0, ..., seq_n or 0}: some ids were recorded before, nothing
--      written; the caller sends the others again
--    | {'OK', status, first}: the n events took seqs first .. first + n - 1
if op == 'append' then
  local tenant, run_id, expected, new_status, new_terminal = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local maxlen, ttl, n = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
  local state = redis.call('HMGET', run, 'seq', 'status', 'terminal')
  if not state[1] then
    return {'NEEDS_SEED'}
  end
  local seq, status = tonumber(state[1]), state[2]
  local pids = {}
  for i = 1, n do
    pids[i] = ARGV[9 + i]
  end
  local events, traceparent = ARGV[10 + n], ARGV[11 + n]
  local stored = redis.call('HMGET', ids, unpack(pids))
  local known = 0
  for i = 1, n do
    if stored[i] then
      known = known + 1
    end
  end
  -- A retry of a batch that was recorded: its seqs, whatever happened to the run since.
  if known == n then
    local reply = {'KNOWN', status}
    for i = 1, n do
      reply[#reply + 1] = tonumber(stored[i])
    end
    return reply
  end
  if state[3] == '1' then
    return {'TERMINAL', status}
  end
  if expected ~= '' and status ~= expected then
    return {'CONFLICT', status}
  end
  if known > 0 then
    local reply = {'PARTIAL'}
    for i = 1, n do
      reply[#reply + 1] = tonumber(stored[i] or 0)
    end
    return reply
  end
  local first, last = seq + 1, seq + n
  local id_fields = {}
  for i = 1, n do
    id_fields[#id_fields + 1] = pids[i]
    id_fields[#id_fields + 1] = seq + i
  end
  redis.call('HSET', ids, unpack(id_fields))
  record(first, last, events, maxlen)
  if new_status ~= '' then
    status = new_status
  end
  redis.call('HSET', run, 'seq', last, 'status', status, 'terminal', new_terminal)
  if new_terminal == '1' then
    expire_run(ttl)
  end
  enqueue(tenant, run_id, first, last, events, traceparent)
  return {'OK', status, first}
end

-- server tenant run_id kind events maxlen ttl [traceparent]
-- -> {'NEEDS_SEED'} | {'TERMINAL', status} | {'CONFLICT', status} | {'OK', status, seq}
-- kind is run.created, run.cancelled, or `expired`: the run ends without an event (no seq
-- is taken, the answer's seq is the last one; events is empty). Otherwise `events` is the
-- JSON array of the one event.
if op == 'server' then
  local tenant, run_id, kind, events, maxlen, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
  local state = redis.call('HMGET', run, 'seq', 'status', 'terminal')
  local seq, status, terminal
  if kind == 'run.created' then
    if state[1] then
      return {'CONFLICT', state[2]}
    end
    -- A history without a counter: the counter was lost, this run is not new.
    if redis.call('EXISTS', hist) == 1 then
      return {'NEEDS_SEED'}
    end
    seq, status, terminal = 1, 'queued', '0'
  else
    if not state[1] then
      return {'NEEDS_SEED'}
    end
    if state[3] == '1' then
      return {'TERMINAL', state[2]}
    end
    if kind == 'expired' then
      redis.call('HSET', run, 'status', 'expired', 'terminal', '1')
      expire_run(ttl)
      return {'OK', 'expired', tonumber(state[1])}
    end
    seq, status, terminal = tonumber(state[1]) + 1, 'cancelled', '1'
  end
  record(seq, seq, events, maxlen)
  redis.call('HSET', run, 'seq', seq, 'status', status, 'terminal', terminal)
  if terminal == '1' then
    expire_run(ttl)
  end
  enqueue(tenant, run_id, seq, seq, events, ARGV[8])
  return {'OK', status, seq}
end

-- ids id1 seq1 id2 seq2 ... -> {number of ids that were not known}
-- Producer ids stored before the run's state was lost; a known id keeps its seq.
if op == 'ids' then
  local added = 0
  for i = 2, #ARGV, 2 do
    added = added + redis.call('HSETNX', ids, ARGV[i], ARGV[i + 1])
  end
  return {added}
end

-- status -> {} (no counter) | {status}
if op == 'status' then
  local state = redis.call('HMGET', run, 'seq', 'status')
  if not state[1] then
    return {}
  end
  return {state[2]}
end

-- seed stored_max_seq status terminal ttl -> {'KEPT', seq} | {'SEEDED', seq}
-- The last id the history ever generated counts even when its entries were trimmed.
if op == 'seed' then
  local current = redis.call('HGET', run, 'seq')
  if current then
    return {'KEPT', tonumber(current)}
  end
  local seq, status, terminal, ttl = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
  if redis.call('EXISTS', hist) == 1 then
    local info = redis.call('XINFO', 'STREAM', hist)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local last = tonumber(string.match(info[i + 1], '^(%d+)-'))
        if last and last > seq then
          seq = last
        end
      end
    end
  end
  redis.call('HSET', run, 'seq', seq, 'status', status, 'terminal', terminal)
  if terminal == '1' then
    expire_run(ttl)
  end
  return {'SEEDED', seq}
end

-- read after count -> {first_1, events_1, first_2, events_2, ...}: the history entries that
-- hold the events after `after`, oldest first, until they hold `count` of them (the first
-- entry may start at or before `after`: the caller skips those events).
if op == 'read' then
  local after, count = tonumber(ARGV[2]), tonumber(ARGV[3])
  local out, held, start = {}, 0, (after + 1) .. '-0'
  while held < count do
    local entries = redis.call('XRANGE', hist, start, '+', 'COUNT', 16)
    if #entries == 0 then
      return out
    end
    for _, entry in ipairs(entries) do
      local last = tonumber(string.match(entry[1], '^(%d+)-'))
      local fields = entry[2]
      local first
      for i = 1, #fields, 2 do
        if fields[i] == 'first' then
          first = fields[i + 1]
        elseif fields[i] == 'events' then
          out[#out + 1] = tonumber(first)
          out[#out + 1] = fields[i + 1]
        end
      end
      local from = math.max(tonumber(first), after + 1)
      held = held + last - from + 1
      start = '(' .. entry[1]
      if held >= count then
        return out
      end
    end
  end
  return out
end

return redis.error_reply('unknown operation ' .. tostring(op))
