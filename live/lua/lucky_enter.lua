-- Enter a lucky bag: once per user, only while the bag is open and before it ends.
-- KEYS[1] bag state hash (status, ends_ms), KEYS[2] entrants set
-- ARGV[1] user id, ARGV[2] now (ms)
-- Returns OK (entered now), DUP (had entered before), CLOSED, NOT_FOUND.
local st = redis.call('HMGET', KEYS[1], 'status', 'ends_ms')
if not st[1] then
  return 'NOT_FOUND'
end
if st[1] ~= 'open' or tonumber(ARGV[2]) >= tonumber(st[2]) then
  return 'CLOSED'
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  return 'OK'
end
return 'DUP'
