-- Ship: a paid order gets its shipment and waits for the buyer's confirmation, which comes
-- by itself at the auto-confirm time. Not while an after-sales case is open on it (the buyer
-- asked for the money back before it left).
-- KEYS[1] orders, KEYS[2] cases, KEYS[3] after-sales due zset, KEYS[4] after-sales stream
-- ARGV[1] order id, ARGV[2] carrier, ARGV[3] tracking no, ARGV[4] now ms, ARGV[5] auto-confirm ms
-- Returns {code, order_json}: OK, NOT_FOUND, STATE (not paid), CASE (a case is open).
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'NOT_FOUND', ''} end
local o = cjson.decode(raw)
if o.s ~= 'paid' then return {'STATE', raw} end
if o.as then
  local c = redis.call('HGET', KEYS[2], o.as)
  if c and OPEN[cjson.decode(c).s] then return {'CASE', raw} end
end
local now = tonumber(ARGV[4])
o.s = 'shipped'
o.sh = {c = ARGV[2], t = ARGV[3], at = now}
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), 'o:' .. o.id)
return {'OK', save_order(KEYS[1], KEYS[4], o)}
