"""The fans parts of the pages in a real Chromium: follow from the room page, the lucky bag's
countdown, entry, result and in-browser verification; the studio's fans panel."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests import test_browser
from tests.browser_support import DESKTOP, PHONE, Pages, screenshot
from tests.support import Api
from tests.test_browser import studio_signed_in

pytestmark = pytest.mark.browser
pages = test_browser.pages  # the same fixture: Chromium on the test server, failing on JS errors


async def test_follow_enter_a_lucky_bag_and_verify_it(api: Api, pages: Pages) -> None:
    s = await api.streamer()
    room = await api.live_room(s["token"], title="fans night")
    page = await pages.open(f"/room/{room['id']}", PHONE)
    await expect(page.get_by_test_id("follower-count")).to_have_text("0")
    await page.get_by_test_id("follow-button").click()
    await expect(page.get_by_test_id("follower-count")).to_have_text("1")
    await expect(page.get_by_test_id("follow-button")).to_have_text("已关注")
    assert (await api.ok("GET", f"/api/users/{s['user']['id']}"))["followers"] == 1
    await api.ok("POST", f"/api/rooms/{room['id']}/lucky-bags", token=s["token"], json={
        "title": "福袋", "prize": "口红", "winners": 1, "duration_s": 4, "condition": "present",
        "allow_guests": True})
    await expect(page.get_by_test_id("lucky-countdown")).to_be_visible()
    await page.get_by_test_id("lucky-enter").click()
    await expect(page.get_by_test_id("lucky-enter")).to_have_text("已参与，等待开奖")
    await expect(page.get_by_test_id("lucky-result")).to_have_text("恭喜中奖！奖品订单已生成", timeout=15000)
    await page.get_by_test_id("lucky-verify").locator("summary").click()
    await expect(page.get_by_test_id("lucky-verified")).to_contain_text("✓", timeout=5000)
    await screenshot(page, "fans-room-lucky-bag")


async def test_studio_fans_panel_opens_a_bag_and_shows_stats(pages: Pages) -> None:
    studio = await studio_signed_in(pages, DESKTOP)
    panel = studio.get_by_test_id("fans-panel")
    await expect(panel).to_be_visible()
    await expect(studio.get_by_test_id("shop-stats")).to_contain_text("粉丝 0")
    await studio.get_by_test_id("lucky-title").fill("福袋")
    await studio.get_by_test_id("lucky-open").click()
    await expect(panel.locator(".feedback")).to_have_text("请先开播")  # no room yet
    await screenshot(studio, "fans-studio-panel")
