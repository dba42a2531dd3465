"""Browser-test support: Debian's Chromium driven by Playwright (async API), a phone and a
desktop context, screenshots to ``test-artifacts/``, and page errors that fail the test.

Playwright's own browser download is not used: the tests drive ``/usr/bin/chromium``
(``apt-get install chromium``), with a fake camera and microphone. A missing Chromium fails
the tests with a message saying so; they never skip.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from tests.support import ROOT

CHROMIUM = os.environ.get("LIVE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # WebRTC between the browser and the server on one host: no mDNS-obfuscated candidates.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/126.0.0.0 Mobile Safari/537.36"),
    "locale": "zh-CN",
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}, "locale": "zh-CN"}


def streamer_name() -> str:
    """A fresh username the chat guard never refuses: a random hex one (``s_fb05510c``) read as
    a Facebook handle about once in 1,500 names and failed a browser test with "内容未通过审核"."""
    return "s_" + "".join(random.choices("aeiou", k=12))


def chromium_path() -> str:
    """The Chromium binary, or a failed test that says how to get one."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: the browser tests need Debian's Chromium "
                    "(apt-get install chromium), or LIVE_CHROMIUM=/path/to/chromium", pytrace=False)
    return CHROMIUM


@dataclass
class Pages:
    """A browser and the pages the test opened; JS errors on any of them are collected."""

    browser: Browser
    base: str
    errors: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    async def open(self, path: str, device: dict[str, Any], **extra: Any) -> Page:
        ctx = await self.browser.new_context(base_url=self.base, **device, **extra)
        self.contexts.append(ctx)
        page = await ctx.new_page()
        name = f"{path} ({device['viewport']['width']}px)"

        def console(msg: ConsoleMessage) -> None:
            # A failed resource load is reported by the server's status, which the test checks;
            # anything else logged as an error is a bug in the page.
            if msg.type == "error" and "Failed to load resource" not in msg.text:
                self.errors.append(f"{name}: console: {msg.text}")

        page.on("pageerror", lambda exc: self.errors.append(f"{name}: {exc}"))
        page.on("console", console)
        await page.goto(path)
        return page

    async def close(self) -> None:
        for ctx in self.contexts:
            with contextlib.suppress(Exception):
                await ctx.close()


@contextlib.asynccontextmanager
async def chromium(base: str) -> AsyncIterator[Pages]:
    exe = chromium_path()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        pages = Pages(browser, base)
        try:
            yield pages
        finally:
            await pages.close()
            await browser.close()


async def screenshot(page: Page, name: str, full_page: bool = False) -> Path:
    """Save ``test-artifacts/<name>.png`` and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    return path
