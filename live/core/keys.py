"""Every Redis key and channel the server uses, in one place.

Keys that one Lua script touches together share a hash tag (``{card:ID}``, ``{room:ID}``)
so that each script's keys live in one slot and the scripts run on Redis Cluster.
"""

from __future__ import annotations

PREFIX = "live"


# --- processes & presence ------------------------------------------------------------
PROCS = f"{PREFIX}:procs"  # ZSET proc_id -> last heartbeat (ms)
WORKERS = f"{PREFIX}:workers"  # ZSET proc_id of a `live worker` -> last heartbeat (ms)


def proc_rooms(proc: str) -> str:
    """SET of room ids in which process ``proc`` holds connections."""
    return f"{PREFIX}:proc:{proc}:rooms"


def room_users(room: str) -> str:
    """HASH user_id -> number of connections (any process) in the room."""
    return f"{PREFIX}:{{room:{room}}}:users"


def room_proc_users(room: str, proc: str) -> str:
    """HASH user_id -> number of connections that process ``proc`` holds in the room."""
    return f"{PREFIX}:{{room:{room}}}:proc:{proc}"


def room_version(room: str) -> str:
    """Counter bumped whenever a room's snapshot changes shape (status, pin, a new card):
    processes cache the SQL part of the snapshot and re-read it when the counter moves."""
    return f"{PREFIX}:{{room:{room}}}:ver"


def room_hosts(room: str) -> str:
    """ZSET host -> last seen (ms): the processes holding the room's publisher or streamer
    connection, plus ``live`` for the moment it went live. A live room whose newest entry is
    older than ``room_idle_end_s`` ends by itself."""
    return f"{PREFIX}:{{room:{room}}}:hosts"


def room_tick(room: str, what: str) -> str:
    """Short-lived NX lock: one process per interval pushes a coalesced ``what`` update."""
    return f"{PREFIX}:{{room:{room}}}:tick:{what}"


# --- flash-buy -------------------------------------------------------------------------
def card_state(card: str) -> str:
    """HASH status, stock (incl. restocks), left, limit, price, room, starts_ms, ends_ms."""
    return f"{PREFIX}:{{card:{card}}}:state"


def card_bought(card: str) -> str:
    """HASH user_id -> units held (orders not cancelled/expired)."""
    return f"{PREFIX}:{{card:{card}}}:bought"


def card_requests(card: str) -> str:
    """HASH "user_id:request_id" -> order_id (idempotency of retries)."""
    return f"{PREFIX}:{{card:{card}}}:req"


def card_orders(card: str) -> str:
    """HASH order_id -> packed order (user, qty, status, created_ms, pay_by_ms, request)."""
    return f"{PREFIX}:{{card:{card}}}:orders"


def card_deadlines(card: str) -> str:
    """ZSET order_id -> pay_by (ms) of orders awaiting payment."""
    return f"{PREFIX}:{{card:{card}}}:deadlines"


def card_stream(card: str) -> str:
    """STREAM of order events (created / paid / cancelled / expired) for the SQL persister."""
    return f"{PREFIX}:{{card:{card}}}:events"


def card_dead(card: str) -> str:
    """STREAM of events the persister gave up on after too many deliveries."""
    return f"{PREFIX}:{{card:{card}}}:dead"


def card_tick(card: str) -> str:
    return f"{PREFIX}:{{card:{card}}}:tick"


ACTIVE_CARDS = f"{PREFIX}:cards:active"  # SET of card ids whose streams/deadlines need work
PERSIST_GROUP = "persister"


def user_bucket(user: str, what: str) -> str:
    """Token bucket of a user for ``what`` (buy, chat)."""
    return f"{PREFIX}:{{user:{user}}}:bucket:{what}"


# --- chat -------------------------------------------------------------------------------------
def room_chat(room: str) -> str:
    """LIST of the last N chat messages (JSON), newest first."""
    return f"{PREFIX}:{{room:{room}}}:chat"


def room_slowmode(room: str) -> str:
    return f"{PREFIX}:{{room:{room}}}:slowmode"


def room_last_msg(room: str, user: str) -> str:
    return f"{PREFIX}:{{room:{room}}}:last:{user}"


def room_muted(room: str, user: str) -> str:
    return f"{PREFIX}:{{room:{room}}}:muted:{user}"


def room_banned(room: str) -> str:
    """SET of user ids banned from the room."""
    return f"{PREFIX}:{{room:{room}}}:banned"


def user_chat_ban(user: str) -> str:
    return f"{PREFIX}:{{user:{user}}}:chat_ban"


def user_listing_ban(user: str) -> str:
    return f"{PREFIX}:{{user:{user}}}:listing_ban"


def user_violations(user: str) -> str:
    return f"{PREFIX}:{{user:{user}}}:violations"


def user_guard_window(user: str) -> str:
    """LIST of the user's last chat texts (newest first, bounded, TTL) the guard reads together."""
    return f"{PREFIX}:{{user:{user}}}:guard-window"


