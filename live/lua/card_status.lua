-- Set a card's sale status: close it, or open a scheduled sale whose time has come.
-- KEYS[1] card state hash, KEYS[2] events stream
-- ARGV[1] target ('closed' | 'on_sale'), ARGV[2] now (ms)
-- Returns {code, status}; code is OK (changed), SAME (nothing to do), FENCED (card under
-- rebuild) or NOT_FOUND.
-- Opening only moves 'scheduled' → 'on_sale' (or 'sold_out' when nothing is left); closing is
-- final. The change is appended to the stream so SQL follows.
local st = redis.call('HMGET', KEYS[1], 'status', 'left', 'starts_ms', 'ends_ms', 'fence')
if st[5] then return {'FENCED', ''} end
local status = st[1]
if not status then return {'NOT_FOUND', ''} end
local target = ARGV[1]
local now = tonumber(ARGV[2])
if status == 'closed' then return {'SAME', status} end
if target == 'on_sale' then
  if status ~= 'scheduled' or now < tonumber(st[3]) then return {'SAME', status} end
  if tonumber(st[2]) <= 0 then target = 'sold_out' end
end
redis.call('HSET', KEYS[1], 'status', target)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '*', 't', 'card', 's', target, 'at', ARGV[2], 'seq', seq)
return {'OK', target}
