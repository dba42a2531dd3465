-- Buy: take stock of one card for a batch of taps (one or many), atomically, each in turn.
-- A process gathers the taps that arrive in the same event-loop tick into one call.
-- KEYS[1] card state hash   (status, stock, left, limit, price, starts_ms, ends_ms, room, seq,
--                            fence fields: see fence.lua)
-- KEYS[2] bought hash       (user -> units held in orders not cancelled/expired)
-- KEYS[3] requests hash     ("user:request_id" -> order id)
-- KEYS[4] orders hash       (order id -> JSON order)
-- KEYS[5] deadlines zset    (order id -> pay_by ms, orders awaiting payment)
-- KEYS[6] events stream     (order events for the SQL persister; each carries its seq)
-- KEYS[7] audience gate hash (fans: '*' -> 'followers', user -> "version:1|0" mirroring the
--         streamer's followers; absent: anyone may buy; see live/fans/follows.py)
-- ARGV[1] now (ms), ARGV[2] pay_by (ms), ARGV[3] seq floor (the highest seq of this card the
--   caller has seen in Redis or SQL), then for each tap four values:
--   user id, qty, request id, new order id
-- Returns a flat list, three values per tap: code, order JSON (or ''), units left after it;
-- then one last value: the card's seq after the call.
-- code: OK (new order), DUP (the same request was already accepted: its order is returned),
-- RETRY (order id collision: pick another), NOT_FOUND, NOT_ON_SALE, SOLD_OUT, LIMIT_EXCEEDED,
-- NOT_ELIGIBLE (fans: a followers-only card and the user does not follow its streamer).
-- FENCED (the card is being rebuilt, or Redis is behind the seq floor: nothing sold).
-- Every check comes before any write: nothing is decremented and then checked.
local st = redis.call('HMGET', KEYS[1], 'status', 'left', 'limit', 'starts_ms', 'ends_ms', 'price',
                      'seq', 'fence')
local out = {}
local n = (#ARGV - 3) / 4
local function all(code)
  for i = 1, n do
    out[#out + 1] = code; out[#out + 1] = ''; out[#out + 1] = 0
  end
  out[#out + 1] = tonumber(st[7] or '0')
  return out
end
-- Fence: a card under rebuild sells nothing. A Redis whose seq is below what the caller has
-- already seen went back in time (restored snapshot, promoted lagging replica): fence it here,
-- atomically, so that no process sells from the stale counters until it is rebuilt from SQL.
if st[8] then return all('FENCED') end
if not st[1] then return all('NOT_FOUND') end
local seq = tonumber(st[7] or '0')
if seq < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'fence', 'stale', 'fence_at', ARGV[1], 'fence_min', ARGV[3])
  return all('FENCED')
end
local now = tonumber(ARGV[1])
local pay_by = ARGV[2]
local left = tonumber(st[2])
local limit = tonumber(st[3])
local price = tonumber(st[6])
local ends = tonumber(st[5])
local window_open = st[1] ~= 'closed' and now >= tonumber(st[4]) and (ends <= 0 or now < ends)
local status = st[1]
local gated = redis.call('HGET', KEYS[7], '*') == 'followers'  -- fans: followers-only card
for i = 0, n - 1 do
  local user, qty, req, oid = ARGV[4 + i * 4], tonumber(ARGV[5 + i * 4]), ARGV[6 + i * 4], ARGV[7 + i * 4]
  local code, order = nil, ''
  local prior = redis.call('HGET', KEYS[3], user .. ':' .. req)
  if prior then
    code = 'DUP'
    order = redis.call('HGET', KEYS[4], prior) or ''
  elseif gated and not string.find(redis.call('HGET', KEYS[7], user) or '', ':1$') then
    code = 'NOT_ELIGIBLE'  -- fans: checked here, in the same atomic step that takes the stock
  elseif not window_open then
    code = 'NOT_ON_SALE'
  elseif status == 'sold_out' then
    code = 'SOLD_OUT'
  elseif redis.call('HEXISTS', KEYS[4], oid) == 1 then
    code = 'RETRY'
  else
    local had = tonumber(redis.call('HGET', KEYS[2], user) or '0')
    if had + qty > limit then
      code = 'LIMIT_EXCEEDED'
    elseif left < qty then
      code = 'SOLD_OUT'
    else
      left = redis.call('HINCRBY', KEYS[1], 'left', -qty)
      redis.call('HINCRBY', KEYS[2], user, qty)
      redis.call('HSET', KEYS[3], user .. ':' .. req, oid)
      order = cjson.encode({id = oid, u = user, q = qty, s = 'pending_payment', c = now,
                            p = tonumber(pay_by), r = req, a = qty * price})
      redis.call('HSET', KEYS[4], oid, order)
      redis.call('ZADD', KEYS[5], pay_by, oid)
      seq = seq + 1
      redis.call('XADD', KEYS[6], '*', 't', 'created', 'o', order, 'seq', seq)
      if left == 0 then
        status = 'sold_out'
        redis.call('HSET', KEYS[1], 'status', status)
      end
      code = 'OK'
    end
  end
  out[#out + 1] = code; out[#out + 1] = order; out[#out + 1] = left
end
redis.call('HSET', KEYS[1], 'seq', seq)
out[#out + 1] = seq
return out
