"""Organizer pages in a real Chromium: the roster and proposals from draft to open."""

from __future__ import annotations

import re

import pytest
from livenode import (
    LiveNode,
    organizer_page,
)
from playwright.async_api import Browser

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_organizer_changes_roles_makes_links_and_removes(
    browser: Browser, node: LiveNode
) -> None:
    ctx = await browser.new_context()
    org = await organizer_page(ctx, node, "Rosa")
    added = await node.services.members.add("Sam", "member")
    await org.goto(node.at("/organize/members"))
    row = org.locator("tbody tr", has_text="Sam")
    await row.locator("select").select_option("organizer")
    await row.get_by_role("button", name="Change").click()
    await org.wait_for_url(node.at("/organize/members"))
    assert (await node.services.members.get(added.member.id)).role == "organizer"
    # Only an admin may grant admin.
    await org.locator("tbody tr", has_text="Sam").locator("select").select_option("admin")
    await org.locator("tbody tr", has_text="Sam").get_by_role("button", name="Change").click()
    assert "needs the admin role" in await org.inner_text("main")
    # A fresh one-time link for Sam, shown to hand over.
    await org.goto(node.at("/organize/members"))
    await org.get_by_role("button", name="New login link for Sam").click()
    link = (await org.inner_text("#login-url")).strip()
    assert link.startswith(node.url + "/login/") and link != added.login_url
    # Removing asks first (JavaScript confirm), then Sam is gone and his link is dead.
    org.once("dialog", lambda dialog: dialog.accept())
    await org.get_by_role("button", name="Remove Sam").click()
    await org.wait_for_url(node.at("/organize/members"))
    assert "Sam" not in await org.inner_text("tbody")
    gone = await ctx.new_page()
    await gone.goto(link)
    await gone.get_by_role("button", name="Log me in").click()
    assert "already used or expired" in await gone.inner_text("main")
    await ctx.close()


async def test_organizer_saves_a_draft_then_opens_it(browser: Browser, node: LiveNode) -> None:
    ctx = await browser.new_context()
    org = await organizer_page(ctx, node, "Dara")
    await org.goto(node.at("/organize/proposals/new"))
    await org.fill("#title", "Draft first")
    await org.check("#m-choice")
    await org.fill("#options", "Yes\nNo\n\n")
    await org.fill("#quorum", "1/3")
    await org.fill("#closes_at", "2099-05-01T12:30")
    await org.check("#draft")
    await org.get_by_role("button", name="Create proposal").click()
    await org.wait_for_url(re.compile(r"/proposals/p-[0-9a-f]+$"))
    proposal = org.url.rsplit("/", 1)[1]
    assert "members cannot vote yet" in await org.inner_text("main")
    view = await node.services.proposals.get(proposal)
    assert (view.status, view.options, view.quorum) == ("draft", ["Yes", "No"], "1/3")
    assert view.closes_at == "2099-05-01T12:30:00Z"
    await org.get_by_role("button", name="Open for voting now").click()
    await org.wait_for_url(node.at(f"/proposals/{proposal}"))
    assert await org.locator("form.ballot").count() == 1
    assert (await node.services.proposals.get(proposal)).status == "open"
    # A bad form is refused with the reason, nothing is created.
    before = len(await node.services.proposals.all())
    await org.goto(node.at("/organize/proposals/new"))
    await org.fill("#title", "Only one option")
    await org.check("#m-choice")
    await org.fill("#options", "Alone")
    await org.get_by_role("button", name="Create proposal").click()
    assert "at least 2 options" in await org.inner_text("main")
    assert len(await node.services.proposals.all()) == before
    await ctx.close()
