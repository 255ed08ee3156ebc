"""The convening pages in Chromium against a real node: an organizer starts a time
poll, members mark the times they can come, it closes, the organizer schedules the
convening from it, a member answers, the organizer signs the attendance count.
Screenshot: test-artifacts/web/event.png (copied to docs/screenshots/event.png)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from livenode import ARTIFACTS, LiveNode, close, member_page, organizer_page
from playwright.async_api import Browser, BrowserContext, Page

SLOTS = [("2030-03-01T17:00", "2030-03-01T19:00"), ("2030-03-02T10:00", "2030-03-02T12:00")]
pytestmark = pytest.mark.asyncio(loop_scope="session")

OPTIONS = [f"{s}:00Z/{e}:00Z" for s, e in SLOTS]


@asynccontextmanager
async def people(browser: Browser, count: int) -> AsyncIterator[list[BrowserContext]]:
    """One browser context (own cookies) per person; the last without JavaScript."""
    made = [
        await browser.new_context(
            viewport={"width": 412, "height": 915}, java_script_enabled=i < count - 1
        )
        for i in range(count)
    ]
    try:
        yield made
    finally:
        for ctx in made:
            await ctx.close()


async def start_poll(page: Page, node: LiveNode, title: str) -> str:
    await page.goto(node.at("/organize/timepolls/new"))
    await page.fill("#title", title)
    for i, (start, end) in enumerate(SLOTS):
        await page.fill(f"#start-{i}", start)
        await page.fill(f"#end-{i}", end)
    await page.get_by_role("button", name="Start the time poll").click()
    await page.wait_for_url(re.compile(r"/proposals/p-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


async def mark(page: Page, node: LiveNode, poll: str, picks: list[int]) -> None:
    await page.goto(node.at(f"/proposals/{poll}"))
    for i in picks:
        await page.check(f"#o-{i}")
    await page.get_by_role("button", name="Send my vote").click()
    await page.get_by_text("Your vote is recorded").wait_for()


async def test_a_convening_from_time_poll_to_signed_attendance(
    node: LiveNode, browser: Browser
) -> None:
    async with people(browser, 3) as (rosa, ana_ctx, ben_ctx):  # Ben without JavaScript
        await convening(node, rosa, ana_ctx, ben_ctx)


async def convening(
    node: LiveNode, rosa: BrowserContext, ana_ctx: BrowserContext, ben_ctx: BrowserContext
) -> None:
    organizer = await organizer_page(rosa, node, "Rosa")
    organizer.on("dialog", lambda d: d.accept())  # the sign button asks to confirm
    poll = await start_poll(organizer, node, "When is the spring convening?")
    ana = await member_page(ana_ctx, node, "Ana")
    ben = await member_page(ben_ctx, node, "Ben")
    await mark(ana, node, poll, [0, 1])
    await mark(ben, node, poll, [1])
    await close(organizer, node, poll)

    await organizer.goto(node.at(f"/organize/events/new?poll={poll}"))
    assert await organizer.input_value("#poll") == poll
    await organizer.fill("#name", "Spring convening")
    await organizer.fill("#location", "Community hall")
    await organizer.fill("#capacity", "2")
    await organizer.get_by_role("button", name="Schedule it").click()
    await organizer.wait_for_url(re.compile(r"/events/e-[0-9a-f]{16}$"))
    event_url = organizer.url
    when = await organizer.inner_text("#when")
    assert when == "02 Mar 2030, 10:00 UTC – 02 Mar 2030, 12:00 UTC"  # the slot both marked

    await ana.goto(node.at("/events"))
    await ana.get_by_role("link", name="Spring convening").click()
    await ana.check("#a-0")  # going
    await ana.get_by_role("button", name="Send my answer").click()
    await ana.locator("#my-answer").wait_for()
    assert "going" in await ana.inner_text("#my-answer")
    await ben.goto(event_url)
    await ben.check("#a-1")  # maybe
    await ben.get_by_role("button", name="Send my answer").click()
    await ben.locator("#my-answer").wait_for()
    assert await ben.locator("text=Sign our attendance count").count() == 0  # not an organizer

    await organizer.goto(event_url)
    answers = await organizer.inner_text("#answers")
    assert answers == "Here so far: 1 going, 1 maybe, 0 not going."
    await organizer.get_by_role("button", name="Sign our attendance count").click()
    await organizer.get_by_text("signed its attendance count").wait_for()
    row = [
        c.strip()
        for c in await organizer.locator(
            "#attendance tbody tr th, #attendance tbody tr td"
        ).all_inner_texts()
    ]
    assert row[0] == "Riverside Chapter (this chapter)"  # its name, not its actor id
    assert row[1:] == ["1", "1", "0", "3"]  # going, maybe, not going, members on the roster
    assert await organizer.inner_text("#capacity-line") == "1 going of 2 places: 1 left."
    assert await organizer.locator("text=Sign our attendance count").count() == 0  # once
    await organizer.set_viewport_size({"width": 760, "height": 915})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await organizer.screenshot(path=str(ARTIFACTS / "event.png"), full_page=True)
    # answers are closed once the count is signed
    await ben.goto(event_url)
    assert await ben.locator("text=Send my answer").count() == 0


async def test_a_tied_poll_says_which_times_tie(node: LiveNode, browser: Browser) -> None:
    async with people(browser, 3) as (sam_ctx, cleo_ctx, dev_ctx):
        await tied(node, sam_ctx, cleo_ctx, dev_ctx)


async def tied(
    node: LiveNode, sam_ctx: BrowserContext, cleo_ctx: BrowserContext, dev_ctx: BrowserContext
) -> None:
    organizer = await organizer_page(sam_ctx, node, "Sam")
    poll = await start_poll(organizer, node, "Tied?")
    cleo = await member_page(cleo_ctx, node, "Cleo")
    dev = await member_page(dev_ctx, node, "Dev")
    await mark(cleo, node, poll, [0])
    await mark(dev, node, poll, [1])
    await close(organizer, node, poll)
    await organizer.goto(node.at(f"/organize/events/new?poll={poll}"))
    await organizer.fill("#name", "Tied convening")
    await organizer.fill("#location", "Library")
    await organizer.get_by_role("button", name="Schedule it").click()
    text = await organizer.inner_text("main")
    assert "That cannot be done right now" in text
    assert OPTIONS[0] in text and OPTIONS[1] in text and "tie" in text
    # a member may not open the organizers' forms
    await cleo.goto(node.at("/organize/events/new"))
    assert "needs the organizer role" in await cleo.inner_text("main")


async def test_a_form_without_its_csrf_token_is_refused(node: LiveNode) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/organize/events", "/organize/timepolls", "/events/e-1/rsvp"):
            async with http.post(node.at(path), data={"name": "x"}) as r:
                assert r.status in (401, 403), (path, r.status)
