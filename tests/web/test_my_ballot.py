"""'Your ballot' on the proposal page, in a real Chromium against a real node: each
member sees their own current ballot and receipt, the form starts from it, nobody
sees anyone else's choice, and a secret vote says the node kept no key."""

from __future__ import annotations

import pytest
from livenode import LiveNode, close, member_page, open_proposal, organizer_page, receipt_of
from playwright.async_api import Browser, Page

from node.proposal_forms import NewProposal

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPTIONS = ["Library", "Cafe", "Park"]


async def vote(page: Page, node: LiveNode, proposal_id: str, *ticks: str) -> str:
    await page.goto(node.at(f"/proposals/{proposal_id}"))
    for selector in ticks:
        await page.check(selector)
    await page.get_by_role("button", name="Send my vote").click()
    return await receipt_of(page)


async def test_each_member_sees_their_own_ballot_and_changes_it_from_there(
    browser: Browser, node: LiveNode
) -> None:
    ctx_a, ctx_b = await browser.new_context(), await browser.new_context()
    maya, max_ = await member_page(ctx_a, node, "Maya B"), await member_page(ctx_b, node, "Max B")
    ctx_org = await browser.new_context()
    organizer = await organizer_page(ctx_org, node, "Olive B")
    org = next(m for m in await node.services.members.all() if m.at_least("organizer"))
    secret = (
        await node.services.proposals.create(
            org, NewProposal(title="Secret garden", method="consent", secret=True)
        )
    ).id

    await maya.goto(node.at(f"/proposals/{secret}"))
    assert await maya.locator("#my-ballot").count() == 0  # not voted yet
    first = await vote(maya, node, secret, "#c-block")
    await maya.goto(node.at(f"/proposals/{secret}"))
    assert await maya.inner_text("#my-choice") == "Block"
    assert await maya.inner_text("#my-receipt") == first
    assert await maya.is_checked("#c-block") and not await maya.is_checked("#c-agree")
    assert "did not keep your ballot's secret key" in await maya.inner_text("#my-ballot")

    # Changing the vote: the page then names the new ballot and the new receipt.
    second = await vote(maya, node, secret, "#c-agree")
    assert second != first
    await maya.goto(node.at(f"/proposals/{secret}"))
    assert await maya.inner_text("#my-choice") == "Agree"
    assert await maya.inner_text("#my-receipt") == second
    assert await maya.is_checked("#c-agree")

    # Max sees nothing of Maya's ballot, before and after voting himself.
    await max_.goto(node.at(f"/proposals/{secret}"))
    assert await max_.locator("#my-ballot").count() == 0
    assert not await max_.is_checked("#c-agree") and not await max_.is_checked("#c-block")
    assert first not in await max_.content() and second not in await max_.content()
    theirs = await vote(max_, node, secret, "#c-disagree")
    await max_.goto(node.at(f"/proposals/{secret}"))
    assert await max_.inner_text("#my-choice") == "Disagree"
    assert await max_.inner_text("#my-receipt") == theirs
    await maya.goto(node.at(f"/proposals/{secret}"))
    assert await maya.inner_text("#my-choice") == "Agree"
    assert theirs not in await maya.content()

    # After close the page still names the ballot and points to the receipt check.
    await close(organizer, node, secret)
    await maya.goto(node.at(f"/proposals/{secret}"))
    assert await maya.inner_text("#my-receipt") == second
    assert await maya.get_by_role("link", name="Check that your ballot was counted").count() == 1
    for ctx in (ctx_a, ctx_b, ctx_org):
        await ctx.close()


async def test_every_method_prefills_the_form_with_the_last_ballot(
    browser: Browser, node: LiveNode
) -> None:
    ctx = await browser.new_context()
    page = await member_page(ctx, node, "Mo B")
    approval = await open_proposal(node, "Snacks B", "approval", OPTIONS)
    ranked = await open_proposal(node, "Focus B", "ranked", OPTIONS)
    score = await open_proposal(node, "Venue B", "score", OPTIONS)
    choice = await open_proposal(node, "Night B", "choice", OPTIONS)

    await vote(page, node, approval, "#o-0", "#o-2")
    await page.goto(node.at(f"/proposals/{approval}"))
    assert await page.inner_text("#my-choice") == "Library, Park"
    ticked = [await page.is_checked(f"#o-{i}") for i in range(3)]
    assert ticked == [True, False, True]
    assert "secret key" not in await page.inner_text("#my-ballot")  # a roll-call vote

    await page.goto(node.at(f"/proposals/{ranked}"))
    await page.fill("#r-0", "2")
    await page.fill("#r-2", "1")
    await page.get_by_role("button", name="Send my vote").click()
    await receipt_of(page)
    await page.goto(node.at(f"/proposals/{ranked}"))
    assert await page.inner_text("#my-choice") == "1. Park, 2. Library"
    assert [await page.input_value(f"#r-{i}") for i in range(3)] == ["2", "", "1"]

    await page.goto(node.at(f"/proposals/{score}"))
    await page.select_option("#s-0", "4")
    await page.select_option("#s-1", "0")
    await page.get_by_role("button", name="Send my vote").click()
    await receipt_of(page)
    await page.goto(node.at(f"/proposals/{score}"))
    assert await page.inner_text("#my-choice") == "Library: 4, Cafe: 0"
    assert [await page.input_value(f"#s-{i}") for i in range(3)] == ["4", "0", ""]

    # The prefilled form sends as it stands: the same choice again is a new receipt.
    first = await vote(page, node, choice, "#o-1")
    await page.goto(node.at(f"/proposals/{choice}"))
    assert await page.is_checked("#o-1")
    again = await vote(page, node, choice)
    assert again != first
    await page.goto(node.at(f"/proposals/{choice}"))
    assert (await page.inner_text("#my-choice"), await page.inner_text("#my-receipt")) == (
        "Cafe",
        again,
    )
    await ctx.close()
