-- Mark users as followers (1) or not (0) in one mirror of a streamer's follower set, last
-- version wins: writes that arrive out of order (a follow racing an unfollow, a card's gate
-- being filled while people follow) converge on the newest state.
-- KEYS[1] mirror hash (user_id -> "version:state"; e.g. a card's gate, live/core/keys.card_fans)
-- ARGV: triples of user id, version (integer), state ("1" or "0")
-- Returns the number of fields changed.
local changed = 0
for i = 1, #ARGV, 3 do
  local user, ver, state = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local cur = redis.call('HGET', KEYS[1], user)
  local cur_ver = -1
  if cur then
    cur_ver = tonumber(string.match(cur, '^(%d+):'))
  end
  if ver > cur_ver then
    redis.call('HSET', KEYS[1], user, ver .. ':' .. state)
    changed = changed + 1
  end
end
return changed
