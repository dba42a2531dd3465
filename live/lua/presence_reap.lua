-- Drop every connection a (dead or stopping) process held in a room.
-- KEYS[1] room users hash, KEYS[2] that process's room users hash
-- Returns the number of distinct users left in the room. Idempotent.
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local n = redis.call('HINCRBY', KEYS[1], entries[i], -tonumber(entries[i + 1]))
  if n <= 0 then redis.call('HDEL', KEYS[1], entries[i]) end
end
redis.call('DEL', KEYS[2])
return redis.call('HLEN', KEYS[1])
