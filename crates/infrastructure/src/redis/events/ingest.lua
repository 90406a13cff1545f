-- The event sequencer of ADR 0017: every call is one atomic step on the keys of one run.
--
-- KEYS: 1 the run hash (seq, status, terminal), 2 its producer ids (id -> seq), 3 its
-- history stream, 4 its partition's queue. A history entry holds one call's events: its id
-- is `<last seq>-1` and it has one field `event` per event, in seq order (one XADD per
-- batch, not per event: the per-call cost of XADD was most of the script's).
-- ARGV[1] names the operation: append | server | seed | ids | read | status (below).
--
-- Event bodies come from the adapter as JSON objects without `seq`; the script splices the
-- seq in as text. (cjson would re-encode them: `[]` becomes `{}` and numbers are rounded.)
local run, ids, hist, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]

local function with_seq(seq, body)
  return '{"seq":' .. seq .. ',' .. string.sub(body, 2)
end

-- Appends events (already spliced, `fields` = {'event', json, 'event', json, ...}) whose last
-- seq is `last`, keeping at least the `maxlen` newest events: an entry is evicted only once
-- its last event is more than `maxlen` behind (MINID, approximate, so whole nodes go).
local function record(last, fields, maxlen)
  local min = last - tonumber(maxlen) + 1
  if min < 1 then
    min = 1
  end
  redis.call('XADD', hist, 'MINID', '~', min .. '-0', last .. '-1', unpack(fields))
end

local function enqueue(tenant, run_id, first, last, events)
  redis.call('XADD', queue, '*', 'tenant', tenant, 'run', run_id, 'first_seq', first, 'last_seq', last,
    'events', '[' .. table.concat(events, ',') .. ']')
end

local function expire_run(ttl)
  redis.call('EXPIRE', run, ttl)
  redis.call('EXPIRE', ids, ttl)
  redis.call('EXPIRE', hist, ttl)
end

-- append tenant run_id expected new_status new_terminal maxlen ttl n {producer_id body}*n
-- -> {'NEEDS_SEED'} | {'TERMINAL', status} | {'CONFLICT', status}
--    | {'OK', status, seq_1, duplicate_1, ..., seq_n, duplicate_n}
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
    pids[i] = ARGV[8 + 2 * i]
  end
  local stored = redis.call('HMGET', ids, unpack(pids))
  local all_seen = true
  for i = 1, n do
    if not stored[i] then
      all_seen = false
    end
  end
  -- A retry of a batch that was recorded: its seqs, whatever happened to the run since.
  if all_seen then
    local reply = {'OK', status}
    for i = 1, n do
      reply[#reply + 1] = tonumber(stored[i])
      reply[#reply + 1] = 1
    end
    return reply
  end
  if state[3] == '1' then
    return {'TERMINAL', status}
  end
  if expected ~= '' and status ~= expected then
    return {'CONFLICT', status}
  end
  local reply = {'OK', ''}
  local first = seq + 1
  local assigned, id_fields, queued, fields = {}, {}, {}, {}
  for i = 1, n do
    local pid = pids[i]
    local old = stored[i] or assigned[pid]
    if old then
      reply[#reply + 1] = tonumber(old)
      reply[#reply + 1] = 1
    else
      seq = seq + 1
      assigned[pid] = seq
      id_fields[#id_fields + 1] = pid
      id_fields[#id_fields + 1] = seq
      local json = with_seq(seq, ARGV[9 + 2 * i])
      queued[#queued + 1] = json
      fields[#fields + 1] = 'event'
      fields[#fields + 1] = json
      reply[#reply + 1] = seq
      reply[#reply + 1] = 0
    end
  end
  redis.call('HSET', ids, unpack(id_fields))
  record(seq, fields, maxlen)
  if new_status ~= '' then
    status = new_status
  end
  redis.call('HSET', run, 'seq', seq, 'status', status, 'terminal', new_terminal)
  if new_terminal == '1' then
    expire_run(ttl)
  end
  enqueue(tenant, run_id, first, seq, queued)
  reply[2] = status
  return reply
end

-- server tenant run_id kind body maxlen ttl
-- -> {'NEEDS_SEED'} | {'TERMINAL', status} | {'CONFLICT', status} | {'OK', status, seq}
-- kind is run.created, run.cancelled, or `expired`: the run ends without an event (no seq
-- is taken, the answer's seq is the last one; body is empty).
if op == 'server' then
  local tenant, run_id, kind, body, maxlen, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
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
  local json = with_seq(seq, body)
  record(seq, {'event', json}, maxlen)
  redis.call('HSET', run, 'seq', seq, 'status', status, 'terminal', terminal)
  if terminal == '1' then
    expire_run(ttl)
  end
  enqueue(tenant, run_id, seq, seq, {json})
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

-- read after count -> {event_json, ...}: at most `count` events with a seq above `after`, in
-- order. Entries are keyed by their last seq, so the first one read may start at or before
-- `after`; those events are skipped.
if op == 'read' then
  local after, count = tonumber(ARGV[2]), tonumber(ARGV[3])
  local entries = redis.call('XRANGE', hist, (after + 1) .. '-0', '+', 'COUNT', count)
  local out = {}
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    for i = 2, #fields, 2 do
      local json = fields[i]
      if tonumber(string.match(json, '^{"seq":(%d+),')) > after then
        out[#out + 1] = json
        if #out == count then
          return out
        end
      end
    end
  end
  return out
end

return redis.error_reply('unknown operation ' .. tostring(op))
