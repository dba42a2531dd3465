-- A connection of a user enters a room.
-- KEYS[1] room users hash (user -> connections, all processes)
-- KEYS[2] this process's room users hash (user -> connections on this process)
-- ARGV[1] user id
-- Returns the number of distinct users in the room.
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return redis.call('HLEN', KEYS[1])
