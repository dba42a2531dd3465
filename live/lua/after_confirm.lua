-- Confirm: a shipped order is completed, by its buyer or by the deadline (auto-confirm).
-- The deadline waits while an after-sales case is open: it is pushed back by the auto-confirm
-- time, so the buyer never loses a case to the clock.
-- KEYS[1] orders, KEYS[2] cases, KEYS[3] after-sales due zset, KEYS[4] after-sales stream
-- ARGV[1] order id, ARGV[2] buyer id ('' : the deadline), ARGV[3] now ms, ARGV[4] auto-confirm ms
-- Returns {code, order_json}: OK, NOT_FOUND, FORBIDDEN, STATE (not shipped), NOT_DUE, HELD.
local member = 'o:' .. ARGV[1]
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  redis.call('ZREM', KEYS[3], member)
  return {'NOT_FOUND', ''}
end
local o = cjson.decode(raw)
if ARGV[2] ~= '' and o.u ~= ARGV[2] then return {'FORBIDDEN', ''} end
if o.s ~= 'shipped' then
  if ARGV[2] == '' then redis.call('ZREM', KEYS[3], member) end
  return {'STATE', raw}
end
local now = tonumber(ARGV[3])
if ARGV[2] == '' then
  local due = redis.call('ZSCORE', KEYS[3], member)
  if not due or tonumber(due) > now then return {'NOT_DUE', raw} end
  if o.as then
    local c = redis.call('HGET', KEYS[2], o.as)
    if c and OPEN[cjson.decode(c).s] then
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), member)
      return {'HELD', raw}
    end
  end
end
redis.call('ZREM', KEYS[3], member)
o.s = 'completed'
o.cp = now
return {'OK', save_order(KEYS[1], KEYS[4], o)}
