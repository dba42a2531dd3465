"""The order persister: poison entries are dead-lettered, a dead consumer's entries are claimed,
scheduled sales open and close by themselves, with pushes."""

from __future__ import annotations

import asyncio
import time

import orjson
from sqlalchemy import select

from live.core import keys
from live.core.models import Order
from tests.flash_support import list_card, rid, setup_sale
from tests.support import Api, SioClient, run_app


async def _orders_in_sql(srv, card_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    async with srv.services.db() as s:
        return list((await s.execute(select(Order.id).where(Order.card_id == card_id))).scalars())


async def test_a_poison_entry_is_dead_lettered_and_the_rest_land(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(persister_max_deliveries=3)) as srv, Api(srv.url) as api:
        s, room, card = await setup_sale(api, stock=5)
        redis = srv.services.redis
        stream = keys.card_stream(card["id"])
        bad = orjson.dumps({"id": f"{card['id']}-000000000bad", "u": "u", "q": "not a number", "s": "pending_payment",
                            "c": 0, "p": 0, "r": "r", "a": 1}).decode()
        await redis.xadd(stream, {"t": "created", "o": bad})
        v = await api.guest()
        good = (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                             token=v["token"]))["order"]["id"]
        for _ in range(100):
            if await redis.xlen(keys.card_dead(card["id"])) == 1 and good in await _orders_in_sql(srv, card["id"]):
                break
            await asyncio.sleep(0.05)
        assert await _orders_in_sql(srv, card["id"]) == [good]
        dead = await redis.xrange(keys.card_dead(card["id"]))
        assert len(dead) == 1 and "not a number" in dead[0][1]["o"]
        assert await redis.xlen(stream) == 0  # nothing left pending
        _, text = await api.get("/metrics")
        assert b'live_dead_letters_total{stream="orders"} 1.0' in text


async def test_entries_of_a_dead_consumer_are_claimed(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # The idle limit is long (a minute): the entry is taken over because its holder has no
    # heartbeat, not because it waited.
    async with run_app(settings_factory(persister_claim_idle_ms=60000, heartbeat_interval_s=0.5)) as srv, \
            Api(srv.url) as api:
        s, room, card = await setup_sale(api, stock=5)
        redis = srv.services.redis
        stream = keys.card_stream(card["id"])
        # A process that read an order from the stream and died before writing it to SQL.
        order = {"id": f"{card['id']}-00000000dead", "u": "ghost-user", "q": 1, "s": "pending_payment",
                 "c": int(time.time() * 1000), "p": int(time.time() * 1000) + 60000, "r": "req-ghost", "a": 1990}
        await srv.services.orders.persister.ensure_group(stream)
        entry_id = await redis.xadd(stream, {"t": "created", "o": orjson.dumps(order).decode()})
        got = await redis.xreadgroup(keys.PERSIST_GROUP, "ghost-process", {stream: ">"}, count=10)
        assert got, "the ghost consumer should hold the entry"
        pending = await redis.xpending(stream, keys.PERSIST_GROUP)
        assert pending["pending"] == 1
        for _ in range(50):  # within 5 s
            if order["id"] in await _orders_in_sql(srv, card["id"]):
                break
            await asyncio.sleep(0.1)
        assert order["id"] in await _orders_in_sql(srv, card["id"])
        assert (await redis.xpending(stream, keys.PERSIST_GROUP))["pending"] == 0
        assert entry_id


async def test_scheduled_sale_opens_and_closes_with_pushes(server, api: Api) -> None:  # type: ignore[no-untyped-def]
    s = await api.streamer()
    room = await api.live_room(s["token"])
    v = await api.guest()
    c = SioClient()
    await c.connect(server.url, v["token"])
    try:
        assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        # Opens 8 s after the request: listing reads the photo's text (OCR), which takes a good
        # part of a second on a quiet 2-core machine and over 3 s on a busy one, and the card must
        # still be scheduled when listed.
        card = await list_card(api, s["token"], room["id"], stock=3, starts_at=time.time() + 8.0, duration_s=2)
        assert card["status"] == "scheduled" and card["starts_at"] < card["ends_at"]
        early = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
        assert early["error"]["code"] == "NOT_ON_SALE"
        await c.wait_for("flash:status", timeout=13, where=lambda d: d["status"] == "on_sale")
        ok = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
        assert ok["ok"], ok
        await c.wait_for("flash:status", timeout=5, where=lambda d: d["status"] == "closed")
        late = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
        assert late["error"]["code"] == "NOT_ON_SALE"
        assert (await api.ok("GET", f"/api/cards/{card['id']}"))["status"] == "closed"
    finally:
        await c.close()


async def test_banned_words_from_settings(settings_factory) -> None:  # type: ignore[no-untyped-def]
    async with run_app(settings_factory(banned_words=["badword"])) as srv, Api(srv.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        v = await api.guest()
        c = SioClient()
        await c.connect(srv.url, v["token"])
        try:
            assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
            ack = await c.call("chat:send", {"room_id": room["id"], "text": "this is a BadWord here"})
            assert ack["ok"] is False and ack["error"]["code"] == "BLOCKED"
            assert ack["error"]["reason"] == "banned_word"
        finally:
            await c.close()
