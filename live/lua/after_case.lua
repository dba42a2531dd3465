-- One step of an after-sales case, with its effect on the order (refund, units back when the
-- order never shipped) and on the deadlines, all in one atomic script: requests, deadlines and
-- moderators racing on one case end in exactly one outcome. Who may take a step is checked
-- by the caller (the parties of a case never change); this script checks the state.
-- KEYS[1] card state, KEYS[2] bought, KEYS[3] orders, KEYS[4] cases, KEYS[5] after-sales due
-- zset, KEYS[6] after-sales stream
-- ARGV[1] case id, ARGV[2] step: approve | reject | return | receive | escalate |
-- rule_refund | rule_reject | withdraw | due, ARGV[3] actor ('system' for a deadline),
-- ARGV[4] now ms, ARGV[5] note, ARGV[6] carrier, ARGV[7] tracking no,
-- ARGV[8] reply ms, ARGV[9] return-ship ms, ARGV[10] return-receive ms, ARGV[11] auto-confirm ms
-- Returns {code, case_json, order_json, card_status}: OK, NOT_FOUND, STATE (the step does
-- not apply to the case's status), LATE (escalation after its deadline), NOT_DUE.
if fenced(KEYS[1]) then return {'FENCED', '', ''} end
local raw = redis.call('HGET', KEYS[4], ARGV[1])
if not raw then
  redis.call('ZREM', KEYS[5], 'c:' .. ARGV[1])
  return {'NOT_FOUND', '', '', ''}
end
local c = cjson.decode(raw)
local step, by, now, note = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local member = 'c:' .. c.id
if step == 'due' then
  if not OPEN[c.s] or c.d == 0 then
    redis.call('ZREM', KEYS[5], member)
    return {'STATE', raw, '', ''}
  end
  if now < c.d then return {'NOT_DUE', raw, '', ''} end
  -- Each deadline decides for the buyer.
  if c.s == 'requested' then step = 'approve'
  elseif c.s == 'returned' then step = 'receive'
  else step = 'expire' end  -- awaiting_return (nothing shipped) or rejected (not escalated)
  note = 'deadline'
end
local from = {approve = 'requested', reject = 'requested', ['return'] = 'awaiting_return',
              receive = 'returned', escalate = 'rejected', rule_refund = 'escalated',
              rule_reject = 'escalated'}
if step == 'withdraw' or step == 'expire' then
  if not OPEN[c.s] then return {'STATE', raw, '', ''} end
elseif c.s ~= from[step] then
  return {'STATE', raw, '', ''}
end
if step == 'escalate' and now >= c.d then return {'LATE', raw, '', ''} end
local oraw = redis.call('HGET', KEYS[3], c.o)
local o = cjson.decode(oraw)
local to, deadline, changed = nil, 0, ''
if step == 'approve' then
  if c.k == 'return_refund' then
    to, deadline = 'awaiting_return', now + tonumber(ARGV[9])
  else
    to = 'refunded'
  end
elseif step == 'reject' then
  to, deadline = 'rejected', now + tonumber(ARGV[8])
elseif step == 'return' then
  to, deadline = 'returned', now + tonumber(ARGV[10])
  c.rs = {c = ARGV[6], t = ARGV[7], at = now}
elseif step == 'receive' or step == 'rule_refund' then
  to = 'refunded'
elseif step == 'escalate' then
  to = 'escalated'
else  -- rule_reject, withdraw, expire
  to = 'closed'
end
history(c, to, by, now, note)
c.d = deadline
if to == 'refunded' then
  o.pa = o.pa or o.a
  changed = refund(KEYS[1], KEYS[2], o, c.a, now)
end
if deadline > 0 then
  redis.call('ZADD', KEYS[5], deadline, member)
else
  redis.call('ZREM', KEYS[5], member)
end
if not OPEN[to] then
  c.x = now
  -- A shipped order whose case ended without a refund goes back to waiting for confirmation.
  if o.s == 'shipped' then
    local due = tonumber(o.sh.at) + tonumber(ARGV[11])
    if due < now then due = now end
    redis.call('ZADD', KEYS[5], due, 'o:' .. o.id)
  end
end
local case = save_case(KEYS[4], KEYS[6], c)
local order = oraw
if to == 'refunded' then order = save_order(KEYS[3], KEYS[6], o) end
return {'OK', case, order, changed}
