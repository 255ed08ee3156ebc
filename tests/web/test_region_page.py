"""The region page in a real Chromium, between two real nodes on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from livenode import (
    organizer_page,
    start_node,
)
from playwright.async_api import Browser

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_chapter_joins_a_region_from_the_region_page(
    browser: Browser, tmp_path: Path
) -> None:
    region, region_runner = await start_node(tmp_path / "region", "North Region", "region")
    chapter, chapter_runner = await start_node(tmp_path / "chapter", "Hill Chapter")
    ctx = await browser.new_context()
    try:
        org = await organizer_page(ctx, chapter, "Hana")
        await org.goto(chapter.at("/organize/region"))
        assert "None yet." in await org.inner_text("main")
        await org.fill("#region", region.url)
        await org.get_by_role("button", name="Ask to join").click()
        await org.wait_for_url(chapter.at("/organize/region"))
        assert region.services.identity.actor in await org.inner_text("#following")
        # The Follow is delivered, the region accepts it, the Accept comes back.
        for _ in range(100):
            await org.reload()
            if "member of this region" in await org.inner_text("#following"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(await org.inner_text("#following"))
        lead = await organizer_page(ctx, region, "Rui")
        await lead.goto(region.at("/organize/region"))
        assert chapter.services.identity.actor in await lead.inner_text("#accepted")
    finally:
        await ctx.close()
        await chapter_runner.cleanup()
        await region_runner.cleanup()
