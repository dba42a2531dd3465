"""The room page marks its author's held chat ("待审核" / "awaiting review") and updates the mark
when a moderator approves or rejects the message or its review times out (docs/guard.md)."""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.browser_support import PHONE, Pages, chromium, screenshot
from tests.support import Api, run_app

pytestmark = pytest.mark.browser

EXPIRY_S = 6.0  # long enough to approve and reject by hand first, short enough to wait for


async def held_message(page: Page, text: str) -> str:
    """Send ``text`` (doubtful: held for review) from the page; the id of the marked message."""
    await page.get_by_test_id("chat-input").fill(text)
    await page.get_by_test_id("chat-send").click()
    mine = page.locator("[data-testid='chat-message'].mine", has_text=text)
    await expect(mine).to_have_attribute("data-held", "held")
    await expect(mine.get_by_test_id("held-badge")).to_have_text("待审核 · 仅你可见")
    msg_id = await mine.get_attribute("data-id")
    assert msg_id
    return msg_id


async def test_author_sees_a_held_message_marked_until_it_is_decided(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings = settings_factory(guard_hold_expiry_s=EXPIRY_S, guard_hold_sweep_s=0.2)
    async with run_app(settings) as srv, Api(srv.url) as api, chromium(srv.url) as pages:
        admin = srv.settings.admin_token
        s = await api.streamer()
        room = await api.live_room(s["token"], "待审核测试")
        path = f"/room/{room['id']}"
        approved = await open_room(pages, path)
        rejected = await open_room(pages, path)
        expired = await open_room(pages, path)

        # Approved: the mark goes, the message stays as an ordinary one.
        a_id = await held_message(approved, "想要的宝宝私聊")
        await screenshot(approved, "viewer-phone-chat-held")
        await api.ok("POST", f"/api/moderation/held/{a_id}/approve", token=admin)
        a_msg = approved.locator(f"[data-id='{a_id}']")
        await expect(a_msg).to_have_attribute("data-held", "approved")
        await expect(a_msg.get_by_test_id("held-badge")).to_have_count(0)
        await expect(a_msg).not_to_have_class("held")
        # ... and the other pages, which never saw it held, now show it once.
        await expect(rejected.locator(f"[data-id='{a_id}']")).to_have_count(1)
        await expect(rejected.locator(f"[data-id='{a_id}'] [data-testid='held-badge']")).to_have_count(0)

        # Rejected: still shown to its author only, marked so; in both languages.
        r_id = await held_message(rejected, "蓝色那件想要的私聊")
        await api.ok("POST", f"/api/moderation/held/{r_id}/reject", token=admin)
        r_badge = rejected.locator(f"[data-id='{r_id}']").get_by_test_id("held-badge")
        await expect(r_badge).to_have_text("未通过审核 · 仅你可见")
        await rejected.locator("[data-lang-toggle]").first.click()
        await expect(r_badge).to_have_text("Not approved · only you can see it")
        await screenshot(rejected, "viewer-phone-chat-held-rejected-en")
        # The English top bar is wider than the Chinese one: on a phone nothing in it overlaps.
        boxes = [await rejected.locator(sel).first.bounding_box()
                 for sel in ("#room-streamer", "[data-testid='follow-button']", "[data-testid='notify-bell']",
                             "#viewers-pill", "[data-lang-toggle]")]
        assert all(b is not None for b in boxes), boxes
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a is not None and b is not None
                apart = (a["x"] + a["width"] <= b["x"] + 1 or b["x"] + b["width"] <= a["x"] + 1
                         or a["y"] + a["height"] <= b["y"] + 1 or b["y"] + b["height"] <= a["y"] + 1)
                assert apart, (a, b)
        await expect(approved.locator(f"[data-id='{r_id}']")).to_have_count(0)

        # Nobody decided: the review times out and the author is told.
        e_id = await held_message(expired, "想要的私聊一下")
        e_badge = expired.locator(f"[data-id='{e_id}']").get_by_test_id("held-badge")
        await expect(e_badge).to_have_text("审核超时 · 未发布", timeout=(EXPIRY_S + 10) * 1000)
        await screenshot(expired, "viewer-phone-chat-held-expired")
        for page in (approved, rejected):
            await expect(page.locator(f"[data-id='{e_id}']")).to_have_count(0)
        assert not pages.errors, "JavaScript errors in the pages:\n" + "\n".join(pages.errors)


async def open_room(pages: Pages, path: str) -> Page:
    page = await pages.open(path, PHONE)
    await expect(page.get_by_text("主播还没有上架商品")).to_be_visible()
    return page
