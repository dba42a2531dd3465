-- Close a lucky bag to entries and return its entrants: after this no entry is accepted, so
-- every process that draws sees the same set. Idempotent.
-- KEYS[1] bag state hash, KEYS[2] entrants set
-- Returns the entrants (unsorted), or false when the bag is unknown to Redis.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
redis.call('HSET', KEYS[1], 'status', 'closed')
return redis.call('SMEMBERS', KEYS[2])
