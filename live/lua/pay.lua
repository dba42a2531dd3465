-- Pay (simulated): an order awaiting payment becomes paid, unless its pay_by has passed.
-- A payment racing the expiry sweeper ends in exactly one outcome: both run atomically here.
-- KEYS[1] card state hash (fence, seq), KEYS[2] orders hash, KEYS[3] deadlines zset,
-- KEYS[4] events stream
-- ARGV[1] order id, ARGV[2] user id (owner), ARGV[3] now (ms)
-- Returns {code, order_json}; code is OK (paid now or already paid), NOT_FOUND, FORBIDDEN,
-- FENCED (card under rebuild), STATE (cancelled/expired), DUE (pay_by passed: the caller expires it).
if redis.call('HEXISTS', KEYS[1], 'fence') == 1 then return {'FENCED', ''} end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'NOT_FOUND', ''} end
local o = cjson.decode(raw)
if o.u ~= ARGV[2] then return {'FORBIDDEN', ''} end
if o.s == 'paid' then return {'OK', raw} end
if o.s ~= 'pending_payment' then return {'STATE', raw} end
if tonumber(ARGV[3]) >= tonumber(o.p) then return {'DUE', raw} end
o.s = 'paid'
local order = cjson.encode(o)
redis.call('HSET', KEYS[2], ARGV[1], order)
redis.call('ZREM', KEYS[3], ARGV[1])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[4], '*', 't', 'status', 'id', ARGV[1], 's', 'paid', 'at', ARGV[3], 'seq', seq)
return {'OK', order}
