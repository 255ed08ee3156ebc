"""Fixtures of the browser tests: one Chromium for the session, one node per module
(see livenode.py); they live in the session's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from livenode import CHROMIUM, CHROMIUM_ARGS, LiveNode, start_node
from playwright.async_api import Browser, BrowserContext, async_playwright


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveNode]:
    live, runner = await start_node(tmp_path_factory.mktemp("node") / "data")
    yield live
    await runner.cleanup()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 412, "height": 915})  # a small phone
    yield ctx
    await ctx.close()
