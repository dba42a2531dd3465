"""The stock invariant under a real buy storm: many client processes, one real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import select

from live.core.models import Order
from tests.flash_support import list_card
from tests.storm import Storm, make_viewers
from tests.support import Api, RunningServer

pytestmark = pytest.mark.slow


async def test_1000_buyers_from_4_processes_stock_100(server: RunningServer, api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    card = await list_card(api, s["token"], room["id"], stock=100, limit_per_user=1)
    tokens = await make_viewers(api, 1000)
    storm = Storm(server.url, card["id"], tokens, procs=4, taps=2)  # each taps twice: limit 1
    await storm.start()
    res = await storm.results()
    acks = res["acks"]
    assert len(acks) == 100, res["errors"]
    assert len({a["order_id"] for a in acks}) == 100
    assert max(Counter(a["user_id"] for a in acks).values()) == 1  # nobody past the limit
    assert set(res["errors"]) <= {"SOLD_OUT", "LIMIT_EXCEEDED", "RATE_LIMITED"}, res["errors"]
    now = await api.ok("GET", f"/api/cards/{card['id']}")
    assert now["left"] == 0 and now["sold"] == 100 and now["status"] == "sold_out"
    audit = await api.ok("POST", f"/api/cards/{card['id']}/audit", json={"order_ids": [a["order_id"] for a in acks]},
                         token=s["token"])
    assert audit["pending_persist"] == 0
    assert audit["missing_order_ids"] == [] and audit["oversold"] == 0 and audit["duplicate_orders"] == 0
    assert audit["invariant_ok"], audit["problems"]
    async with server.services.db() as session:
        rows = list((await session.execute(select(Order).where(Order.card_id == card["id"]))).scalars())
    assert sorted(r.id for r in rows) == sorted(a["order_id"] for a in acks)
    assert sum(r.qty for r in rows) == 100


async def test_script_flush_mid_sale_keeps_selling(server: RunningServer, api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    card = await list_card(api, s["token"], room["id"], stock=40, limit_per_user=1)
    tokens = await make_viewers(api, 40)
    async def buy(tok: str) -> dict:  # type: ignore[type-arg]
        return await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": uuid.uuid4().hex},
                            token=tok)

    first = await asyncio.gather(*[buy(t) for t in tokens[:20]])
    await server.services.redis.script_flush()
    second = await asyncio.gather(*[buy(t) for t in tokens[20:]])
    assert all(r["ok"] for r in first + second)
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 0
    ids = [r["order"]["id"] for r in first + second]
    audit = await api.ok("POST", f"/api/cards/{card['id']}/audit", json={"order_ids": ids}, token=s["token"])
    assert audit["invariant_ok"] and audit["missing_order_ids"] == []


async def test_pay_racing_expiry_has_one_outcome(settings_factory) -> None:  # type: ignore[no-untyped-def]
    """Many orders whose pay_by falls while payments are in flight: each ends paid xor expired,
    and the stock counts only the paid ones."""
    from tests.support import run_app

    async with run_app(settings_factory(payment_timeout_s=1.5, sweeper_interval_s=0.01)) as srv, \
            Api(srv.url) as api:
        s = await api.streamer()
        room = await api.live_room(s["token"])
        card = await list_card(api, s["token"], room["id"], stock=60, limit_per_user=1)
        tokens = await make_viewers(api, 60)
        orders = await asyncio.gather(*[api.ok("POST", f"/api/cards/{card['id']}/buy",
                                               json={"qty": 1, "request_id": uuid.uuid4().hex}, token=t)
                                        for t in tokens])
        # Each payment lands within ±40 ms of its own order's deadline, while the sweeper runs
        # every 10 ms: some pay in time, some lose to the deadline, some race the sweeper.
        loop = asyncio.get_running_loop()
        wall0, mono0 = time.time(), loop.time()

        async def pay(i: int, o: dict, tok: str) -> int:  # type: ignore[type-arg]
            pay_by = datetime.fromisoformat(o["order"]["pay_by"].replace("Z", "+00:00")).timestamp()
            await asyncio.sleep(max(0.0, mono0 + (pay_by - wall0) + (i % 9 - 4) * 0.01 - loop.time()))
            status, _ = await api.post(f"/api/orders/{o['order']['id']}/pay", token=tok)
            return status

        statuses = await asyncio.gather(*[pay(i, o, t) for i, (o, t) in enumerate(zip(orders, tokens, strict=True))])
        await asyncio.sleep(0.5)  # let the sweeper finish
        final = [await api.ok("GET", f"/api/orders/{o['order']['id']}", token=t)
                 for o, t in zip(orders, tokens, strict=True)]
        for st, f in zip(statuses, final, strict=True):
            assert f["status"] in ("paid", "expired")
            assert (st == 200) == (f["status"] == "paid")  # the payer was told the truth
        paid = sum(1 for f in final if f["status"] == "paid")
        assert 0 < paid < len(final), f"the race was not exercised: {paid} of {len(final)} paid"
        card_now = await api.ok("GET", f"/api/cards/{card['id']}")
        assert card_now["left"] == 60 - paid
        audit = await api.ok("POST", f"/api/cards/{card['id']}/audit",
                             json={"order_ids": [o["order"]["id"] for o in orders]}, token=s["token"])
        assert audit["invariant_ok"], audit["problems"]
