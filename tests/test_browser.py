"""The web pages in a real Chromium against a real server: the studio goes live with the
(fake) camera and lists a product from a snapshot of its live picture; a viewer on a phone
sees the card pop in, buys, pays, and sees the stock drop; the guard's refusal of a chat
message is explained; the moderator works the reports queue. Screenshots of every page go
to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Page, expect

from tests.browser_support import DESKTOP, PHONE, Pages, chromium, screenshot
from tests.support import Api, RunningServer, run_app

pytestmark = pytest.mark.browser


@pytest.fixture
async def pages(server: RunningServer) -> AsyncIterator[Pages]:
    async with chromium(server.url) as p:
        yield p
        assert not p.errors, "JavaScript errors in the pages:\n" + "\n".join(p.errors)


async def studio_signed_in(pages: Pages, device: dict[str, object] = DESKTOP) -> Page:
    studio = await pages.open("/studio", device, permissions=["camera", "microphone"])
    await studio.get_by_label("用户名").fill(f"s_{uuid.uuid4().hex[:8]}")
    await studio.get_by_label("密码").fill("correct horse battery")
    await studio.get_by_role("button", name="注册主播").click()
    await expect(studio.get_by_role("button", name="开播")).to_be_visible()
    return studio


async def go_live(studio: Page, title: str) -> str:
    """Go live with the fake camera, publishing over WHIP; returns the room id."""
    await studio.get_by_label("直播标题").fill(title)
    await studio.get_by_role("button", name="开播").click()
    await expect(studio.locator("#live-status")).to_have_text("直播中")
    await expect(studio.locator("#publish-status")).to_have_text("正在推流（WHIP）", timeout=15000)
    href = await studio.locator("#viewer-link").get_attribute("href")
    assert href and href.startswith("/room/")
    return href.removeprefix("/room/")


async def take_snapshot(studio: Page) -> None:
    """Press the snapshot button until the server has a decoded frame of the live video."""
    deadline = time.monotonic() + 20
    while True:
        await studio.get_by_test_id("list-snapshot").click()
        feedback = studio.locator("#list-feedback")
        await expect(feedback).to_be_visible()
        if await studio.locator("#image-preview").get_attribute("data-mode") == "snapshot":
            return
        assert time.monotonic() < deadline, f"no snapshot of the live video: {await feedback.text_content()}"
        await asyncio.sleep(0.5)


async def test_studio_lists_from_snapshot_and_phone_viewer_buys(pages: Pages) -> None:
    studio = await studio_signed_in(pages)
    room_id = await go_live(studio, "新品首发 · 闪电购")

    viewer = await pages.open(f"/room/{room_id}", PHONE)
    await expect(viewer.locator("#room-title")).to_have_text("新品首发 · 闪电购")
    # Joined (the join ack rendered the empty card slot), so the card push will reach us.
    await expect(viewer.get_by_text("主播还没有上架商品")).to_be_visible()
    # The live video plays on the phone (WHEP, or HLS if WebRTC were refused).
    await expect(viewer.locator("#stage-status")).to_be_hidden(timeout=20000)
    assert await viewer.locator("#video").get_attribute("data-mode") == "webrtc"
    assert await viewer.locator("#video").evaluate("v => v.videoWidth > 0 && v.readyState >= 2")

    await take_snapshot(studio)
    snap = await studio.locator("#image-preview").evaluate("e => getComputedStyle(e).backgroundImage")
    assert snap.startswith('url("blob:'), snap
    await studio.get_by_test_id("list-price").fill("19.90")
    await studio.get_by_test_id("list-stock").fill("5")
    async with studio.expect_response(lambda r: r.url.endswith(f"/api/rooms/{room_id}/cards")) as created:
        await studio.get_by_test_id("list-submit").click()
    response = await created.value
    assert response.status == 201, await response.text()
    card_json = await response.json()
    listed = time.monotonic()

    # The card pops in on the phone within a second of being listed.
    card = viewer.get_by_test_id("card")
    await expect(card).to_be_visible(timeout=1000)
    assert time.monotonic() - listed < 1.0
    await expect(viewer.get_by_test_id("card-price")).to_have_text("¥19.90")
    await expect(viewer.get_by_test_id("card-left")).to_have_text("5")
    image = viewer.locator(".card-photo")
    assert await image.get_attribute("src") == card_json["image_url"]
    await expect(image).to_have_js_property("complete", True)
    assert await image.evaluate("i => i.naturalWidth > 0")
    await screenshot(viewer, "viewer-phone-card")

    # Buy: instant feedback, an order awaiting payment, the stock drops.
    await viewer.get_by_test_id("buy-button").click()
    status = viewer.get_by_test_id("order-status")
    await expect(status).to_contain_text("待支付")
    await expect(status).to_contain_text("¥19.90")
    await expect(viewer.locator("#buy-feedback")).to_contain_text("抢到了")
    await expect(viewer.get_by_test_id("card-left")).to_have_text("4")
    await expect(viewer.locator("#sold-total")).to_have_text("1")

    # The streamer's live sales follow (flash:stock).
    sale = studio.locator(f".sale[data-card-id='{card_json['id']}']")
    await expect(sale.locator(".sold")).to_have_text("1")
    await expect(sale.locator(".left")).to_have_text("4")

    # Limit per user is 1 by default: a second tap is refused and says why.
    await viewer.get_by_test_id("buy-button").click()
    await expect(viewer.locator("#buy-feedback")).to_have_text("超出限购数量")
    await expect(viewer.get_by_test_id("card-left")).to_have_text("4")

    # Simulated payment.
    await status.get_by_role("button", name="去支付").click()
    await expect(status).to_contain_text("已支付")
    await expect(status.get_by_role("button", name="去支付")).to_have_count(0)
    await viewer.get_by_role("tab", name="我的订单").click()
    await expect(viewer.locator("#orders-list .order-row")).to_have_count(1)
    await expect(viewer.locator("#orders-list")).to_contain_text("已支付")
    await viewer.get_by_role("tab", name="聊天").click()
    await screenshot(viewer, "viewer-phone-paid")
    await screenshot(studio, "studio-desktop", full_page=True)

    # English on request; the choice sticks on this device.
    await viewer.locator("[data-lang-toggle]").click()
    await expect(status).to_contain_text("Paid")
    await expect(viewer.get_by_test_id("buy-button")).to_have_text("Buy now")
    await viewer.reload()
    await expect(viewer.get_by_test_id("order-status")).to_contain_text("Paid")
    await screenshot(viewer, "viewer-phone-en")

    # The same room on a desktop.
    desktop = await pages.open(f"/room/{room_id}", DESKTOP)
    await expect(desktop.get_by_test_id("card")).to_be_visible()
    await expect(desktop.get_by_test_id("card-left")).to_have_text("4")
    await expect(desktop.locator("#stage-status")).to_be_hidden(timeout=20000)
    await screenshot(desktop, "viewer-desktop")


async def test_viewer_falls_back_to_hls_when_webrtc_is_full(settings_factory) -> None:  # type: ignore[no-untyped-def]
    # No WebRTC playback slots on this server: WHEP answers UNAVAILABLE, the page plays HLS.
    async with run_app(settings_factory(whep_max_viewers=0)) as srv, chromium(srv.url) as pages:
        studio = await studio_signed_in(pages)
        room_id = await go_live(studio, "HLS 回退")
        viewer = await pages.open(f"/room/{room_id}", PHONE)
        video = viewer.locator("#video")
        await expect(video).to_have_attribute("data-mode", "hls", timeout=30000)
        await expect(viewer.locator("#stage-status")).to_be_hidden()
        # Real frames decoded from the HLS segments, not just a source attached.
        await viewer.wait_for_function("() => { const v = document.querySelector('#video');"
                                       " return v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0; }",
                                       timeout=30000)
        await screenshot(viewer, "viewer-phone-hls")
        assert not pages.errors, "JavaScript errors in the pages:\n" + "\n".join(pages.errors)


def png(path: Path, colour: tuple[int, int, int] = (230, 120, 40)) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), colour).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


async def test_studio_on_a_phone_lists_from_a_photo(pages: Pages, tmp_path: Path) -> None:
    studio = await studio_signed_in(pages, PHONE)
    room_id = await go_live(studio, "手机开播")
    viewer = await pages.open(f"/room/{room_id}", PHONE)
    await expect(viewer.get_by_text("主播还没有上架商品")).to_be_visible()

    await studio.get_by_test_id("list-photo").set_input_files(str(png(tmp_path / "mug.png")))
    await expect(studio.locator("#image-preview")).to_have_attribute("data-mode", "photo")
    await studio.get_by_test_id("list-price").fill("9.9")
    await studio.get_by_test_id("list-stock").fill("2")
    await studio.get_by_test_id("list-submit").click()
    await expect(studio.locator("#list-feedback")).to_contain_text("已上架")
    await expect(viewer.get_by_test_id("card-price")).to_have_text("¥9.90", timeout=1000)
    await expect(viewer.get_by_test_id("card-left")).to_have_text("2")
    await screenshot(studio, "studio-phone", full_page=True)

    # Bad input is caught before it is sent, with the reason next to the form.
    await studio.get_by_test_id("list-price").fill("1.999")
    await studio.get_by_test_id("list-stock").fill("3")
    await studio.get_by_test_id("list-photo").set_input_files(str(png(tmp_path / "b.png", (20, 90, 200))))
    await studio.get_by_test_id("list-submit").click()
    await expect(studio.locator("#list-feedback")).to_have_text("价格需大于 0，最多两位小数")

    # Close: the viewer's button says so and cannot be pressed.
    await studio.locator(".sale").first.get_by_role("button", name="下架").click()
    await expect(viewer.get_by_test_id("buy-button")).to_have_text("已下架")
    await expect(viewer.get_by_test_id("buy-button")).to_be_disabled()

    # A scheduled sale: the new card is pinned with a countdown and cannot be bought yet.
    await studio.get_by_test_id("list-price").fill("29")
    await studio.get_by_text("更多选项").click()
    await studio.get_by_label("几秒后开抢").fill("90")
    await studio.get_by_label("商品名称").fill("限量马克杯")
    await studio.get_by_test_id("list-submit").click()
    await expect(studio.locator("#list-feedback")).to_contain_text("已上架")
    await expect(viewer.locator(".card-title")).to_have_text("限量马克杯")
    await expect(viewer.locator(".card-timer")).to_contain_text(re.compile(r"距开抢 1:[23]\d"))
    await expect(viewer.get_by_test_id("buy-button")).to_have_text("未开售")
    await expect(viewer.get_by_test_id("buy-button")).to_be_disabled()
    await screenshot(viewer, "viewer-phone-countdown")

    # Chat moderation from the studio: delete reaches the viewer, a mute is explained.
    await viewer.get_by_test_id("chat-input").fill("主播好！")
    await viewer.get_by_test_id("chat-send").click()
    await expect(viewer.get_by_test_id("chat-message")).to_have_count(1)
    row = studio.locator(".modmsg", has_text="主播好！")
    await row.get_by_role("button", name=re.compile("^删除")).click()
    await expect(viewer.get_by_test_id("chat-message")).to_have_count(0)
    await expect(row).to_have_count(0)
    await viewer.get_by_test_id("chat-input").fill("怎么删了")
    await viewer.get_by_test_id("chat-send").click()
    row = studio.locator(".modmsg", has_text="怎么删了")
    await row.get_by_role("button", name=re.compile("^禁言")).click()
    await expect(studio.locator("#chat-feedback")).to_have_text("已处理")
    await viewer.get_by_test_id("chat-input").fill("还能说话吗")
    await viewer.get_by_test_id("chat-send").click()
    await expect(viewer.locator("#chat-feedback")).to_have_text("你已被禁言，暂时不能发言")
    await expect(viewer.get_by_test_id("chat-message")).to_have_count(1)
    # A ban removes the viewer from the room and says so.
    await row.get_by_role("button", name=re.compile("^封禁")).click()
    await expect(viewer.locator("#banner")).to_have_text("你已被移出该直播间")
    await expect(viewer.get_by_test_id("chat-input")).to_be_disabled()
    await expect(viewer.get_by_test_id("buy-button")).to_be_disabled()


async def test_blocked_chat_message_shows_why(pages: Pages, api: Api) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"], "聊天测试")
    viewer = await pages.open(f"/room/{room['id']}", PHONE)
    await expect(viewer.get_by_text("主播还没有上架商品")).to_be_visible()

    await viewer.get_by_test_id("chat-input").fill("这件好看！")
    await viewer.get_by_test_id("chat-send").click()
    await expect(viewer.get_by_test_id("chat-message")).to_have_count(1)
    await expect(viewer.get_by_test_id("chat-message")).to_contain_text("这件好看！")
    await expect(viewer.get_by_test_id("chat-input")).to_have_value("")

    await viewer.get_by_test_id("chat-input").fill("加我微信 便宜二十")
    await viewer.get_by_test_id("chat-send").click()
    feedback = viewer.locator("#chat-feedback")
    await expect(feedback).to_be_visible()
    await expect(feedback).to_contain_text("请勿私下交易")
    await expect(feedback).to_have_attribute("data-reason", "private_trading")
    # Not sent, not shown; the text stays so it can be fixed.
    await expect(viewer.get_by_test_id("chat-message")).to_have_count(1)
    await expect(viewer.get_by_test_id("chat-input")).to_have_value("加我微信 便宜二十")
    await screenshot(viewer, "viewer-phone-chat-blocked")


async def test_moderator_resolves_a_report_and_home_lists_live_rooms(pages: Pages, api: Api,
                                                                     server: RunningServer) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"], "举报测试直播间")
    v = await api.guest("路人")
    report = await api.ok("POST", "/api/reports", token=v["token"],
                          json={"target": "room", "target_id": room["id"], "reason": "疑似引导私下交易"})
    admin = server.settings.admin_token

    home = await pages.open("/", PHONE)
    tile = home.locator(f"a.room-tile[href='/room/{room['id']}']")
    await expect(tile).to_contain_text("举报测试直播间")
    await screenshot(home, "home-phone")
    home_desktop = await pages.open("/", DESKTOP)
    await expect(home_desktop.locator(f"a.room-tile[href='/room/{room['id']}']")).to_be_visible()
    await screenshot(home_desktop, "home-desktop")

    mod = await pages.open("/moderation", DESKTOP)
    await mod.get_by_label("审核令牌").fill(admin)
    await mod.get_by_role("button", name="使用令牌").click()
    item = mod.locator(f".report-item[data-id='{report['id']}']")
    await expect(item).to_contain_text("疑似引导私下交易")
    await expect(item).to_contain_text(room["id"])
    stats = await api.ok("GET", "/api/moderation/stats", token=admin)
    opened = mod.locator(".stat", has_text="举报 · 待处理").locator("b")
    await expect(opened).to_have_text(str(stats["reports"]["open"]))
    await screenshot(mod, "moderation-desktop", full_page=True)

    await item.get_by_role("button", name="忽略").click()
    await expect(item).to_have_count(0)
    await expect(mod.locator("#mod-feedback")).to_contain_text("已处理")
    await expect(opened).to_have_text(str(stats["reports"]["open"] - 1))
    still_open = await api.ok("GET", "/api/reports?status=open", token=admin)
    assert report["id"] not in [r["id"] for r in still_open]


async def test_pages_and_assets_are_served_with_cache_headers(api: Api) -> None:
    for path in ("/", "/room/anything", "/studio", "/moderation"):
        status, body = await api.get(path)
        assert status == 200 and b"<!doctype html>" in body, path
    async with api.session.get(api.base + "/room/x") as r:
        assert r.headers["Cache-Control"] == "no-cache"
        etag = r.headers["ETag"]
        html = await r.text()
    async with api.session.get(api.base + "/room/x", headers={"If-None-Match": etag}) as r:
        assert r.status == 304
    asset = re.search(r'src="(/static/v/[0-9a-f]+/js/room\.js)"', html)
    assert asset, html
    async with api.session.get(api.base + asset.group(1)) as r:
        assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
        assert r.headers["Content-Type"].startswith("text/javascript")
    vendor = re.search(r'"socket.io-client": "(/static/vendor/socket\.io-client@[^"]+)"', html)
    assert vendor, "the import map names the Socket.IO client from web/node_modules (make web-deps)"
    async with api.session.get(api.base + vendor.group(1)) as r:
        assert r.status == 200 and "immutable" in r.headers["Cache-Control"], "run make web-deps"
    for bad in ("/static/vendor/socket.io-client@1/package.json", "/static/..%2f..%2fpyproject.toml",
                "/static/v/x/..%2F..%2F..%2Flive%2Fapp.py"):
        status, _ = await api.get(bad)
        assert status == 404, bad
