-- One GCRA decision, line for line `sba_domain::ratelimit::Gcra::decide` (ADR 0006).
-- KEYS[1]: the rate-limit key; its value is the TAT in integer microseconds.
-- ARGV: interval_us, window_us, limit, cost.
-- Returns {allowed 0|1, remaining, retry_after_us, reset_us}.
-- Lua numbers are doubles: every value stays below 2^53 (a day in microseconds after the
-- epoch is about 1.8e15), so the arithmetic is exact; integer division uses math.floor and
-- numbers go back to Redis through string.format('%d'), never tostring (which rounds to 14
-- digits).
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])

-- The server clock, so the clocks of the nodes never matter.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local tat = now
local stored = tonumber(redis.call('GET', KEYS[1]))
if stored and stored > now then
  tat = stored
end
local reset_now = tat - now

if cost > limit then
  return {0, 0, window, reset_now}
end

local new_tat = tat + interval * cost
-- Gcra::decide saturates at 0 here; a negative value compares the same against now >= 0.
local allow_at = new_tat - window
if now < allow_at then
  -- A denial writes nothing: denied requests consume nothing.
  return {0, 0, allow_at - now, reset_now}
end

local used = new_tat - now
local remaining = math.floor((window - used) / interval)
if remaining > limit then
  remaining = limit
end
-- The key lives until the quota is whole again; an expired key is a fresh one.
local ttl_ms = math.max(math.floor((used + 999) / 1000), 1)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, remaining, 0, used}
