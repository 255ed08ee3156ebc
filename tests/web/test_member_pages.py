"""Member pages in a real Chromium against a real node: the whole journey from an
invitation to a checked receipt, keyboard-only and script-free voting, CSRF, friendly
errors, light and labelled pages."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from livenode import (
    PASS,
    LiveNode,
    chart_texts,
    close,
    create,
    member_page,
    open_proposal,
    organizer_page,
    receipt_of,
    shot,
    use_link,
)
from playwright.async_api import Browser, BrowserContext

from node.proposal_forms import NewProposal

pytestmark = pytest.mark.asyncio(loop_scope="session")


STATIC = Path(__file__).resolve().parents[2] / "node" / "web" / "static"


async def test_invite_vote_every_method_change_check_and_results(
    browser: Browser, node: LiveNode
) -> None:
    org_ctx = await browser.new_context(viewport={"width": 412, "height": 915})
    mem_ctx = await browser.new_context(viewport={"width": 412, "height": 915})
    org = await organizer_page(org_ctx, node, "Olive")

    # The organizer invites Maya and hands over the one-time link shown on the page.
    await org.goto(node.at("/organize/members"))
    await org.fill("#invite-name", "Maya")
    await org.get_by_role("button", name="Invite and make a login link").click()
    link = (await org.inner_text("#login-url")).strip()
    assert link.startswith(node.url + "/login/")
    assert "Maya" in await org.inner_text("table")

    consent = await create(org, node, "Community garden", "consent")
    day = 86400
    choice = await open_proposal(node, "Meeting night", "choice", ["Monday", "Thursday"], 2 * day)
    approval = await open_proposal(node, "Snacks", "approval", ["Fruit", "Bread", "Soup"])
    ranked = await create(org, node, "Campaign focus", "ranked", ["Rent", "Transit", "Parks"])
    score = await open_proposal(node, "Venue", "score", ["Library", "Cafe"], day + 7200)
    await open_proposal(node, "Spring fair budget", "approval", ["Music", "Food"], 3 * day)

    # Maya logs in with the link, sets a passphrase, logs out, logs in with it.
    maya = await mem_ctx.new_page()
    console_errors: list[str] = []  # e.g. a Content-Security-Policy violation
    maya.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    await use_link(maya, link)
    await maya.get_by_role("button", name="Log out Maya").click()
    await maya.wait_for_url(re.compile(r"/login$"))
    await maya.fill("#name", "Maya")
    await maya.fill("#password", PASS + " typo")
    await maya.get_by_role("button", name="Log in").click()
    assert "wrong password" in await maya.inner_text("#login-error")
    assert await maya.input_value("#name") == "Maya"
    await maya.fill("#password", PASS)
    await maya.get_by_role("button", name="Log in").click()
    await maya.wait_for_url(node.at("/"))
    home = await maya.inner_text("main")
    assert "Community garden" in home and "Meeting night" in home
    assert "choice vote · 1 day 23 hours left" in home or "2 days left" in home

    # Consent: block first, then change the vote to agree; only the last one counts.
    await maya.goto(node.at(f"/proposals/{consent}"))
    assert "A block is a veto" in await maya.inner_text("main")
    assert "This proposal allows no blocks." in await maya.inner_text("#d-block")
    texts = await maya.locator("div.body p").all_inner_texts()
    assert texts == ["Should we decide Community garden?", "Second paragraph."]
    await maya.check("#c-block")
    await maya.get_by_role("button", name="Send my vote").click()
    blocked_receipt = await receipt_of(maya)
    await maya.goto(node.at(f"/proposals/{consent}"))
    await shot(maya, "proposal")
    await maya.check("#c-agree")
    await maya.get_by_role("button", name="Send my vote").click()
    consent_receipt = await receipt_of(maya)
    assert consent_receipt != blocked_receipt

    await maya.goto(node.at(f"/proposals/{choice}"))
    await maya.check("#o-1")
    await maya.get_by_role("button", name="Send my vote").click()
    await receipt_of(maya)

    await maya.goto(node.at(f"/proposals/{approval}"))
    await maya.check("#o-0")
    await maya.check("#o-2")
    await maya.get_by_role("button", name="Send my vote").click()
    await receipt_of(maya)

    # Ranked with JavaScript on: "Up" buttons reorder and renumber the list.
    await maya.goto(node.at(f"/proposals/{ranked}"))
    await maya.get_by_role("button", name="Move Parks up").click()
    await maya.get_by_role("button", name="Move Parks up").click()
    assert await maya.locator("ol[data-rank] label").all_inner_texts() == [
        "Parks",
        "Rent",
        "Transit",
    ]
    assert await maya.input_value("#r-2") == "1"
    await shot(maya, "proposal-ranked")
    await maya.get_by_role("button", name="Send my vote").click()
    await receipt_of(maya)

    await maya.goto(node.at(f"/proposals/{score}"))
    await maya.select_option("#s-0", "5")
    await maya.select_option("#s-1", "2")
    await maya.get_by_role("button", name="Send my vote").click()
    await receipt_of(maya)

    for proposal_id in (consent, choice, approval, ranked, score):
        await close(org, node, proposal_id)
    eligible = str(len(await node.services.members.all()))

    await maya.goto(node.at(f"/proposals/{consent}/results"))
    assert await chart_texts(maya) == ["agree", "1", "abstain", "0", "disagree", "0", "block", "0"]
    assert (await maya.inner_text("#cast"), await maya.inner_text("#eligible")) == ("1", eligible)
    assert "Passed" in await maya.inner_text("#outcome")
    await maya.goto(node.at(f"/proposals/{choice}/results"))
    assert await chart_texts(maya) == ["Monday", "0 votes", "Thursday", "1 vote winner"]
    assert "Chosen: Thursday" in await maya.inner_text("#outcome")
    await maya.goto(node.at(f"/proposals/{approval}/results"))
    assert await chart_texts(maya) == [
        "Fruit",
        "1 vote tied",
        "Bread",
        "0 votes",
        "Soup",
        "1 vote tied",
    ]
    assert "Tie" in await maya.inner_text("#outcome")
    await maya.goto(node.at(f"/proposals/{ranked}/results"))
    assert await chart_texts(maya) == [
        "Rent",
        "beats 1 of 2",
        "Transit",
        "beats 0 of 2",
        "Parks",
        "beats 2 of 2 winner",
    ]
    row = await maya.locator("table.pairwise tbody tr", has_text="Parks").inner_text()
    assert row.split() == ["Parks", "1", "✓", "1", "✓", "–"]
    await maya.goto(node.at(f"/proposals/{score}/results"))
    assert await chart_texts(maya) == [
        "Library",
        "5.0 of 5 (1 scored) winner",
        "Cafe",
        "2.0 of 5 (1 scored)",
    ]
    await shot(maya, "results-score")
    await maya.goto(node.at("/"))
    decisions = await maya.inner_text("#done-h + ul")
    assert "Tie: Fruit, Soup" in decisions and "Chosen: Thursday" in decisions
    assert "Passed" in decisions
    # Closed early: the date shown is when it was counted, not the planned close time.
    today = time.strftime("%d %b %Y", time.gmtime())
    assert decisions.count(f"decided {today}") == 5
    await shot(maya, "home")
    await maya.goto(node.at(f"/proposals/{ranked}/results"))
    await shot(maya, "results-ranked")

    # Check my ballot: the counted receipt verifies; the superseded one does not.
    await maya.goto(node.at(f"/check?proposal={consent}"))
    await maya.fill("#receipt", consent_receipt)
    await maya.get_by_role("button", name="Check").click()
    result = await maya.inner_text("#check-result")
    assert "Verified: your ballot was counted." in result
    assert "ballot 1 of 1" in result
    await maya.fill("#receipt", blocked_receipt)
    await maya.get_by_role("button", name="Check").click()
    assert "superseded" in await maya.inner_text("#check-result")
    flipped = consent_receipt[:-1] + ("0" if consent_receipt[-1] != "0" else "1")
    await maya.fill("#receipt", flipped)
    await maya.get_by_role("button", name="Check").click()
    assert "Not verified" in await maya.inner_text("#check-result")

    # The audit page re-verifies the whole chain, newest first.
    await maya.goto(node.at("/audit"))
    assert "entries verified" in await maya.inner_text("main")
    seqs = [
        int(s) for s in await maya.locator("table.audit tbody td:first-child").all_inner_texts()
    ]
    assert (seqs == sorted(seqs, reverse=True) and seqs[-1] == 0) or len(seqs) == 50
    types = await maya.locator("table.audit tbody td:nth-child(2)").all_inner_texts()
    assert {"Tally", "Question", "RosterChange"} <= set(types)
    assert await maya.locator(".badge.not-verified").count() == 0

    # Error pages (the superseded receipt's 404) log their status; nothing else may.
    assert [e for e in console_errors if "status of 40" not in e] == []

    # The session cookie is HttpOnly and SameSite=Lax.
    cookies = {c["name"]: c for c in await mem_ctx.cookies()}
    assert cookies["convene_web"]["httpOnly"] is True
    assert cookies["convene_web"]["sameSite"] == "Lax"
    await org_ctx.close()
    await mem_ctx.close()


async def test_keyboard_only_voting(browser: Browser, node: LiveNode) -> None:
    proposal = await open_proposal(node, "Keyboard vote", "consent", block_limit=2)
    ctx = await browser.new_context()
    page = await member_page(ctx, node, "Kim")
    await page.goto(node.at(f"/proposals/{proposal}"))
    assert "This proposal allows 2 blocks." in await page.inner_text("#d-block")

    async def tab_to(selector: str) -> None:
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate(f"document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    await tab_to("#c-agree")
    await page.keyboard.press("Space")
    assert await page.is_checked("#c-agree")
    await tab_to("form.ballot button[type=submit]")
    await page.keyboard.press("Enter")
    assert len(await receipt_of(page)) == 64
    await ctx.close()


async def test_voting_without_javascript(browser: Browser, node: LiveNode) -> None:
    proposal = await open_proposal(node, "No script vote", "ranked", ["North", "South", "East"])
    ctx = await browser.new_context(java_script_enabled=False)
    page = await member_page(ctx, node, "Noor")
    await page.goto(node.at(f"/proposals/{proposal}"))
    assert await page.locator("button", has_text="Move").count() == 0  # no script ran
    await page.fill("#r-0", "2")
    await page.fill("#r-1", "3")
    await page.fill("#r-2", "1")
    await page.get_by_role("button", name="Send my vote").click()
    await receipt_of(page)
    # The same number twice is refused with a sentence that says which options.
    await page.goto(node.at(f"/proposals/{proposal}"))
    await page.fill("#r-0", "1")
    await page.fill("#r-1", "1")
    await page.get_by_role("button", name="Send my vote").click()
    assert "'North' and 'South' both have position 1" in await page.inner_text("main")
    await node.services.proposals.close(None, proposal)
    await page.goto(node.at(f"/proposals/{proposal}/results"))
    row = await page.locator("table.pairwise tbody tr", has_text="East").inner_text()
    assert row.split() == ["East", "1", "✓", "1", "✓", "–"]
    await ctx.close()


async def test_post_without_csrf_token_is_refused(browser: Browser, node: LiveNode) -> None:
    proposal = await open_proposal(node, "CSRF vote", "choice", ["Yes please", "No thanks"])
    ctx = await browser.new_context()
    page = await member_page(ctx, node, "Cora")
    url = node.at(f"/proposals/{proposal}/vote")
    missing = await ctx.request.post(url, form={"choice": "Yes please"}, max_redirects=0)
    assert missing.status == 403
    assert "no CSRF token" in await missing.text()
    wrong = await ctx.request.post(url, form={"choice": "Yes please", "csrf": "x" * 43})
    assert wrong.status == 403
    assert (await node.services.proposals.get(proposal)).voters == 0
    # A real form post from the page carries the token and is accepted.
    await page.goto(node.at(f"/proposals/{proposal}"))
    await page.check("#o-0")
    await page.get_by_role("button", name="Send my vote").click()
    await receipt_of(page)
    assert (await node.services.proposals.get(proposal)).voters == 1
    await ctx.close()


async def test_friendly_error_pages(browser: Browser, node: LiveNode) -> None:
    added = await node.services.members.add("Eve", "member")
    ctx = await browser.new_context()
    page = await ctx.new_page()

    anonymous = await page.goto(node.at("/proposals/p-0"))
    assert anonymous is not None and anonymous.status == 401
    assert "Please log in" in await page.inner_text("h1")

    await use_link(page, added.login_url, passphrase=None)
    reused = await ctx.new_page()
    await reused.goto(added.login_url)
    await reused.get_by_role("button", name="Log me in").click()
    assert "already used or expired" in await reused.inner_text("main")

    nowhere = await page.goto(node.at("/no/such/page"))
    assert nowhere is not None and nowhere.status == 404
    assert "We could not find that" in await page.inner_text("h1")
    api = await ctx.request.get(node.at("/api/no/such/thing"))
    assert api.status == 404 and (await api.json())["error"] == "not_found"

    missing = await page.goto(node.at("/proposals/p-does-not-exist"))
    assert missing is not None and missing.status == 404
    assert "We could not find that" in await page.inner_text("h1")

    forbidden = await page.goto(node.at("/organize/members"))
    assert forbidden is not None and forbidden.status == 403
    assert "needs the organizer role" in await page.inner_text("main")

    organizer = await node.services.members.add("Ezra", "organizer")
    created = await node.services.proposals.create(
        organizer.member, NewProposal(title="Closed early", method="choice", options=["a", "b"])
    )
    await node.services.proposals.close(organizer.member, created.id)
    await page.goto(node.at(f"/proposals/{created.id}"))
    assert await page.locator("form.ballot").count() == 0
    await page.goto(node.at("/"))
    token = await page.locator("input[name=csrf]").first.input_value()
    late = await ctx.request.post(
        node.at(f"/proposals/{created.id}/vote"), form={"choice": "a", "csrf": token}
    )
    assert late.status == 409
    body = await late.text()
    assert "That cannot be done right now" in body and "Traceback" not in body
    await ctx.close()


async def test_pages_are_light_labelled_and_landmarked(
    context: BrowserContext, node: LiveNode
) -> None:
    weight = sum(p.stat().st_size for p in STATIC.iterdir() if p.suffix in (".css", ".js"))
    assert weight < 100 * 1024
    page = await organizer_page(context, node, "Ana")
    proposal = await open_proposal(node, "Labels", "score", ["One", "Two"])
    for path in ("/", f"/proposals/{proposal}", "/organize/members", "/organize/proposals/new"):
        await page.goto(node.at(path))
        assert await page.get_attribute("html", "lang") == "en"
        assert await page.locator("main").count() == 1
        assert await page.locator("nav").count() == 1
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                 .filter(e => e.type !== 'hidden' && e.labels.length === 0)
                 .map(e => e.name)"""
        )
        assert unlabelled == [], path


