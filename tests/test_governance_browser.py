"""The public disclosure page (/transparency) in a real Chromium: no sign-in, this month's
figures as the API gives them, the penalty notice naming the shop, Chinese and English."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests import test_browser
from tests.browser_support import DESKTOP, Pages, screenshot
from tests.support import Api, RunningServer

pytestmark = pytest.mark.browser
pages = test_browser.pages


async def test_transparency_page_shows_the_month(pages: Pages, api: Api, server: RunningServer) -> None:
    s = await api.streamer()
    await api.ok("POST", "/api/moderation/violations", json={"user_id": s["user"]["id"], "kind": "counterfeit",
                                                              "note": "fake"}, token="test-admin-token")
    page = await pages.open("/transparency", DESKTOP)
    notices = page.get_by_test_id("transparency-notices")
    await expect(notices).to_contain_text(s["user"]["name"])
    await expect(notices).to_contain_text("假冒商品")
    await expect(page.get_by_test_id("transparency-violations").locator('[data-key="shops_penalised"] b')) \
        .not_to_have_text("0")
    await page.locator("[data-lang-toggle]").first.click()
    await expect(notices).to_contain_text("Counterfeit")
    await expect(notices).to_contain_text("No listing")
    await screenshot(page, "transparency")


async def test_moderator_approves_and_overturns_and_studio_shows_standing(pages: Pages, api: Api,
                                                                          server: RunningServer) -> None:
    import json

    from tests.test_aftersales_browser import open_as

    s = await api.streamer()
    uid = s["user"]["id"]
    app = await api.ok("POST", "/api/shop/application", json={"shop_name": "茶香小铺", "category": "茶叶"},
                       token=s["token"])
    await api.ok("POST", "/api/shop/deposit", json={"amount": "1000.00"}, token=s["token"])
    await api.ok("POST", "/api/moderation/violations", json={"user_id": uid, "kind": "counterfeit", "note": "假货"},
                 token="test-admin-token")
    # The shop sees its standing and ledger in the studio, and appeals from there.
    studio = await open_as(pages, "/studio", DESKTOP, {"live.session.streamer": json.dumps(s)})
    standing = studio.get_by_test_id("standing")
    await expect(standing.locator('[data-key="points"] b')).to_have_text("24", timeout=10000)
    await expect(standing).to_contain_text("禁止上架")
    await expect(studio.get_by_test_id("ledger").locator('[data-key="deposit"] b')).to_have_text("¥0.00")
    await studio.get_by_test_id("violations").locator("input").fill("有进货凭证")
    await studio.get_by_test_id("appeal").click()

    mod = await pages.open("/moderation", DESKTOP)
    await mod.get_by_label("审核令牌").fill(server.settings.admin_token)
    await mod.get_by_role("button", name="使用令牌").click()
    item = mod.locator(f"[data-testid='application'][data-id='{app['id']}']")
    await expect(item).to_contain_text("茶香小铺")
    await item.get_by_test_id("application-note").fill("资料齐全")
    await item.get_by_test_id("application-approve").click()
    await expect(item).to_have_count(0)
    appeal = mod.get_by_test_id("appeal").filter(has_text="有进货凭证")
    await expect(appeal).to_have_count(1, timeout=10000)
    await appeal.get_by_test_id("appeal-note").fill("凭证属实")
    await screenshot(mod, "governance-moderation", full_page=True)
    await appeal.get_by_test_id("appeal-overturn").click()
    await expect(appeal).to_have_count(0)
    assert (await api.ok("GET", "/api/shop/application", token=s["token"]))["status"] == "approved"

    # The studio catches up (it refreshes every 5 s): standing restored, deposit given back.
    await expect(standing.locator('[data-key="points"] b')).to_have_text("0", timeout=15000)
    await expect(studio.get_by_test_id("ledger").locator('[data-key="deposit"] b')).to_have_text("¥1000.00")
    await expect(studio.get_by_test_id("violations")).to_contain_text("已撤销")
    await screenshot(studio, "governance-studio", full_page=True)
