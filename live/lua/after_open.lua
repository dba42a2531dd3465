-- Open an after-sales case on an order: its buyer, on a paid, shipped or completed order
-- (completed: within the after-sales window). One open case per order.
-- KEYS[1] orders, KEYS[2] cases, KEYS[3] after-sales due zset, KEYS[4] after-sales stream
-- ARGV[1] order id, ARGV[2] buyer id, ARGV[3] kind, ARGV[4] reason, ARGV[5] amount cents
-- ('' : what was paid and not yet refunded), ARGV[6] now ms, ARGV[7] reply ms,
-- ARGV[8] window ms, ARGV[9] the card's streamer id
-- Returns {code, case_json, order_json}: OK, NOT_FOUND, FORBIDDEN, STATE (order not in a
-- state that allows it), WINDOW (window closed), OPEN (a case is open), AMOUNT (too much),
-- KIND (return and refund on an order that never shipped).
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'NOT_FOUND', '', ''} end
local o = cjson.decode(raw)
if o.u ~= ARGV[2] then return {'FORBIDDEN', '', ''} end
if o.as then
  local prior = redis.call('HGET', KEYS[2], o.as)
  if prior and OPEN[cjson.decode(prior).s] then return {'OPEN', prior, raw} end
end
if o.s ~= 'paid' and o.s ~= 'shipped' and o.s ~= 'completed' then return {'STATE', '', raw} end
local now = tonumber(ARGV[6])
if o.s == 'completed' and now > tonumber(o.cp) + tonumber(ARGV[8]) then return {'WINDOW', '', raw} end
if ARGV[3] == 'return_refund' and o.s == 'paid' then return {'KIND', '', raw} end
local paid = (o.pa or o.a) - (o.ra or 0)
local amount = paid
if ARGV[5] ~= '' then amount = tonumber(ARGV[5]) end
if amount > paid or amount <= 0 then return {'AMOUNT', '', raw} end
o.nc = (o.nc or 0) + 1
local c = {id = o.id .. '-c' .. o.nc, o = o.id, u = o.u, st = ARGV[9], k = ARGV[3], r = ARGV[4],
           a = amount, c = now, d = now + tonumber(ARGV[7]), h = {}}
history(c, 'requested', o.u, now, ARGV[4])
o.as = c.id
redis.call('ZADD', KEYS[3], c.d, 'c:' .. c.id)
return {'OK', save_case(KEYS[2], KEYS[4], c), save_order(KEYS[1], KEYS[4], o)}
