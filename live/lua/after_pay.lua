-- Pay: the payment provider (or the simulated /pay) reports a payment of an order.
-- Idempotent on the transaction id. A payment that arrives for an order already cancelled or
-- expired (or past its pay_by) is refunded at once and takes no stock; a second payment of
-- a paid order is refunded too. A payment racing the expiry sweeper ends in exactly one
-- outcome: both run atomically on the same keys.
-- KEYS[1] card state, KEYS[2] bought, KEYS[3] orders, KEYS[4] pay deadlines zset,
-- KEYS[5] txns hash, KEYS[6] after-sales stream
-- ARGV[1] order id, ARGV[2] owner ('' : the provider, any), ARGV[3] transaction id,
-- ARGV[4] amount cents ('' : the order's amount), ARGV[5] now ms,
-- ARGV[6] '1' strict (the simulated pay: refuse rather than charge an order that is not payable)
-- Returns {code, order_json, card_status}: code PAID (paid now), DUP (transaction seen: the
-- order as it is), LATE (charged and refunded: order was cancelled/expired), DOUBLE (order
-- already paid: this charge refunded), NOT_FOUND, FORBIDDEN, AMOUNT (amount differs),
-- TXN (transaction id used for another order), STATE (strict: not payable; the order),
-- DUE (strict: pay_by passed; the order expired now).
if fenced(KEYS[1]) then return {'FENCED', '', ''} end
local seen = redis.call('HGET', KEYS[5], ARGV[3])
if seen then
  if seen ~= ARGV[1] then return {'TXN', '', ''} end
  return {'DUP', redis.call('HGET', KEYS[3], ARGV[1]) or '', ''}
end
local raw = redis.call('HGET', KEYS[3], ARGV[1])
if not raw then return {'NOT_FOUND', '', ''} end
local o = cjson.decode(raw)
if ARGV[2] ~= '' and o.u ~= ARGV[2] then return {'FORBIDDEN', '', ''} end
local amount = tonumber(o.a)
if ARGV[4] ~= '' then amount = tonumber(ARGV[4]) end
if amount ~= tonumber(o.a) then return {'AMOUNT', raw, ''} end
local now = tonumber(ARGV[5])
local strict = ARGV[6] == '1'
local due = o.s == 'pending_payment' and now >= tonumber(o.p)
if strict and due then
  redis.call('ZREM', KEYS[4], o.id)
  local changed = return_units(KEYS[1], KEYS[2], o)
  o.s = 'expired'
  return {'DUE', save_order(KEYS[3], KEYS[6], o), changed}
end
if strict and o.s ~= 'pending_payment' then
  if o.s == 'paid' then return {'DUP', raw, ''} end
  return {'STATE', raw, ''}
end
redis.call('HSET', KEYS[5], ARGV[3], o.id)
o.pa = (o.pa or 0) + amount
local code, changed = 'PAID', ''
if o.s == 'pending_payment' and not due then
  o.s = 'paid'
  o.pt = now
  redis.call('ZREM', KEYS[4], o.id)
elseif o.s == 'pending_payment' or o.s == 'cancelled' or o.s == 'expired' then
  if o.s == 'pending_payment' then
    redis.call('ZREM', KEYS[4], o.id)
    changed = return_units(KEYS[1], KEYS[2], o)
  else
    o.sr = 1  -- the cancel or the expiry gave the units back already
  end
  o.s = 'refunded'
  o.ra = (o.ra or 0) + amount
  o.rt = now
  code = 'LATE'
else
  o.ra = (o.ra or 0) + amount
  code = 'DOUBLE'
end
local out = save_order(KEYS[3], KEYS[6], o)
redis.call('XADD', KEYS[6], '*', 't', 'pay', 'tx', ARGV[3], 'id', o.id, 'a', tostring(amount),
           'r', code == 'PAID' and 'paid' or 'refunded', 'at', ARGV[5])
return {code, out, changed}