CHAT_STREAM = f"{PREFIX}:chat:events"  # STREAM of chat messages/deletions for the SQL persister
CHAT_DEAD = f"{PREFIX}:chat:dead"  # STREAM of chat events the persister gave up on
MOD_BLOCKED = f"{PREFIX}:mod:blocked"  # HASH reason -> pieces of content refused by the guard (all processes)


def user_muted(user: str) -> str:
    """STRING until (ms) of a platform-wide mute earned by violations; expires with it."""
    return f"{PREFIX}:{{user:{user}}}:muted"


def chat_message(msg: str) -> str:
    """STRING "room_id user_id" of a recent message (finds it for deletes before SQL has it)."""
    return f"{PREFIX}:chat:msg:{msg}"


# --- after-sales (fulfilment, payments, cases) ----------------------------------------
# On the card's hash tag, so that one script moves an order, its case, the stock and the
# deadlines together.
def card_cases(card: str) -> str:
    """HASH case_id -> after-sales case JSON (status, amount, deadline, history)."""
    return f"{PREFIX}:{{card:{card}}}:cases"


def card_after_due(card: str) -> str:
    """ZSET "o:<order_id>" (auto-confirm) / "c:<case_id>" (case deadline) -> due (ms)."""
    return f"{PREFIX}:{{card:{card}}}:afterdue"


def card_after_stream(card: str) -> str:
    """STREAM of post-payment order and case versions for the after-sales persister."""
    return f"{PREFIX}:{{card:{card}}}:after"


def card_after_dead(card: str) -> str:
    return f"{PREFIX}:{{card:{card}}}:afterdead"


def card_txns(card: str) -> str:
    """HASH payment transaction_id -> order id (payments are idempotent on the transaction)."""
    return f"{PREFIX}:{{card:{card}}}:txns"


AFTER_CARDS = f"{PREFIX}:after:cards"  # SET of card ids with after-sales deadlines (the sweeper's work)
AFTER_NEXT = f"{PREFIX}:after:next"  # ZSET card id -> earliest after-sales due time (ms): the sweeper's index
AFTER_DIRTY = f"{PREFIX}:after:dirty"  # SET of card ids whose after-sales stream may hold entries
AFTER_GROUP = "aftersales"


# --- governance ------------------------------------------------------------------------
def shop_standing_version(user: str) -> str:
    """STRING counter bumped on every change of a shop's standing (violations, appeals,
    admission): each process re-reads the standing from SQL when it moves."""
    return f"{PREFIX}:gov:standing:{{user:{user}}}"


def transparency(month: str) -> str:
    """STRING JSON of a finished month's public disclosure figures (they never change)."""
    return f"{PREFIX}:gov:transparency:{month}"


# --- pub/sub channels ----------------------------------------------------------------
CH_CARD_HINTS = f"{PREFIX}:ch:card-hints"  # "card_id status" -> fast reject on every process
CH_KICK = f"{PREFIX}:ch:kick"  # "room_id user_id" -> disconnect a banned user everywhere


# --- fans (follows, notifications, lucky bags) ----------------------------------------------
def fans_seq(streamer: str) -> str:
    """Counter: a version per follow change of one streamer's followers (last writer wins in
    every mirror of the follower set, see ``fans_mark.lua``)."""
    return f"{PREFIX}:{{fans:{streamer}}}:seq"


def fans_gated_cards(streamer: str) -> str:
    """SET of the streamer's followers-only card ids (their gates mirror its followers)."""
    return f"{PREFIX}:{{fans:{streamer}}}:cards"


def card_fans(card: str) -> str:
    """HASH under the card's tag, read by buy.lua: ``*`` -> audience (``followers``) and
    user_id -> "version:1" (follows) or "version:0" (unfollowed). Absent: anyone may buy."""
    return f"{PREFIX}:{{card:{card}}}:fans"


def bag_state(bag: str) -> str:
    """HASH status (open|closed), ends_ms of a lucky bag: entries are accepted while open."""
    return f"{PREFIX}:{{bag:{bag}}}:state"


def bag_entrants(bag: str) -> str:
    """SET of user ids who entered the lucky bag (once each)."""
    return f"{PREFIX}:{{bag:{bag}}}:entrants"


BAGS_DUE = f"{PREFIX}:bags:due"  # ZSET bag_id -> ends_ms of bags not yet drawn


def room_open_bags(room: str) -> str:
    """HASH bag_id -> keyword of the room's open keyword bags (chat messages are matched against them)."""
    return f"{PREFIX}:{{room:{room}}}:bags"


CH_FANS_LIVE = f"{PREFIX}:ch:fans-live"  # go-live event JSON -> every process notifies its own followers
# --- identity: the current role of a user -------------------------------------------------
def user_role(user: str) -> str:
    """STRING the user's current role ("" once the user is gone): what every process checks a
    token's role against (set after each role change; loaded from SQL with SET NX when missing)."""
    return f"{PREFIX}:{{user:{user}}}:role"


CH_ROLE = f"{PREFIX}:ch:role"  # "user_id" -> drop the cached role on every process
