-- Admit one chat message into a room: refuse banned or muted users, enforce slow mode.
-- The slow-mode check and the reservation of the user's next slot are one step, so two
-- concurrent sends of one user (on any processes) cannot both pass.
-- KEYS[1] SET of user ids banned from the room
-- KEYS[2] STRING until (ms) of the user's mute in this room (expires with the mute)
-- KEYS[3] STRING slow-mode interval of the room in seconds (absent or 0: off)
-- KEYS[4] STRING marker of the user's last message in the room (expires after the interval)
-- ARGV[1] user id, ARGV[2] "1" when the user is exempt from slow mode (streamer, moderator)
-- Returns {0} admitted, {1} banned, {2, until_ms} muted, {3, retry_after_ms} slow mode.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return {1}
end
local muted = redis.call('GET', KEYS[2])
if muted then
  return {2, tonumber(muted)}
end
if ARGV[2] ~= '1' then
  local slow = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
  if slow > 0 then
    if not redis.call('SET', KEYS[4], '1', 'PX', math.floor(slow * 1000), 'NX') then
      return {3, redis.call('PTTL', KEYS[4])}
    end
  end
end
return {0}
