-- Fence a card before it is rebuilt from SQL: while the fence stands every script that changes
-- the card (buy, release, pay, restock, card_status) refuses with FENCED, so its event stream
-- stops growing and nothing acknowledged can land between the rebuild's read and its write.
-- KEYS[1] card state hash
-- ARGV[1] rebuilder token, ARGV[2] now (ms), ARGV[3] stale (ms): a fence older than this whose
--   rebuilder went silent is taken over
-- Returns {code, seq, fence_min}: OK (the fence is ours) or BUSY (another rebuild holds it);
-- seq is the card's seq in Redis, fence_min the highest seq a buyer expected (buy.lua).
-- A card Redis lost entirely gets a state hash holding only the fence (no 'status': readers
-- treat it as missing); the caller checked SQL has the card, so no unknown id gets a key.
local f = redis.call('HMGET', KEYS[1], 'fence', 'fence_at', 'seq', 'fence_min')
local now = tonumber(ARGV[2])
if f[1] and f[1] ~= ARGV[1] and f[1] ~= 'stale' and now - tonumber(f[2] or '0') < tonumber(ARGV[3]) then
  return {'BUSY', 0, 0}
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'fence_at', ARGV[2])
return {'OK', tonumber(f[3] or '0'), tonumber(f[4] or '0')}
