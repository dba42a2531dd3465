-- Restock: add units to a card (a sold-out card goes back on sale).
-- KEYS[1] card state hash, KEYS[2] events stream
-- ARGV[1] units to add (>= 1)
-- Returns {code, left, stock, status}; code is OK, NOT_FOUND or CLOSED.
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
redis.call('XADD', KEYS[2], '*', 't', 'stock', 'stock', stock)
return {'OK', left, stock, status}
