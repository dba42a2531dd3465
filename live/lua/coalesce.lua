-- Coalesce a pushed counter: at most one push per interval, and none when unchanged.
-- KEYS[1] last pushed value (string), KEYS[2] tick lock
-- ARGV[1] current value, ARGV[2] interval (ms)
-- Returns 1 when the caller should push ARGV[1] now, 0 when another push happened within the
-- interval (try again later), -1 when the value was already pushed.
if redis.call('GET', KEYS[1]) == ARGV[1] then return -1 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[2])) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', 86400)
  return 1
end
return 0
