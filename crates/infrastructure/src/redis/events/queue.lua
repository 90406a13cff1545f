-- The event queue consumer of ADR 0017: every call is one atomic step on one partition.
--
-- KEYS: 1 the partition's queue (`sba:{ev:<p>}:q`), 2 its lease, 3 its dead letters.
-- ARGV[1] names the operation: fetch | release | ack | dead | list | replay (below).
local queue, lease, dl = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]

-- fetch group consumer ttl_ms idle_ms count: renews the lease, or takes it when it is free
-- (never taken, released or lapsed); {'LEASED'} when another consumer holds it. Then claims entries pending longer
-- than idle_ms and reads new ones, up to count: {'OK', {id, deliveries, {field, value, ...}}, ...}.
if op == 'fetch' then
  local group, consumer, ttl, idle, count = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
  local owner = redis.call('GET', lease)
  if owner == consumer then
    redis.call('PEXPIRE', lease, ttl)
  elseif owner == false then
    redis.call('SET', lease, consumer, 'PX', ttl)
  else
    return {'LEASED'}
  end
  local out = {'OK'}
  if count <= 0 then
    return out
  end
  local created = pcall(redis.call, 'XGROUP', 'CREATE', queue, group, '0', 'MKSTREAM')
  if not created then
    -- BUSYGROUP: it exists. A pending entry of a dead or stalled consumer comes first.
    local claimed = redis.call('XAUTOCLAIM', queue, group, consumer, idle, '0-0', 'COUNT', count)[2]
    for _, entry in ipairs(claimed) do
      local pending = redis.call('XPENDING', queue, group, entry[1], entry[1], 1)
      local deliveries = 1
      if pending[1] then
        deliveries = pending[1][4]
      end
      out[#out + 1] = {entry[1], deliveries, entry[2]}
    end
    count = count - #claimed
  end
  if count > 0 then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', queue, '>')
    if read then
      for _, entry in ipairs(read[1][2]) do
        out[#out + 1] = {entry[1], 1, entry[2]}
      end
    end
  end
  return out
end

-- release consumer: drops the lease when the consumer holds it.
if op == 'release' then
  if redis.call('GET', lease) == ARGV[2] then
    redis.call('DEL', lease)
  end
  return {'OK'}
end

-- ack group id...: acknowledges entries.
if op == 'ack' then
  return {'OK', redis.call('XACK', queue, ARGV[2], unpack(ARGV, 3))}
end

-- dead group id reason attempts: copies the entry to the dead letters with queue_id, reason
-- and attempts, then acknowledges it; {'GONE'} when the queue no longer holds it.
if op == 'dead' then
  local group, id = ARGV[2], ARGV[3]
  local found = redis.call('XRANGE', queue, id, id)
  if not found[1] then
    return {'GONE'}
  end
  local fields = found[1][2]
  fields[#fields + 1] = 'queue_id'
  fields[#fields + 1] = id
  fields[#fields + 1] = 'reason'
  fields[#fields + 1] = ARGV[4]
  fields[#fields + 1] = 'attempts'
  fields[#fields + 1] = ARGV[5]
  redis.call('XADD', dl, '*', unpack(fields))
  redis.call('XACK', queue, group, id)
  return {'OK'}
end

-- list count: the oldest dead letters, {{id, {field, value, ...}}, ...}.
if op == 'list' then
  return redis.call('XRANGE', dl, '-', '+', 'COUNT', ARGV[2])
end

-- replay run: appends the dead letters (of run only, unless it is '') to the queue as new
-- entries in their order, without queue_id, reason and attempts, and deletes them.
if op == 'replay' then
  local run, replayed = ARGV[2], 0
  for _, entry in ipairs(redis.call('XRANGE', dl, '-', '+')) do
    local fields, original, entry_run = entry[2], {}, nil
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name == 'run' then
        entry_run = fields[i + 1]
      end
      if name ~= 'queue_id' and name ~= 'reason' and name ~= 'attempts' then
        original[#original + 1] = name
        original[#original + 1] = fields[i + 1]
      end
    end
    if run == '' or entry_run == run then
      redis.call('XADD', queue, '*', unpack(original))
      redis.call('XDEL', dl, entry[1])
      replayed = replayed + 1
    end
  end
  return {'OK', replayed}
end

return redis.error_reply('unknown operation ' .. tostring(op))
