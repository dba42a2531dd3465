"""Lucky bags: entry rules, a verifiable draw, exactly one draw with two processes, prize
orders; go-live notifications across processes; and the draw procedure's uniformity."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from live.core.models import Card, Order
from live.fans.draw import commitment, draw_winners, uniform_below
from tests.support import (
    Api,
    RedisServer,
    RunningServer,
    SioClient,
    TestDatabase,
    free_port,
    spawn_server,
    stop_server,
    wait_healthy,
)

# chi-square critical values at p = 0.001 (df -> value): a fixed seed set makes the test
# deterministic; the threshold only says how far from uniform is a failure.
CHI2_999 = {6: 22.458, 9: 27.877, 11: 31.264}


def chi_square(counts: list[int], expected: float) -> float:
    return sum((c - expected) ** 2 / expected for c in counts)


def seeds(n: int, tag: str) -> list[str]:
    return [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def test_draw_is_deterministic_distinct_and_order_free() -> None:
    seed = seeds(1, "fixed")[0]
    people = [f"user{i:02d}" for i in range(20)]
    w = draw_winners(seed, people, 5)
    assert len(set(w)) == 5 and set(w) <= set(people)
    assert draw_winners(seed, list(reversed(people)), 5) == w  # input order does not matter
    everyone = draw_winners(seed, people, 50)  # more winners than entrants: all win
    assert sorted(everyone) == people and everyone[:5] == w  # and the first k are the k-draw
    assert draw_winners(seed, [], 3) == []
    assert commitment(seed) == hashlib.sha256(bytes.fromhex(seed)).hexdigest()
    n = 3 * 2 ** 62  # a quarter of 64-bit values are rejected: the sampler must still land in range
    assert all(0 <= uniform_below(bytes.fromhex(s), 0, n) < n for s in seeds(50, "big"))


def test_single_winner_is_uniform_over_entrants() -> None:
    people = [f"u{i}" for i in range(10)]
    counts = Counter(draw_winners(s, people, 1)[0] for s in seeds(6000, "one"))
    assert chi_square([counts[p] for p in people], 600) < CHI2_999[9]


def test_every_draw_position_is_uniform() -> None:
    people = [f"p{i}" for i in range(7)]  # not a power of two: modulo bias would show
    draws = [draw_winners(s, people, 3) for s in seeds(7000, "pos")]
    for pos in range(3):
        counts = Counter(d[pos] for d in draws)
        assert chi_square([counts[p] for p in people], 1000) < CHI2_999[6], pos
    # and each entrant wins (in any position) 3/7 of the time
    wins = Counter(p for d in draws for p in d)
    assert chi_square([wins[p] for p in people], 3000) < CHI2_999[6]


# --- the service, in one process ------------------------------------------------------------------
async def _bag(api: Api, token: str, room_id: str, **fields: Any) -> dict[str, Any]:
    body = {"title": "lucky", "winners": 2, "duration_s": 1.5, "condition": "present", **fields}
    return await api.ok("POST", f"/api/rooms/{room_id}/lucky-bags", json=body, token=token)


async def _drawn(api: Api, bag_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        bag = await api.ok("GET", f"/api/lucky-bags/{bag_id}")
        if bag["status"] == "drawn" or asyncio.get_running_loop().time() > deadline:
            return bag
        await asyncio.sleep(0.2)


async def test_bag_entry_rules_and_a_verifiable_draw(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    v = await api.streamer()  # a registered account (streamers may enter others' bags)
    guest, outsider = await api.guest("g"), await api.guest("o")
    status, err = await api.post(f"/api/rooms/{room['id']}/lucky-bags", token=s["token"],
                                 json={"title": "x", "winners": 0, "duration_s": 5, "condition": "present"})
    assert status == 400
    status, err = await api.post(f"/api/rooms/{room['id']}/lucky-bags", token=v["token"],
                                 json={"title": "x", "winners": 1, "duration_s": 5, "condition": "present"})
    assert status == 403
    status, err = await api.post(f"/api/rooms/{room['id']}/lucky-bags", token=s["token"],
                                 json={"title": "x", "winners": 1, "duration_s": 5, "condition": "keyword"})
    assert status == 400  # keyword missing
    watchers = []
    for who in (v, guest, outsider):
        c = SioClient()
        await c.connect(server.url, who["token"])
        watchers.append(c)
    try:
        for c in watchers[:2]:
            assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        bag = await _bag(api, s["token"], room["id"], winners=5, duration_s=2.5)
        assert bag["status"] == "open" and len(bag["commitment"]) == 64 and "seed" not in bag
        assert (await watchers[0].wait_for("lucky:open"))["id"] == bag["id"]
        ok = await watchers[0].call("lucky:enter", {"bag_id": bag["id"]})
        assert ok == {"ok": True, "bag_id": bag["id"], "entered": True, "already": False}
        again = await watchers[0].call("lucky:enter", {"bag_id": bag["id"]})
        assert again["ok"] and again["already"]  # once per user
        refused = await watchers[1].call("lucky:enter", {"bag_id": bag["id"]})
        assert refused["error"]["code"] == "NOT_ELIGIBLE"  # guests excluded by default
        absent = await watchers[2].call("lucky:enter", {"bag_id": bag["id"]})
        assert absent["error"]["code"] == "NOT_ELIGIBLE"  # not in the room
        bad = await watchers[0].call("lucky:enter", {"bag_id": 7})
        assert bad["error"]["code"] == "INVALID"
        drawn = await watchers[0].wait_for("lucky:drawn", timeout=15)
        assert drawn["id"] == bag["id"]
        late = await watchers[0].call("lucky:enter", {"bag_id": bag["id"]})
        assert late["error"]["code"] == "CONFLICT"
    finally:
        for c in watchers:
            await c.close()
    final = await api.ok("GET", f"/api/lucky-bags/{bag['id']}")
    assert final["status"] == "drawn" and final["entrants"] == [v["user"]["id"]]
    assert hashlib.sha256(bytes.fromhex(final["seed"])).hexdigest() == bag["commitment"]
    assert final["winners"] == draw_winners(final["seed"], final["entrants"], 5) == [v["user"]["id"]]
    orders = await api.ok("GET", "/api/me/orders", token=v["token"])
    prize = [o for o in orders if o["card_id"] == final["prize_card_id"]]
    assert len(prize) == 1 and prize[0]["amount"] == "0.00" and prize[0]["status"] == "paid"
    snap = await api.ok("GET", f"/api/rooms/{room['id']}")
    assert final["prize_card_id"] not in [c["id"] for c in snap["cards"]]  # a prize is not on sale


async def test_follower_and_keyword_bags(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    fan, other = await api.guest("fan"), await api.guest("other")
    await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=fan["token"])
    fbag = await _bag(api, s["token"], room["id"], condition="follower", allow_guests=True, duration_s=30)
    kbag = await _bag(api, s["token"], room["id"], condition="keyword", keyword="老铁666", allow_guests=True,
                      duration_s=30)
    clients = []
    for who in (fan, other):
        c = SioClient()
        await c.connect(server.url, who["token"])
        assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        clients.append(c)
    try:
        assert (await clients[0].call("lucky:enter", {"bag_id": fbag["id"]}))["ok"]
        assert (await clients[1].call("lucky:enter", {"bag_id": fbag["id"]}))["error"]["code"] == "NOT_ELIGIBLE"
        assert (await clients[1].call("lucky:enter", {"bag_id": kbag["id"]}))["error"]["code"] == "INVALID"
        assert (await clients[1].call("chat:send", {"room_id": room["id"], "text": "老铁666"}))["ok"]
        entered = await clients[1].wait_for("lucky:entered", timeout=5)
        assert entered["bag_id"] == kbag["id"]
        assert (await clients[0].call("chat:send", {"room_id": room["id"], "text": "hello"}))["ok"]
    finally:
        for c in clients:
            await c.close()
    assert (await api.ok("GET", f"/api/lucky-bags/{fbag['id']}"))["entries"] == 1
    assert (await api.ok("GET", f"/api/lucky-bags/{kbag['id']}"))["entries"] == 1  # "hello" entered nobody
    assert not await server.services.fans.lucky.draw(kbag["id"])  # not due yet: nothing drawn early
    assert (await api.ok("GET", f"/api/lucky-bags/{kbag['id']}"))["status"] == "open"


async def test_present_means_present_at_the_draw(api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    stay, leave = await api.guest("stay"), await api.guest("leave")
    clients = []
    for who in (stay, leave):
        c = SioClient()
        await c.connect(server.url, who["token"])
        assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        clients.append(c)
    try:
        bag = await _bag(api, s["token"], room["id"], winners=2, duration_s=2, allow_guests=True)
        for c in clients:
            assert (await c.call("lucky:enter", {"bag_id": bag["id"]}))["ok"]
        assert (await clients[1].call("room:leave", {"room_id": room["id"]}))["ok"]
        final = await _drawn(api, bag["id"])
    finally:
        for c in clients:
            await c.close()
    assert final["entrants"] == [stay["user"]["id"]] == final["winners"]


async def test_a_bag_redis_forgot_is_still_drawn(api: Api, server: RunningServer) -> None:
    from live.core import keys

    s = await api.streamer()
    room = await api.live_room(s["token"])
    bag = await _bag(api, s["token"], room["id"], duration_s=1)
    await server.services.redis.zrem(keys.BAGS_DUE, bag["id"])  # as if Redis lost the due set
    final = await _drawn(api, bag["id"], timeout=20)
    assert final["status"] == "drawn" and final["entrants"] == [] and final["winners"] == []


# --- two processes ----------------------------------------------------------------------------
@pytest.fixture
async def second_process(redis_server: RedisServer, database: TestDatabase,
                         server: RunningServer) -> AsyncIterator[str]:
    """Another server process on the same Redis and database (and signing secret) as ``server``."""
    env = {"LIVE_REDIS_URL": redis_server.url, "LIVE_DATABASE_URL": database.url(),
           "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="live-fans-"), "LIVE_SECRET": server.settings.secret}
    port = free_port()
    proc = spawn_server(port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, 60)
        yield url
    finally:
        stop_server(proc)


@pytest.mark.slow
async def test_two_processes_notify_followers_and_draw_each_bag_once(
        api: Api, server: RunningServer, second_process: str) -> None:
    s = await api.streamer()
    room = await api.ok("POST", "/api/rooms", json={"title": "two"}, token=s["token"])
    people = [await api.guest(f"p{i}") for i in range(6)]
    for p in people[:4]:
        await api.ok("POST", f"/api/users/{s['user']['id']}/follow", token=p["token"])
    urls = [server.url, second_process]
    clients = []
    for i, p in enumerate(people):  # p0, p2, p4 on this process; p1, p3, p5 on the other
        c = SioClient()
        await c.connect(urls[i % 2], p["token"])
        clients.append(c)
    try:
        await api.ok("POST", f"/api/rooms/{room['id']}/live", token=s["token"])
        for c in clients[:4]:  # followers, on either process
            assert (await c.wait_for("notify:live", timeout=5))["room_id"] == room["id"]
        await asyncio.sleep(0.5)
        assert clients[4].received("notify:live") == [] and clients[5].received("notify:live") == []

        for c in clients:
            assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        bags = [await _bag(api, s["token"], room["id"], winners=2, duration_s=2, allow_guests=True)
                for _ in range(4)]
        for bag in bags:
            for c in clients:
                assert (await c.call("lucky:enter", {"bag_id": bag["id"]}))["ok"]
        for bag in bags:
            final = await _drawn(api, bag["id"])
            assert final["status"] == "drawn"
            assert final["entrants"] == sorted(p["user"]["id"] for p in people)
            assert final["winners"] == draw_winners(final["seed"], final["entrants"], 2)
            assert hashlib.sha256(bytes.fromhex(final["seed"])).hexdigest() == bag["commitment"]
        await asyncio.sleep(1.0)  # a second draw, if any, would push a second lucky:drawn by now
        for c in clients:
            assert sorted(d["id"] for d in c.received("lucky:drawn")) == sorted(b["id"] for b in bags)
    finally:
        for c in clients:
            await c.close()
    async with server.services.db() as sess:
        prize_cards = (await sess.execute(select(func.count()).select_from(Card).where(
            Card.room_id == room["id"], Card.audience == "lucky_bag"))).scalar()
        prize_orders = (await sess.execute(select(func.count()).select_from(Order).where(
            Order.room_id == room["id"], Order.amount_cents == 0))).scalar()
    assert prize_cards == 4 and prize_orders == 8


def test_the_documented_snippet_recomputes_the_same_winners() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "fans.md").read_text(encoding="utf-8")
    snippet = doc.split("```python", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(snippet, scope)  # our own documentation, checked to match the code
    people = [f"id{i}" for i in range(13)]
    for seed in seeds(200, "doc"):
        assert scope["winners"](seed, people, 4) == draw_winners(seed, people, 4)
