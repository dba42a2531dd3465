-- A connection of a user leaves a room.
-- KEYS[1] room users hash, KEYS[2] this process's room users hash
-- ARGV[1] user id
-- Returns the number of distinct users in the room. If the process's entry is gone
-- (a reaper dropped it meanwhile) the room hash is left alone: the reaper already did it.
local p = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if p <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if p >= 0 then
  local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
  if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return redis.call('HLEN', KEYS[1])
