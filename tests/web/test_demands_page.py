"""A list of demands in a real Chromium (docs/protocol.md §10.5): an organizer creates
a "choose 3" approval vote through the form, members tick their demands on the
proposal page, the organizer closes it, and the results page shows the ordered list
with the support behind each demand and the tie at the cut said as a tie.
"""

from __future__ import annotations

import re

import pytest
from livenode import ARTIFACTS, LiveNode, close, member_page, organizer_page, shot
from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEMANDS = [
    "Rent cap at 3% a year",
    "Free night buses",
    "A public clinic in every district",
    "Keep the library open Sundays",
    "Heat pumps for social housing",
]
# Rent cap 4, buses 3, then clinic and library 2 each for the third place: a tie.
PICKS = [
    [0, 1, 2],
    [0, 1, 3],
    [0, 1],
    [0, 2, 3],
]


async def tick(
    browser: Browser, node: LiveNode, n: int, proposal_id: str, picks: list[int]
) -> None:
    """One member votes in their own browser context (their own session cookie)."""
    own = await browser.new_context(viewport={"width": 412, "height": 915})
    try:
        page = await member_page(own, node, f"Voter {n}")
        await vote(page, node, proposal_id, picks)
    finally:
        await own.close()


async def vote(page: Page, node: LiveNode, proposal_id: str, picks: list[int]) -> None:
    await page.goto(node.at(f"/proposals/{proposal_id}"))
    for i in picks:
        await page.check(f"#o-{i}")
    await page.get_by_role("button", name="Send my vote").click()
    await page.get_by_text("Your vote is recorded").wait_for()


async def test_choose_three_with_a_tie_at_the_cut(
    node: LiveNode, context: BrowserContext, browser: Browser
) -> None:
    org = await organizer_page(context, node, "Ade")
    await org.goto(node.at("/organize/proposals/new"))
    await org.fill("#title", "Our demands for the city budget")
    await org.fill("#body", "Tick every demand you support; the three with most support go first.")
    await org.check("#m-approval")
    await org.fill("#options", "\n".join(DEMANDS))
    await org.fill("#seats", "3")
    await org.get_by_role("button", name="Create proposal").click()
    await org.wait_for_url(re.compile(r"/proposals/p-[0-9a-f]+$"))
    proposal_id = org.url.rsplit("/", 1)[1]
    assert "list of demands: choose 3" in await org.inner_text(".meta")

    for n, picks in enumerate(PICKS):
        await tick(browser, node, n, proposal_id, picks)
    await close(org, node, proposal_id)

    heading = await org.inner_text("#outcome-h")
    assert heading == "List of demands: choose 3"
    said = " ".join((await org.inner_text("#demands-result")).split())
    assert said.startswith("Tie.")
    assert f"{DEMANDS[2]}, {DEMANDS[3]} share place 3 with equal support" in said
    assert "for the last 1 of 3 places" in said and "2 demands are adopted" in said
    rows = [
        [" ".join(cell.split()) for cell in await row.locator("td, th").all_inner_texts()]
        for row in await org.locator("#demands tbody tr").all()
    ]
    assert rows == [
        ["1", DEMANDS[0], "4 approvals", "Adopted"],
        ["2", DEMANDS[1], "3 approvals", "Adopted"],
        ["3 (tie)", DEMANDS[2], "2 approvals", "Tied: not decided"],
        ["3 (tie)", DEMANDS[3], "2 approvals", "Tied: not decided"],
    ]
    assert await org.inner_text("#unsupported") == f"No support: {DEMANDS[4]}."
    # The chart marks adopted demands as adopted: a list of demands has no "winner".
    chart = await org.locator("svg").first.inner_html()
    assert "4 votes adopted" in chart and "winner" not in chart
    await shot(org, "demands")
    assert (ARTIFACTS / "demands.png").stat().st_size > 10_000

    # The same list for a member, with JavaScript off: the page is plain HTML.
    plain = await browser.new_context(java_script_enabled=False)
    try:
        reader = await member_page(plain, node, "Reader")
        await reader.goto(node.at(f"/proposals/{proposal_id}/results"))
        assert await reader.locator("#demands tbody tr").count() == 4
    finally:
        await plain.close()


async def test_bad_choose_n_is_said_on_the_form(node: LiveNode, context: BrowserContext) -> None:
    org = await organizer_page(context, node, "Bea")
    await org.goto(node.at("/organize/proposals/new"))
    await org.fill("#title", "Too many seats")
    await org.check("#m-approval")
    await org.fill("#options", "one\ntwo")
    await org.fill("#seats", "3")
    response_text = ""
    async with org.expect_response(re.compile(r"/organize/proposals$")) as caught:
        await org.get_by_role("button", name="Create proposal").click()
    response = await caught.value
    assert response.status == 400
    response_text = await org.inner_text("main")
    assert "seats must be a whole number from 1 to 2, got 3" in response_text
    # choose N on a method that cannot make a list is refused, not quietly dropped
    await org.goto(node.at("/organize/proposals/new"))
    await org.fill("#title", "Consent with seats")
    await org.check("#m-consent")
    await org.fill("#seats", "2")
    async with org.expect_response(re.compile(r"/organize/proposals$")) as caught:
        await org.get_by_role("button", name="Create proposal").click()
    assert (await caught.value).status == 400
    assert "chosen by approval or score, not consent" in await org.inner_text("main")


async def test_an_agenda_item_prefills_the_form(node: LiveNode, context: BrowserContext) -> None:
    org = await organizer_page(context, node, "Cy")
    item = "cd" * 32
    await org.goto(node.at(f"/organize/proposals/new?agenda_item={item}&title=Transit+fares"))
    assert await org.input_value("#title") == "Transit fares"
    assert await org.locator("input[name=agenda_item]").get_attribute("value") == item
    # On a chapter node the item cannot be put to a vote: only a region votes its agenda.
    await org.check("#m-approval")
    await org.fill("#options", "free\nhalf price")
    async with org.expect_response(re.compile(r"/organize/proposals$")) as caught:
        await org.get_by_role("button", name="Create proposal").click()
    assert (await caught.value).status == 400
    assert "only for proposals made on a region node" in await org.inner_text("main")
