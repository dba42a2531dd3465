-- Rebuild: replace a fenced card's Redis state with what SQL holds, and lift the fence.
-- KEYS[1] card state hash, KEYS[2] bought hash, KEYS[3] requests hash, KEYS[4] orders hash,
-- KEYS[5] deadlines zset (the events stream is kept: its consumer group lives on)
-- ARGV[1] rebuilder token (card_fence.lua), ARGV[2] seq floor (highest seq SQL, Redis or a
--   buyer has seen), ARGV[3] JSON {state: {field: value}, orders: [[id, json]],
--   requests: [["user:request", id]], bought: [[user, units]], deadlines: [[id, pay_by_ms]]}
-- Returns {code, seq}: OK with the card's new seq (above the floor, so no process that saw
-- the old numbers mistakes the rebuilt card for a stale one), or LOST (the fence was taken
-- over by another rebuild: nothing written).
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return {'LOST', 0} end
local seq = math.max(tonumber(redis.call('HGET', KEYS[1], 'seq') or '0'), tonumber(ARGV[2])) + 1
local d = cjson.decode(ARGV[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
for k, v in pairs(d.state) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'seq', seq)
for _, p in ipairs(d.orders) do redis.call('HSET', KEYS[4], p[1], p[2]) end
for _, p in ipairs(d.requests) do redis.call('HSET', KEYS[3], p[1], p[2]) end
for _, p in ipairs(d.bought) do redis.call('HSET', KEYS[2], p[1], p[2]) end
for _, p in ipairs(d.deadlines) do redis.call('ZADD', KEYS[5], p[2], p[1]) end
return {'OK', seq}
