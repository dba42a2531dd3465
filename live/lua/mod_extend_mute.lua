-- Mute until a moment, never shortening a longer mute already in force (penalties escalate;
-- a lighter one earned meanwhile must not lift a heavier one).
-- KEYS[1] STRING until (ms) of the mute
-- ARGV[1] until (ms) wanted, ARGV[2] now (ms)
-- Returns the until (ms) now in force.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local want = tonumber(ARGV[1])
if cur >= want then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, want - tonumber(ARGV[2])))
return want
