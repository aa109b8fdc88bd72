"""Headless Chromium for browser tests: Debian's `chromium` package driven by Playwright.

Playwright's own browser builds are never downloaded (`playwright install` is not used): the
system browser is launched by path. Tests that need it skip when it is missing, with the
command that installs it (in CI they fail instead)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path(os.environ.get("ZAPGATE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of each page, kept after the run (git-ignored) for a person to look at.
ARTIFACTS = Path(
    os.environ.get("ZAPGATE_TEST_ARTIFACTS", Path(__file__).parent / "artifacts")
).joinpath("console")


def require_chromium() -> None:
    """Skips without the browser, except in CI (`CI` set), where a missing browser fails."""
    if not CHROMIUM.exists() and not shutil.which(str(CHROMIUM)):
        message = f"no browser at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class PageWatch:
    """Collects what a page reports that a test must not see: script errors and CSP refusals."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: object) -> None:
        # Failed calls (a 400 for a bad field) are logged as errors too: only CSP refusals count.
        text = str(getattr(message, "text", ""))
        if "Content Security Policy" in text or text.startswith("Refused to"):
            self.errors.append(text)


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
