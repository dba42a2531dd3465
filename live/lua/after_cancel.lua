-- Cancel a paid order before it ships: refunded in full at once and its units go back to the
-- card and to the buyer's limit. Racing a shipment, exactly one wins (same keys, one script).
-- (An order awaiting payment is cancelled by release.lua.)
-- KEYS[1] card state, KEYS[2] bought, KEYS[3] orders, KEYS[4] cases, KEYS[5] after-sales stream
-- ARGV[1] order id, ARGV[2] buyer id, ARGV[3] now ms
-- Returns {code, order_json, card_status}: OK, NOT_FOUND, FORBIDDEN, STATE (not paid),
-- CASE (an after-sales case is open: it decides).
if fenced(KEYS[1]) then return {'FENCED', '', ''} end
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return {'NOT_FOUND', '', ''} end
local o = cjson.decode(raw)
if o.u ~= ARGV[2] then return {'FORBIDDEN', '', ''} end
if o.s ~= 'paid' then return {'STATE', raw, ''} end
if o.as then
  local c = redis.call('HGET', KEYS[4], o.as)
  if c and OPEN[cjson.decode(c).s] then return {'CASE', raw, ''} end
end
o.pa = o.pa or o.a  -- paid before the payment amounts were kept
local changed = refund(KEYS[1], KEYS[2], o, o.pa - (o.ra or 0), tonumber(ARGV[3]))
return {'OK', save_order(KEYS[3], KEYS[5], o), changed}