async def test_base_url_is_the_home_page_and_the_actor(
    context: BrowserContext, node: LiveNode
) -> None:
    # The home page must not shadow the actor document that ActivityPub clients ask for.
    answer = await context.request.get(
        node.url + "/", headers={"Accept": "application/activity+json"}
    )
    assert answer.status == 200
    assert (await answer.json())["id"] == node.services.identity.actor
    html = await context.request.get(node.url + "/", headers={"Accept": "text/html"})
    assert html.status == 200 and "Log in" in await html.text()


async def test_ranked_options_reorder_by_dragging(context: BrowserContext, node: LiveNode) -> None:
    proposal = await open_proposal(node, "Drag vote", "ranked", ["Alpha", "Beta", "Gamma"])
    page = await member_page(context, node, "Dee")
    await page.goto(node.at(f"/proposals/{proposal}"))
    items = page.locator("ol[data-rank] li")
    await items.nth(2).drag_to(items.nth(0), target_position={"x": 5, "y": 2})
    assert await page.locator("ol[data-rank] label").all_inner_texts() == [
        "Gamma",
        "Alpha",
        "Beta",
    ]
    assert [await page.input_value(f"#r-{i}") for i in range(3)] == ["2", "3", "1"]
    await page.get_by_role("button", name="Send my vote").click()
    await receipt_of(page)
