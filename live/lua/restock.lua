-- Restock: add units to a card (a sold-out card goes back on sale).
-- KEYS[1] card state hash, KEYS[2] events stream
-- ARGV[1] units to add (>= 1)
-- Returns {code, left, stock, status}; code is OK, NOT_FOUND, FENCED (card under rebuild) or CLOSED.
if redis.call('HEXISTS', KEYS[1], 'fence') == 1 then return {'FENCED', 0, 0, ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'NOT_FOUND', 0, 0, ''} end
if status == 'closed' then return {'CLOSED', 0, 0, status} end
local add = tonumber(ARGV[1])
local stock = redis.call('HINCRBY', KEYS[1], 'stock', add)
local left = redis.call('HINCRBY', KEYS[1], 'left', add)
if status == 'sold_out' then
  status = 'on_sale'
  redis.call('HSET', KEYS[1], 'status', status)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '*', 't', 'stock', 'stock', stock, 'seq', seq)
return {'OK', left, stock, status}
