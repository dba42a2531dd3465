-- Shared functions of the after-sales scripts (after_*.lua). Not a script of its own: the
-- after-sales service prepends it to each of them when it registers them, so every
-- transition still runs as one atomic script. All keys are on one card's hash tag.
-- Orders are the compact JSON of the buy script plus: v version, pa charged cents,
-- ra refunded cents, sr 1 once the units went back, sh {c carrier, t tracking, at ms},
-- as current case id, nc cases opened, pt paid ms, cp completed ms, rt refunded ms.

-- A card under rebuild (its state hash has a 'fence' field, see card_fence.lua) takes no change
-- that moves stock or money: the scripts that hold the card state call this first and answer
-- {'FENCED', '', ''}; nothing is written.
local function fenced(kstate)
  return redis.call('HEXISTS', kstate, 'fence') == 1
end

local function save_order(korders, kstream, o)
  o.v = (o.v or 0) + 1
  local raw = cjson.encode(o)
  redis.call('HSET', korders, o.id, raw)
  redis.call('XADD', kstream, '*', 't', 'order', 'o', raw)
  return raw
end

local function save_case(kcases, kstream, c)
  c.v = (c.v or 0) + 1
  local raw = cjson.encode(c)
  redis.call('HSET', kcases, c.id, raw)
  redis.call('XADD', kstream, '*', 't', 'case', 'c', raw)
  return raw
end

-- Units of an order go back to the card and to the buyer's limit (once: sr marks it).
-- Returns 'on_sale' when a sold-out card went back on sale, else ''.
local function return_units(kstate, kbought, o)
  if (o.sr or 0) == 1 then return '' end
  o.sr = 1
  local left = redis.call('HINCRBY', kstate, 'left', o.q)
  if redis.call('HINCRBY', kbought, o.u, -o.q) <= 0 then redis.call('HDEL', kbought, o.u) end
  if redis.call('HGET', kstate, 'status') == 'sold_out' and left > 0 then
    redis.call('HSET', kstate, 'status', 'on_sale')
    return 'on_sale'
  end
  return ''
end

-- Refund `amount` cents of an order: it ends `refunded`; units come back only if it was
-- never shipped (status still `paid`). Returns the card's new status or ''.
local function refund(kstate, kbought, o, amount, now)
  local changed = ''
  if o.s == 'paid' then changed = return_units(kstate, kbought, o) end
  o.ra = (o.ra or 0) + amount
  o.rt = now
  o.s = 'refunded'
  return changed
end

local function history(c, status, by, now, note)
  c.s = status
  c.h[#c.h + 1] = {s = status, by = by, at = now, n = note}
end

local OPEN = {requested = true, awaiting_return = true, returned = true, rejected = true, escalated = true}
