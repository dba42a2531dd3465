-- Release: an order awaiting payment is cancelled (by its buyer) or expires (past pay_by);
-- its units go back to the card.
-- KEYS[1] card state hash, KEYS[2] bought hash, KEYS[3] orders hash, KEYS[4] deadlines zset,
-- KEYS[5] events stream
-- ARGV[1] order id, ARGV[2] new status ('cancelled' | 'expired'), ARGV[3] now (ms),
-- ARGV[4] user id that must own the order ('' for the expiry sweeper)
-- Returns {code, order_json, left, new_card_status}; the last is 'on_sale' when a sold-out
-- card went back on sale, else ''. code is OK, NOT_FOUND, FORBIDDEN, FENCED (card under
-- rebuild), STATE (not awaiting payment: the order as it is), NOT_DUE (expiry before pay_by).
if redis.call('HEXISTS', KEYS[1], 'fence') == 1 then return {'FENCED', '', 0, ''} end
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return {'NOT_FOUND', '', 0, ''} end
local o = cjson.decode(raw)
if ARGV[4] ~= '' and o.u ~= ARGV[4] then return {'FORBIDDEN', '', 0, ''} end
if o.s ~= 'pending_payment' then return {'STATE', raw, 0, ''} end
local now = tonumber(ARGV[3])
if ARGV[2] == 'expired' and now < tonumber(o.p) then return {'NOT_DUE', raw, 0, ''} end
o.s = ARGV[2]
local order = cjson.encode(o)
redis.call('HSET', KEYS[3], ARGV[1], order)
redis.call('ZREM', KEYS[4], ARGV[1])
local left = redis.call('HINCRBY', KEYS[1], 'left', o.q)
if redis.call('HINCRBY', KEYS[2], o.u, -o.q) <= 0 then redis.call('HDEL', KEYS[2], o.u) end
local changed = ''
if redis.call('HGET', KEYS[1], 'status') == 'sold_out' and left > 0 then
  changed = 'on_sale'
  redis.call('HSET', KEYS[1], 'status', changed)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[5], '*', 't', 'status', 'id', ARGV[1], 's', ARGV[2], 'at', ARGV[3], 'seq', seq)
return {'OK', order, left, changed}
