"""After-sales in a real Chromium: a buyer on a phone asks for a refund of a paid order from
"my orders", the streamer approves it in the studio, and the buyer sees the refund arrive."""

from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests import test_browser
from tests.aftersales_support import new_sale, paid_order, shipped_case
from tests.browser_support import DESKTOP, PHONE, Pages, screenshot
from tests.support import Api, RunningServer

pytestmark = pytest.mark.browser
pages = test_browser.pages  # the fixture: Chromium on the test server; JS errors in the pages fail


async def open_as(pages: Pages, path: str, device: dict[str, Any], storage: dict[str, str]) -> Page:
    """A page whose localStorage holds ``storage`` before any script runs (a signed-in user)."""
    ctx = await pages.browser.new_context(base_url=pages.base, **device)
    pages.contexts.append(ctx)
    script = f"for (const [k, v] of Object.entries({json.dumps(storage)})) localStorage.setItem(k, v);"
    await ctx.add_init_script(script)
    page = await ctx.new_page()
    page.on("pageerror", lambda exc: pages.errors.append(f"{path}: {exc}"))
    await page.goto(path)
    return page


async def test_phone_buyer_refund_approved_in_studio(pages: Pages, api: Api) -> None:
    sale = await new_sale(api, stock=3)
    buyer, order = await paid_order(api, sale)
    viewer = await open_as(pages, f"/room/{sale.room['id']}", PHONE,
                           {"live.session.viewer": json.dumps(buyer)})
    await viewer.locator("#tab-orders").click()
    row = viewer.locator("#orders-list .order-row").first  # the buyer's only order
    await expect(row).to_have_attribute("data-status", "paid")
    await row.get_by_test_id("aftersale-request").click()
    await row.get_by_test_id("aftersale-reason").fill("拍错了，不想要了")
    await row.get_by_test_id("aftersale-submit").click()
    await expect(viewer.get_by_test_id("aftersale-status").first).to_have_attribute("data-status", "requested")
    await screenshot(viewer, "aftersales-phone-requested")

    studio = await open_as(pages, "/studio", DESKTOP, {"live.session.streamer": json.dumps(sale.streamer),
                                                       "live.studio.room": sale.room["id"]})
    case_row = studio.get_by_test_id("studio-case").filter(has_text="拍错了")
    await expect(case_row).to_have_attribute("data-status", "requested", timeout=10000)
    await case_row.get_by_test_id("case-approve").click()
    await expect(studio.get_by_test_id("studio-case").first).to_have_attribute("data-status", "refunded")
    await screenshot(studio, "aftersales-studio-approved", full_page=True)

    # The buyer sees it without reloading: pushes of order:update and aftersale:update.
    refunded = viewer.get_by_test_id("order-refunded").first
    await expect(refunded).to_contain_text("已退款 ¥19.90")
    await expect(viewer.get_by_test_id("aftersale-status").first).to_have_attribute("data-status", "refunded")
    await expect(viewer.locator(".order-row[data-status='refunded']")).to_have_count(1)
    await screenshot(viewer, "aftersales-phone-refunded")
    final = await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"])
    assert final["status"] == "refunded" and final["stock_returned"] is True


async def test_moderator_rules_a_dispute_from_its_history(pages: Pages, api: Api, server: RunningServer) -> None:
    sale = await new_sale(api, stock=2)
    buyer, order, case = await shipped_case(api, sale, reason="收到的是假货")
    await api.ok("POST", f"/api/after-sales/{case['id']}/reject", json={"note": "是正品"}, token=sale.token)
    await api.ok("POST", f"/api/after-sales/{case['id']}/escalate", json={"note": "请平台看看"}, token=buyer["token"])
    mod = await pages.open("/moderation", DESKTOP)
    await mod.get_by_label("审核令牌").fill(server.settings.admin_token)
    await mod.get_by_role("button", name="使用令牌").click()
    dispute = mod.locator(f"[data-testid='dispute'][data-id='{case['id']}']")
    await expect(dispute).to_contain_text("收到的是假货")
    await expect(dispute.locator(".as-history li")).to_have_count(3)
    await expect(dispute).to_contain_text("是正品")
    await screenshot(mod, "aftersales-moderation-dispute", full_page=True)
    await dispute.get_by_test_id("rule-refund").click()
    await expect(dispute).to_have_count(0)
    final = await api.ok("GET", f"/api/after-sales/{case['id']}", token=buyer["token"])
    assert final["status"] == "refunded" and final["history"][-1]["by"] != "system"
    assert (await api.ok("GET", f"/api/orders/{order['id']}", token=buyer["token"]))["status"] == "refunded"
