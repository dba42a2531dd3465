-- Buy: take qty units of a card for a user, atomically, or say why not.
-- KEYS[1] card state hash   (status, stock, left, limit, price, starts_ms, ends_ms, room)
-- KEYS[2] bought hash       (user -> units held in orders not cancelled/expired)
-- KEYS[3] requests hash     ("user:request_id" -> order id)
-- KEYS[4] orders hash       (order id -> JSON order)
-- KEYS[5] deadlines zset    (order id -> pay_by ms, orders awaiting payment)
-- KEYS[6] events stream     (order events for the SQL persister)
-- ARGV[1] user id, ARGV[2] qty, ARGV[3] request id, ARGV[4] new order id,
-- ARGV[5] now (ms), ARGV[6] pay_by (ms)
-- Returns {code, order_json_or_empty, left}; code is OK (new order), DUP (the same request was
-- already accepted: its order is returned), RETRY (order id collision: pick another), NOT_FOUND, NOT_ON_SALE, SOLD_OUT, LIMIT_EXCEEDED.
-- Checks come before any write: nothing is decremented and then checked.
local st = redis.call('HMGET', KEYS[1], 'status', 'left', 'limit', 'starts_ms', 'ends_ms', 'price')
if not st[1] then return {'NOT_FOUND', '', 0} end
local left = tonumber(st[2])
local rkey = ARGV[1] .. ':' .. ARGV[3]
local prior = redis.call('HGET', KEYS[3], rkey)
if prior then return {'DUP', redis.call('HGET', KEYS[4], prior) or '', left} end
local now = tonumber(ARGV[5])
local status = st[1]
if status == 'closed' then return {'NOT_ON_SALE', '', left} end
if now < tonumber(st[4]) then return {'NOT_ON_SALE', '', left} end
local ends = tonumber(st[5])
if ends > 0 and now >= ends then return {'NOT_ON_SALE', '', left} end
if status == 'sold_out' then return {'SOLD_OUT', '', left} end
local qty = tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 1 then return {'RETRY', '', left} end
local had = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if had + qty > tonumber(st[3]) then return {'LIMIT_EXCEEDED', '', left} end
if left < qty then return {'SOLD_OUT', '', left} end
left = redis.call('HINCRBY', KEYS[1], 'left', -qty)
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HSET', KEYS[3], rkey, ARGV[4])
local order = cjson.encode({id = ARGV[4], u = ARGV[1], q = qty, s = 'pending_payment', c = now,
                            p = tonumber(ARGV[6]), r = ARGV[3], a = qty * tonumber(st[6])})
redis.call('HSET', KEYS[4], ARGV[4], order)
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[4])
redis.call('XADD', KEYS[6], '*', 't', 'created', 'o', order)
if left == 0 then redis.call('HSET', KEYS[1], 'status', 'sold_out') end
return {'OK', order, left}
