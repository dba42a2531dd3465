"""Flash-buy: listing, buying, limits, idempotency, order lifecycle — real Redis, real SQL."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from tests.flash_support import list_card, photo, rid, setup_sale
from tests.support import Api, RunningServer, SioClient


async def test_list_card_multipart_and_json_errors(api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    card = await list_card(api, s["token"], room["id"], price="19.9", stock=5, title="羊毛围巾", limit_per_user=2)
    assert card["price"] == "19.90" and card["stock"] == 5 and card["left"] == 5 and card["sold"] == 0
    assert card["status"] == "on_sale" and card["limit_per_user"] == 2 and card["room_id"] == room["id"]
    status, img = await api.get(card["image_url"])
    assert status == 200 and Image.open(io.BytesIO(img)).format == "JPEG"
    snap = await api.ok("GET", f"/api/rooms/{room['id']}")
    assert snap["pinned_card_id"] == card["id"] and [c["id"] for c in snap["cards"]] == [card["id"]]
    # JSON without an image or snapshot → INVALID
    for bad in ({"price": "1.00", "stock": 1}, {"price": "0", "stock": 1, "snapshot": True},
                {"price": "1.001", "stock": 1, "snapshot": True}, {"price": "abc", "stock": 1, "snapshot": True},
                {"price": "1.00", "stock": 0, "snapshot": True}, {"price": "1.00", "stock": 1.5, "snapshot": True},
                {"price": True, "stock": 1, "snapshot": True}, {"stock": 1, "snapshot": True}):
        status, body = await api.post(f"/api/rooms/{room['id']}/cards", json=bad, token=s["token"])
        assert status == 400 and body["error"]["code"] == "INVALID", (bad, body)
    # snapshot without live video → a clear error, nothing created
    status, body = await api.post(f"/api/rooms/{room['id']}/cards",
                                  json={"price": "1.00", "stock": 1, "snapshot": True}, token=s["token"])
    assert status in (409, 404) and body["error"]["code"] in ("CONFLICT", "NOT_FOUND")
    assert len((await api.ok("GET", f"/api/rooms/{room['id']}"))["cards"]) == 1


async def test_only_the_rooms_streamer_lists(api: Api) -> None:
    s = await api.streamer()
    other = await api.streamer()
    viewer = await api.guest()
    room = await api.live_room(s["token"])
    await list_card(api, other["token"], room["id"], expect=403)
    await list_card(api, viewer["token"], room["id"], expect=403)


@pytest.mark.parametrize("image,reason", [(b"not an image", "valid"), (b"GIF89a" + b"\0" * 100, "valid"),
                                          (photo("GIF"), "JPEG, PNG and WebP"), (photo(size=(8, 8)), "16x16")])
async def test_bad_uploads_are_invalid(api: Api, image: bytes, reason: str) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    body = await list_card(api, s["token"], room["id"], image=image, expect=400)
    assert body["error"]["code"] == "INVALID" and reason in body["error"]["message"]


async def test_decompression_bomb_refused(api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    big = Image.new("1", (12000, 12000))  # 144 Mpx, a few KB as PNG
    out = io.BytesIO()
    big.save(out, "PNG")
    body = await list_card(api, s["token"], room["id"], image=out.getvalue(), expect=400)
    assert body["error"]["code"] == "INVALID"


async def test_exif_is_stripped(api: Api) -> None:
    img = Image.new("RGB", (40, 30), (10, 200, 10))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 6  # orientation: rotate 90
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif.tobytes())
    s = await api.streamer()
    room = await api.live_room(s["token"])
    card = await list_card(api, s["token"], room["id"], image=out.getvalue())
    _, data = await api.get(card["image_url"])
    shown = Image.open(io.BytesIO(data))
    assert b"SecretCam" not in data and not shown.getexif()
    assert shown.size == (30, 40)  # turned upright


async def test_buy_http_and_socket_and_idempotency(api: Api, server: RunningServer) -> None:
    _s, _room, card = await setup_sale(api, stock=3, limit_per_user=2)
    v = await api.guest()
    req = rid()
    r1 = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": req}, token=v["token"])
    assert r1["ok"] is True and r1["left"] == 2 and r1["order"]["status"] == "pending_payment"
    assert r1["order"]["amount"] == "19.90" and r1["order"]["qty"] == 1 and r1["order"]["card_id"] == card["id"]
    r2 = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": req}, token=v["token"])
    assert r2["order"]["id"] == r1["order"]["id"]
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 2
    c = SioClient()
    await c.connect(server.url, v["token"])
    try:
        ack = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": req})
        assert ack["ok"] and ack["order"]["id"] == r1["order"]["id"]  # same request over the socket
        ack = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
        assert ack["ok"] and ack["left"] == 1
        ack = await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
        assert ack == {"ok": False, "error": ack["error"]} and ack["error"]["code"] == "LIMIT_EXCEEDED"
    finally:
        await c.close()
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 1


async def test_sold_out_and_not_on_sale_codes(api: Api, server: RunningServer) -> None:
    _s, _room, card = await setup_sale(api, stock=1)
    a, b = await api.guest("a"), await api.guest("b")
    await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()}, token=a["token"])
    status, body = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                                  token=b["token"])
    assert body["error"]["code"] == "SOLD_OUT" and status == 409
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["status"] == "sold_out"
    # scheduled sale: not yet
    s3 = await api.streamer()
    room3 = await api.live_room(s3["token"])
    card3 = await list_card(api, s3["token"], room3["id"], starts_at=time.time() + 60, duration_s=30)
    assert card3["status"] == "scheduled"
    status, body = await api.post(f"/api/cards/{card3['id']}/buy", json={"qty": 1, "request_id": rid()},
                                  token=b["token"])
    assert body["error"]["code"] == "NOT_ON_SALE"


async def test_close_restock_pin_by_owner_only(api: Api) -> None:
    s, _room, card = await setup_sale(api, stock=1)
    other = await api.streamer()
    v = await api.guest()
    for path in ("close", "pin"):
        status, body = await api.post(f"/api/cards/{card['id']}/{path}", token=other["token"])
        assert status == 403, body
    await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()}, token=v["token"])
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["status"] == "sold_out"
    c = await api.ok("POST", f"/api/cards/{card['id']}/restock", json={"add": 2}, token=s["token"])
    assert c["stock"] == 3 and c["left"] == 2 and c["status"] == "on_sale"
    c = await api.ok("POST", f"/api/cards/{card['id']}/close", token=s["token"])
    assert c["status"] == "closed"
    status, body = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                                  token=v["token"])
    assert body["error"]["code"] == "NOT_ON_SALE"


@pytest.mark.parametrize("payload", [None, 3, "x", [], {}, {"card_id": "x"}, {"card_id": None, "qty": 1},
                                     {"card_id": "c", "qty": "1", "request_id": "r"},
                                     {"card_id": "c", "qty": 0, "request_id": "r"},
                                     {"card_id": "c", "qty": 1, "request_id": "bad id with spaces"},
                                     {"card_id": "c", "qty": 1, "request_id": "r" * 100}])
async def test_bad_buy_payloads_invalid(server: RunningServer, api: Api, payload: object) -> None:
    v = await api.guest()
    c = SioClient()
    await c.connect(server.url, v["token"])
    try:
        ack = await c.call("flash:buy", payload)
        assert ack["ok"] is False and ack["error"]["code"] == "INVALID", ack
        assert c.sio.connected
    finally:
        await c.close()


async def test_unknown_card_is_not_found(server: RunningServer, api: Api) -> None:
    v = await api.guest()
    status, body = await api.post("/api/cards/nope/buy", json={"qty": 1, "request_id": rid()}, token=v["token"])
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_card_pushed_to_room_and_stock_coalesced(server: RunningServer, api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"])
    viewers = [await api.guest(f"v{i}") for i in range(3)]
    clients = [SioClient() for _ in viewers]
    try:
        for c, v in zip(clients, viewers, strict=True):
            await c.connect(server.url, v["token"])
            assert (await c.call("room:join", {"room_id": room["id"]}))["ok"]
        card = await list_card(api, s["token"], room["id"], stock=10)
        for c in clients:
            pushed = await c.wait_for("flash:card", timeout=3)
            assert pushed["id"] == card["id"] and pushed["left"] == 10
        acks = await asyncio.gather(*[c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()})
                                      for c in clients])
        assert all(a["ok"] for a in acks)
        last = await clients[0].wait_for("flash:stock", timeout=3, where=lambda d: d["left"] == 7)
        assert last == {"card_id": card["id"], "left": 7, "sold": 3}
        assert len(clients[0].received("flash:stock")) <= 3
    finally:
        for c in clients:
            await c.close()


async def test_pay_cancel_and_visibility(server: RunningServer, api: Api) -> None:
    s, _room, card = await setup_sale(api, stock=2)
    a, b = await api.guest("a"), await api.guest("b")
    oa = (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                       token=a["token"]))["order"]
    ob = (await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                       token=b["token"]))["order"]
    status, body = await api.get(f"/api/orders/{oa['id']}", token=b["token"])
    assert status == 404
    assert (await api.ok("GET", f"/api/orders/{oa['id']}", token=s["token"]))["id"] == oa["id"]
    status, body = await api.post(f"/api/orders/{oa['id']}/pay", token=b["token"])
    assert status == 404
    paid = await api.ok("POST", f"/api/orders/{oa['id']}/pay", token=a["token"])
    assert paid["status"] == "paid"
    cancelled = await api.ok("POST", f"/api/orders/{ob['id']}/cancel", token=b["token"])
    assert cancelled["status"] == "cancelled"
    card_now = await api.ok("GET", f"/api/cards/{card['id']}")
    assert card_now["left"] == 1 and card_now["status"] == "on_sale"
    mine = await api.ok("GET", "/api/me/orders", token=a["token"])
    assert [(o["id"], o["status"]) for o in mine] == [(oa["id"], "paid")]
    # v2: cancelling a paid order that has not shipped refunds it at once, units back.
    refunded = await api.ok("POST", f"/api/orders/{oa['id']}/cancel", token=a["token"])
    assert refunded["status"] == "refunded" and refunded["refunded_amount"] == oa["amount"]
    assert (await api.ok("GET", f"/api/cards/{card['id']}"))["left"] == 2
    audit = await api.ok("POST", f"/api/cards/{card['id']}/audit", json={"order_ids": [oa["id"], ob["id"]]},
                         token=s["token"])
    assert audit["invariant_ok"] and audit["missing_order_ids"] == [] and audit["oversold"] == 0


async def test_expiry_returns_stock_and_pay_after_expiry_fails(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.support import run_app

    async with run_app(settings_factory(payment_timeout_s=0.5, sweeper_interval_s=0.1)) as srv, Api(srv.url) as api:
        _s, _room, card = await setup_sale(api, stock=1)
        v = await api.guest()
        c = SioClient()
        await c.connect(srv.url, v["token"])
        try:
            order = (await c.call("flash:buy", {"card_id": card["id"], "qty": 1, "request_id": rid()}))["order"]
            update = await c.wait_for("order:update", timeout=5, where=lambda d: d["status"] == "expired")
            assert update["id"] == order["id"]
        finally:
            await c.close()
        card_now = await api.ok("GET", f"/api/cards/{card['id']}")
        assert card_now["left"] == 1 and card_now["status"] == "on_sale"
        status, body = await api.post(f"/api/orders/{order['id']}/pay", token=v["token"])
        assert status == 409 and body["error"]["code"] == "CONFLICT"


async def test_private_trading_in_card_title_or_photo_is_blocked(api: Api, server: RunningServer) -> None:
    import segno

    s = await api.streamer()
    room = await api.live_room(s["token"])
    body = await list_card(api, s["token"], room["id"], title="加微信 abc12345 更便宜", expect=422)
    assert body["error"]["code"] == "BLOCKED" and body["error"]["reason"] == "private_trading"
    qr = io.BytesIO()
    segno.make("https://u.wechat.com/abc").save(qr, kind="png", scale=8, border=4)
    body = await list_card(api, s["token"], room["id"], image=qr.getvalue(), expect=422)
    assert body["error"]["code"] == "BLOCKED" and body["error"]["reason"] == "private_trading"
    assert (await api.ok("GET", f"/api/rooms/{room['id']}"))["cards"] == []
    from sqlalchemy import select

    from live.core.models import Violation

    await asyncio.sleep(0.3)  # violations reach SQL through the chat stream
    async with server.services.db() as session:
        kinds = list((await session.execute(select(Violation.kind).where(
            Violation.user_id == s["user"]["id"]))).scalars())
    assert sorted(kinds) == ["card", "image"]


async def test_retry_after_sell_out_returns_the_order(api: Api, server: RunningServer) -> None:
    s, room, card = await setup_sale(api, stock=1)
    a, b = await api.guest("a"), await api.guest("b")
    req = rid()
    first = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": req}, token=a["token"])
    status, body = await api.post(f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": rid()},
                                  token=b["token"])
    assert body["error"]["code"] == "SOLD_OUT"  # now this process knows: fast reject
    again = await api.ok("POST", f"/api/cards/{card['id']}/buy", json={"qty": 1, "request_id": req}, token=a["token"])
    assert again["order"]["id"] == first["order"]["id"]
