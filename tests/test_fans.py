"""Fans: follows (exact counts under races), go-live notifications, reminders, followers-only
cards in a tap storm, shop stats. Real Redis, real SQL, real Socket.IO clients."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

from tests.flash_support import list_card
from tests.support import Api, RunningServer, SioClient


async def test_follow_unfollow_idempotent_and_not_yourself(api: Api) -> None:
    s = await api.streamer()
    v = await api.guest("fan")
    sid = s["user"]["id"]
    for _ in range(2):  # following twice counts once
        out = await api.ok("POST", f"/api/users/{sid}/follow", token=v["token"])
        assert out == {"user_id": sid, "following": True, "followers": 1}
    user = await api.ok("GET", f"/api/users/{sid}", token=v["token"])
    assert user["followers"] == 1 and user["following"] is True and user["name"] == s["user"]["name"]
    mine = await api.ok("GET", "/api/me/following", token=v["token"])
    assert [f["id"] for f in mine] == [sid] and mine[0]["followers"] == 1
    room = await api.ok("POST", "/api/rooms", json={"title": "show"}, token=s["token"])
    assert room["followers"] == 1
    status, err = await api.post(f"/api/users/{sid}/follow", token=s["token"])
    assert status == 400 and err["error"]["code"] == "INVALID"
    status, err = await api.post("/api/users/nobody/follow", token=v["token"])
    assert status == 404
    status, _ = await api.post(f"/api/users/{sid}/follow")
    assert status == 401
    for _ in range(2):
        out = await api.ok("DELETE", f"/api/users/{sid}/follow", token=v["token"])
        assert out["following"] is False and out["followers"] == 0
    assert await api.ok("GET", "/api/me/following", token=v["token"]) == []


async def test_follower_count_exact_under_concurrent_follow_and_unfollow(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    sid = s["user"]["id"]
    fans = [await api.guest(f"f{i}") for i in range(24)]
    rng = random.Random(7)
    plans = [[rng.choice(("POST", "DELETE")) for _ in range(6)] for _ in fans]

    async def run(fan: dict[str, Any], plan: list[str]) -> None:
        for method in plan:
            # each op twice at once: the duplicate must change nothing
            await asyncio.gather(*[api.ok(method, f"/api/users/{sid}/follow", token=fan["token"]) for _ in range(2)])

    await asyncio.gather(*[run(f, p) for f, p in zip(fans, plans, strict=True)])
    expected = sum(1 for p in plans if p[-1] == "POST")
    assert (await api.ok("GET", f"/api/users/{sid}"))["followers"] == expected
    assert await server.services.fans.follows.total(sid) == expected


async def test_notify_live_reaches_followers_wherever_they_are_and_is_kept(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    fan, other, away = await api.guest("fan"), await api.guest("other"), await api.guest("away")
    for v in (fan, away):
        await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=v["token"])
    clients = []
    for v in (fan, other):
        c = SioClient()
        await c.connect(server.url, v["token"])  # connected, in no room
        clients.append(c)
    try:
        room = await api.live_room(s["token"], title="tonight")
        got = await clients[0].wait_for("notify:live", timeout=5)
        assert got["room_id"] == room["id"] and got["title"] == "tonight"
        assert got["streamer"] == {"id": s["user"]["id"], "name": s["user"]["name"]}
        await api.ok("POST", f"/api/rooms/{room['id']}/live", token=s["token"])  # already live: no second one
        await asyncio.sleep(0.5)
        assert len(clients[0].received("notify:live")) == 1
        assert clients[1].received("notify:live") == []
    finally:
        for c in clients:
            await c.close()
    kept = await api.ok("GET", "/api/me/notifications", token=away["token"])
    assert kept["unread"] == 1 and kept["items"][0]["room_id"] == room["id"] and not kept["items"][0]["read"]
    assert (await api.ok("GET", "/api/me/notifications", token=other["token"]))["items"] == []
    read = await api.ok("POST", "/api/me/notifications/read", json={}, token=away["token"])
    assert read["unread"] == 0 and read["items"][0]["read"]
    status, _ = await api.post("/api/me/notifications/read", json={"upto": 5}, token=away["token"])
    assert status == 400


async def test_notifications_are_bounded(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.support import run_app

    async with run_app(settings_factory(notifications_keep=3)) as srv, Api(srv.url) as api:
        s = await api.streamer()
        fan = await api.guest("fan")
        await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=fan["token"])
        rooms = [await api.live_room(s["token"], title=f"show {i}") for i in range(5)]
        items = (await api.ok("GET", "/api/me/notifications", token=fan["token"]))["items"]
        assert [i["room_id"] for i in items] == [r["id"] for r in reversed(rooms)][:3]


async def test_remind_a_scheduled_room_without_following(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    v = await api.guest("curious")
    room = await api.ok("POST", "/api/rooms", json={"title": "later", "scheduled_at": "2030-01-01T12:00:00Z"},
                        token=s["token"])
    assert room["scheduled_at"] == "2030-01-01T12:00:00.000Z"
    out = await api.ok("POST", f"/api/rooms/{room['id']}/remind", token=v["token"])
    assert out == {"room_id": room["id"], "reminded": True}
    assert (await api.ok("GET", f"/api/users/{s['user']['id']}"))["followers"] == 0
    c = SioClient()
    await c.connect(server.url, v["token"])
    try:
        await api.ok("POST", f"/api/rooms/{room['id']}/live", token=s["token"])
        assert (await c.wait_for("notify:live", timeout=5))["room_id"] == room["id"]
    finally:
        await c.close()
    assert (await api.ok("GET", "/api/me/notifications", token=v["token"]))["items"][0]["room_id"] == room["id"]
    status, err = await api.post(f"/api/rooms/{room['id']}/remind", token=v["token"])
    assert status == 409  # live now: nothing to remind of


async def test_followers_only_card_refuses_outsiders_in_a_storm(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    sid = s["user"]["id"]
    room = await api.live_room(s["token"])
    fans = [await api.guest(f"fan{i}") for i in range(8)]
    outsiders = [await api.guest(f"out{i}") for i in range(8)]
    late_fan, quitter = await api.guest("late"), await api.guest("quitter")
    for f in [*fans, quitter]:
        await api.ok("POST", f"/api/users/{sid}/follow", token=f["token"])
    # stock to spare: no tap is answered by the sold-out fast path, every one reaches buy.lua
    card = await list_card(api, s["token"], room["id"], stock=100, limit_per_user=2, audience="followers")
    assert card["audience"] == "followers"
    # after the card exists: a new follower may buy, one who left may not
    await api.ok("POST", f"/api/users/{sid}/follow", token=late_fan["token"])
    await api.ok("DELETE", f"/api/users/{sid}/follow", token=quitter["token"])
    people = [*fans, late_fan, *outsiders, quitter]
    clients = []
    for p in people:
        c = SioClient()
        await c.connect(server.url, p["token"])
        clients.append(c)
    try:
        async def taps(c: SioClient) -> list[dict[str, Any]]:
            return list(await asyncio.gather(*[c.call("flash:buy", {"card_id": card["id"], "qty": 1,
                                                                    "request_id": uuid.uuid4().hex})
                                               for _ in range(4)]))

        acks = await asyncio.gather(*[taps(c) for c in clients])
    finally:
        for c in clients:
            await c.close()
    n_fans = len(fans) + 1
    for who_acks in acks[n_fans:]:  # outsiders and the quitter: refused every time, inside the buy step
        assert all(not a["ok"] and a["error"]["code"] == "NOT_ELIGIBLE" for a in who_acks), who_acks
    fan_acks = [a for who_acks in acks[:n_fans] for a in who_acks]
    assert sum(a["ok"] for a in fan_acks) == 2 * n_fans  # each follower up to the limit
    assert {a["error"]["code"] for a in fan_acks if not a["ok"]} == {"LIMIT_EXCEEDED"}
    buyers = {a["order"]["user_id"] for a in fan_acks if a["ok"]}
    assert buyers <= {p["user"]["id"] for p in people[:n_fans]}
    rec = await api.ok("GET", f"/api/cards/{card['id']}/reconcile", token=s["token"])
    assert rec["left"] == 100 - 2 * n_fans and rec["sold"] == 2 * n_fans
    assert not [p for p in rec["problems"] if "over the limit" in p or "redis" in p]
    # an HTTP tap from an outsider is refused the same way
    status, err = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": "x1"},
                                 token=outsiders[0]["token"])
    assert status == 403 and err["error"]["code"] == "NOT_ELIGIBLE"


async def test_shop_stats_repeat_buyers_per_show(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    a, b = await api.guest("a"), await api.guest("b")
    await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=a["token"])
    shows = []
    for i, buyers in enumerate(([a, b], [a])):
        room = await api.live_room(s["token"], title=f"show {i}")
        card = await list_card(api, s["token"], room["id"], price="10.50", stock=5, limit_per_user=3)
        for who in buyers:
            ack = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": f"r{i}"},
                               token=who["token"])
            await api.ok("POST", f"/api/orders/{ack['order']['id']}/pay", token=who["token"])
        await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": "unpaid"},
                     token=b["token"])  # unpaid: not a sale
        shows.append(room)
    # Stats are read from SQL, which the order persister brings up to date a moment after each
    # acknowledged payment (Redis first): wait, bounded, for the three payments to land.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        st = await api.ok("GET", "/api/shop/stats", token=s["token"])
        if st["orders"] >= 3 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert {k: st[k] for k in ("followers", "buyers", "repeat_buyers", "repeat_rate", "orders", "gmv")} == {
        "followers": 1, "buyers": 2, "repeat_buyers": 1, "repeat_rate": 0.5, "orders": 3, "gmv": "31.50"}
    per = {x["room_id"]: x for x in st["shows"]}
    assert per[shows[1]["id"]]["returning_buyers"] == 1 and per[shows[1]["id"]]["gmv"] == "10.50"
    assert per[shows[0]["id"]]["buyers"] == 2 and per[shows[0]["id"]]["returning_buyers"] == 0
    status, _ = await api.get("/api/shop/stats", token=a["token"])
    assert status == 403


async def test_a_gate_lost_with_redis_data_is_restored_from_sql(api: Api, server: RunningServer) -> None:
    from live.core import keys

    s = await api.streamer()
    room = await api.live_room(s["token"])
    fan, outsider = await api.guest("fan"), await api.guest("out")
    await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=fan["token"])
    card = await list_card(api, s["token"], room["id"], stock=5, audience="followers")
    await server.services.redis.delete(keys.card_fans(card["id"]))  # as if Redis lost it
    assert await server.services.fans.regate_once() >= 1
    status, err = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": "o"},
                                 token=outsider["token"])
    assert status == 403 and err["error"]["code"] == "NOT_ELIGIBLE"
    assert (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": "f"},
                         token=fan["token"]))["ok"]
    assert await server.services.fans.regate_once() == 0  # nothing else lost


async def test_follow_toggling_is_rate_limited(api: Api) -> None:
    s = await api.streamer()
    v = await api.guest("toggler")
    statuses = [(await api.request("POST" if i % 2 == 0 else "DELETE", f"/api/users/{s['user']['id']}/follow",
                                   token=v["token"]))[0] for i in range(30)]
    assert 429 in statuses and statuses[0] == 200
    count = (await api.ok("GET", f"/api/users/{s['user']['id']}"))["followers"]
    following = [f["id"] for f in await api.ok("GET", "/api/me/following", token=v["token"])]
    assert count == len(following)  # refused toggles changed nothing


async def test_closed_gated_cards_leave_the_follow_path(api: Api, server: RunningServer) -> None:
    from live.core import keys

    s = await api.streamer()
    sid = s["user"]["id"]
    room = await api.live_room(s["token"])
    cards = [await list_card(api, s["token"], room["id"], stock=3, audience="followers") for _ in range(2)]
    await api.ok("POST", f"/api/cards/{cards[0]['id']}/close", token=s["token"])
    fan = await api.guest("fan")
    await api.ok("POST", f"/api/users/{sid}/follow", token=fan["token"])
    redis = server.services.redis
    assert await redis.smembers(keys.fans_gated_cards(sid)) == {cards[1]["id"]}
    assert (await redis.hget(keys.card_fans(cards[1]["id"]), fan["user"]["id"])).endswith(":1")


async def test_a_rebuilt_followers_only_card_is_gated_before_it_sells(api: Api, server: RunningServer) -> None:
    """Redis loses the card (its state and its gate share one hash tag): the rebuild from SQL puts
    the gate back before the fence lifts, without waiting for the periodic re-gating."""
    s = await api.streamer()
    room = await api.live_room(s["token"])
    fan, outsider = await api.guest("fan2"), await api.guest("out2")
    await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=fan["token"])
    card = await list_card(api, s["token"], room["id"], stock=5, audience="followers")
    redis = server.services.redis
    lost = [k async for k in redis.scan_iter(match=f"*{{card:{card['id']}}}*")]
    assert lost and await redis.delete(*lost) == len(lost)  # as if Redis lost the card's slot
    assert await server.services.orders.rebuild(card["id"], force=True)
    status, err = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": "o"},
                                 token=outsider["token"])
    assert status == 403 and err["error"]["code"] == "NOT_ELIGIBLE"
    assert (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": "f"},
                         token=fan["token"]))["ok"]
