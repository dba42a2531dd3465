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
