"""The agenda pages in a real Chromium, between three real nodes on loopback (a region
and two chapters, each an aiohttp server with its own SQLite file): the region opens an
agenda, one chapter submits an item, the other sponsors it, it qualifies, the region
closes the agenda without a vote and every page flags the item as dropped."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from livenode import ARTIFACTS, LiveNode, organizer_page, start_node
from playwright.async_api import Browser, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def join(region: LiveNode, chapter: LiveNode) -> None:
    token = (await chapter.services.members.add("Joiner", "organizer")).to_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(chapter.at("/api/federation/join"), json={"region": region.url}) as r:
            assert r.status == 202
        for _ in range(200):
            async with http.get(chapter.at("/api/federation")) as r:
                body = await r.json()
            if any(f["state"] == "accepted" for f in body["following"]):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{chapter.url} never joined {region.url}")


async def reload_until(page: Page, selector: str, text: str, tries: int = 150) -> str:
    """Reload until `selector` shows `text` (entries travel between servers meanwhile)."""
    seen = ""
    for _ in range(tries):
        await page.reload()
        if await page.locator(selector).count():
            seen = " ".join((await page.inner_text(selector)).split())
            if text in seen:
                return seen
        await asyncio.sleep(0.1)
    main = " ".join((await page.inner_text("main")).split())[:600]
    raise AssertionError(f"{selector} never showed {text!r}; last: {seen!r}; page: {main}")


async def nodes(root: Path) -> AsyncIterator[tuple[LiveNode, LiveNode, LiveNode]]:
    region, r1 = await start_node(root / "region", "North Region", "region")
    alder, r2 = await start_node(root / "alder", "Alder Chapter")
    birch, r3 = await start_node(root / "birch", "Birch Chapter")
    try:
        await join(region, alder)
        await join(region, birch)
        yield region, alder, birch
    finally:
        for runner in (r3, r2, r1):
            await runner.cleanup()


async def test_submit_sponsor_qualify_and_a_dropped_item_flagged(
    browser: Browser, tmp_path: Path
) -> None:
    async for region, alder, birch in nodes(tmp_path):
        # one context per node: cookies ignore the port, so three nodes on 127.0.0.1
        # would otherwise share one session cookie
        ctxs = [await browser.new_context(viewport={"width": 760, "height": 915}) for _ in range(3)]
        try:
            lead = await organizer_page(ctxs[0], region, "Rui")
            lead.on("dialog", lambda d: asyncio.ensure_future(d.accept()))
            await lead.goto(region.at("/agenda"))
            assert "No agenda yet." in await lead.inner_text("main")
            await lead.fill("#convening", "Autumn regional convening")
            await lead.fill("#min_sponsors", "2")
            await lead.get_by_role("button", name="Open the agenda").click()
            await lead.wait_for_url(re.compile(r"/agenda/[0-9a-f]{64}$"))
            config = lead.url.rsplit("/", 1)[1]
            assert "No item yet." in await lead.inner_text("#items-h ~ p")

            # Alder's organizer submits an item on Alder's own node
            ana = await organizer_page(ctxs[1], alder, "Ana")
            await reload_until_ok(ana, alder.at(f"/agenda/{config}"))
            await ana.fill("#title", "Free transit")
            await ana.fill("#summary", "Fare-free buses across the region")
            await ana.get_by_role("button", name="Submit to the region").click()
            await ana.wait_for_url(alder.at(f"/agenda/{config}"))
            card = " ".join((await ana.inner_text("#items")).split())
            assert "Free transit" in card and "submitted" in card and "1 of 2 sponsor" in card
            # a form posted without this session's CSRF token is refused, nothing signed
            forged = await ana.request.post(
                alder.at(f"/agenda/{config}/items"), form={"title": "Cross-site"}
            )
            assert forged.status == 403
            # the submitter has no sponsor button for its own item
            assert await ana.get_by_role("button", name="Sponsor Free transit").count() == 0

            # Birch's organizer sees it arrive and sponsors it
            bo = await organizer_page(ctxs[2], birch, "Bo")
            await reload_until_ok(bo, birch.at(f"/agenda/{config}"))
            await reload_until(bo, "#items", "Free transit")
            await bo.get_by_role("button", name="Sponsor Free transit").click()
            await bo.wait_for_url(birch.at(f"/agenda/{config}"))
            card = " ".join((await bo.inner_text("#items")).split())
            assert "qualified" in card and "2 of 2 sponsor" in card

            # every node computes the same: qualified on Alder and on the region
            await reload_until(ana, "#items", "qualified")
            seen = await reload_until(lead, "#items", "qualified")
            assert "2 of 2 sponsor" in seen
            assert await lead.get_by_role("link", name="Put to a regional vote").count() == 1

            # Birch submits a second item; the region puts it to a vote from the page,
            # through the new-proposal form the link fills in
            await bo.fill("#title", "Night buses")
            await bo.get_by_role("button", name="Submit to the region").click()
            await bo.wait_for_url(birch.at(f"/agenda/{config}"))
            await reload_until(lead, "#items", "Night buses")
            buses = lead.locator("li.card", has_text="Night buses")
            await buses.get_by_role("link", name="Put to a regional vote").click()
            await lead.wait_for_url(re.compile(r"/organize/proposals/new\?agenda_item="))
            assert await lead.input_value("#title") == "Night buses"
            await lead.get_by_role("button", name="Create proposal").click()
            await lead.wait_for_url(re.compile(r"/proposals/p-[0-9a-f]+$"))
            vote = lead.url.rsplit("/", 1)[1]
            await lead.goto(region.at(f"/agenda/{config}"))
            buses = lead.locator("li.card", has_text="Night buses")
            assert await buses.locator(".status").inner_text() == "voted"
            link = buses.get_by_role("link", name="The vote on this item")
            assert await link.get_attribute("href") == f"/proposals/{vote}"
            await reload_until(bo, "#items", "voted")  # the chapter holds the Question too

            # the region closes without a vote: dropped, flagged on every node's page
            await lead.get_by_role("button", name="Close the agenda").click()
            await lead.wait_for_url(region.at(f"/agenda/{config}"))
            alert = " ".join((await lead.inner_text("#dropped")).split())
            assert "Cross-site" not in await lead.inner_text("#items")
            assert "1 item(s) qualified but were never put to a vote" in alert
            assert "Free transit" in alert and "Night buses" not in alert
            for page in (ana, bo):
                flagged = await reload_until(page, "#dropped", "Free transit")
                assert "never put to a vote" in flagged
                assert "submitted by Alder Chapter" in flagged  # named, not an URL
                assert await page.locator("#agenda-state").inner_text() == "closed"
                # no submit form or sponsor button on a closed agenda
                assert await page.locator("#title").count() == 0
            await bo.goto(birch.at("/agenda"))
            assert "1 dropped" in await bo.inner_text("#agendas")
            await bo.goto(birch.at(f"/agenda/{config}"))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await bo.screenshot(path=str(ARTIFACTS / "agenda.png"), full_page=True)
        finally:
            for ctx in ctxs:
                await ctx.close()


async def reload_until_ok(page: Page, url: str, tries: int = 150) -> None:
    """Open `url` once the node holds the agenda (until then it answers 404)."""
    for _ in range(tries):
        response = await page.goto(url)
        if response is not None and response.status == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")
