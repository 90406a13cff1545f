-- GCRA decisions for a batch of keys, each line for line
-- `sba_domain::ratelimit::Gcra::decide` (ADR 0006); a batch of one is a single decision.
-- KEYS[i]: a rate-limit key; its value is the TAT in integer microseconds.
-- ARGV[4i-3 .. 4i]: interval_us, window_us, limit, cost of KEYS[i].
-- Returns, per key, {allowed 0|1, remaining, retry_after_us, reset_us}, flattened.
-- The whole batch runs atomically and every key is decided as if alone: keys never share
-- state, and a key named twice sees its first decision. A key is read once and written
-- once per batch (its TAT is carried in `tats` between its decisions), which is what makes
-- a batch of one hot key cheap.
-- Lua numbers are doubles: every value stays below 2^53 (now in microseconds is about
-- 1.8e15), so the arithmetic is exact; integer division uses math.floor, and numbers go
-- to Redis as numbers (Redis writes integral values exactly), never through tostring
-- (which rounds to 14 digits).

-- The server clock, so the clocks of the nodes never matter.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local out = {}
-- Per key named in the batch: its TAT so far, and the TTL of its last allowed decision
-- (nil while nothing was allowed: nothing to write).
local tats, ttls = {}, {}

for i = 1, #KEYS do
  local a = (i - 1) * 4
  local interval = tonumber(ARGV[a + 1])
  local window = tonumber(ARGV[a + 2])
  local limit = tonumber(ARGV[a + 3])
  local cost = tonumber(ARGV[a + 4])

  local key = KEYS[i]
  local tat = tats[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key)) or now
  end
  if tat < now then
    tat = now
  end
  local reset_now = tat - now

  if cost > limit then
    out[a + 1], out[a + 2], out[a + 3], out[a + 4] = 0, 0, window, reset_now
  else
    local new_tat = tat + interval * cost
    -- Gcra::decide saturates at 0 here; a negative value compares the same against now.
    local allow_at = new_tat - window
    if now < allow_at then
      -- A denial writes nothing: denied requests consume nothing.
      out[a + 1], out[a + 2], out[a + 3], out[a + 4] = 0, 0, allow_at - now, reset_now
    else
      local used = new_tat - now
      local remaining = math.floor((window - used) / interval)
      if remaining > limit then
        remaining = limit
      end
      tats[key], ttls[key] = new_tat, used
      out[a + 1], out[a + 2], out[a + 3], out[a + 4] = 1, remaining, 0, used
    end
  end
  if tats[key] == nil then
    tats[key] = tat
  end
end

-- The key lives until the quota is whole again; an expired key is a fresh one.
for key, used in pairs(ttls) do
  redis.call('SET', key, tats[key], 'PX', math.max(math.floor((used + 999) / 1000), 1))
end

return out
