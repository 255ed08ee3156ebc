"""The facilitation page in Chromium against real nodes in this event loop: a region, a
partner node and a chapter that follows the region. The region's organizer grants the
partner the role on the page; the partner's organizer asks for a regional proposal on
its own page, without JavaScript; the region's page shows it carried out, and a
chapter's ungranted request refused with its reason. A form without its CSRF token is
refused. Screenshot: test-artifacts/web/facilitation.png (copied to
docs/screenshots/facilitation.png)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from livenode import ARTIFACTS, LiveNode, organizer_page, start_node
from playwright.async_api import Browser

pytestmark = pytest.mark.asyncio(loop_scope="session")
T = TypeVar("T")


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


async def api(http: aiohttp.ClientSession, node: LiveNode, token: str, method: str, path: str,
              body: object = None) -> tuple[int, dict[str, object]]:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, node.at(path), json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_grant_request_and_outcome_on_the_page(browser: Browser, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        nodes = {}
        for name, kind in (("Metro Region", "region"), ("Allies", "chapter"), ("Alder", "chapter")):
            live, runner = await start_node(tmp_path / name.lower().replace(" ", "-"), name, kind)
            stack.push_async_callback(runner.cleanup)
            nodes[name] = live
        region, partner, alder = nodes["Metro Region"], nodes["Allies"], nodes["Alder"]
        http = await stack.enter_async_context(aiohttp.ClientSession())
        alder_token = (await alder.services.members.add("Alder organizer", "organizer")).token
        status, _ = await api(
            http, alder, alder_token, "POST", "/api/federation/join", {"region": region.url}
        )
        assert status == 202

        async def joined() -> bool | None:
            hook = region.services.proposals.regional
            return True if hook is not None and await hook.default_chapters() else None

        await eventually("Alder to be a chapter of the region", joined)
        ctx = await browser.new_context(viewport={"width": 412, "height": 915})
        stack.push_async_callback(ctx.close)
        nojs = await browser.new_context(
            viewport={"width": 412, "height": 915}, java_script_enabled=False
        )
        stack.push_async_callback(nojs.close)

        # The region's organizer grants the partner the role.
        page = await organizer_page(ctx, region, "Rosa")
        await page.goto(region.at("/organize/facilitation"))
        await page.fill("#fac-actor", partner.url + "/actor")
        await page.fill("#fac-convening", "Spring convening")
        await page.get_by_role("button", name="Grant the facilitator role").click()
        await page.wait_for_url(region.at("/organize/facilitation"))
        row = " ".join((await page.inner_text("#granted li")).split())
        assert partner.url + "/actor" in row and "in force" in row

        # The partner's organizer, without JavaScript, asks for a regional proposal.
        ally = await organizer_page(nojs, partner, "Sam")

        async def held() -> bool | None:
            await ally.goto(partner.at("/organize/facilitation"))
            return True if await ally.locator("#held").count() else None

        await eventually("the partner's page to show its grant", held)
        await ally.fill("#req-title", "A regional rent strike fund")
        await ally.fill("#req-body", "Every chapter contributes to one fund.")
        await ally.select_option("#req-method", "consent")
        await ally.get_by_role("button", name="Ask the region to open it").click()
        await ally.wait_for_url(partner.at("/organize/facilitation"))
        assert "sent to" in await ally.inner_text("#requests")

        # An ungranted chapter names the partner's grant; the region refuses it.
        held_row = await partner.services.db.fetchone("SELECT digest FROM facil_grants")
        assert held_row is not None
        grant = held_row["digest"]
        status, sent = await api(
            http,
            alder,
            alder_token,
            "POST",
            "/api/facilitation/requests",
            {"region": region.url + "/actor", "action": "propose", "grant": grant,
             "body": {"title": "Ours instead", "method": "consent"}},
        )  # fmt: skip
        assert status == 201, sent

        async def settled() -> bool | None:
            await page.goto(region.at("/organize/facilitation"))
            text = await page.inner_text("main")
            return True if "carried out" in text and "not_granted" in text else None

        await eventually("the region's page to show both outcomes", settled)
        carried = " ".join((await page.inner_text("#requests li")).split())
        assert "A regional rent strike fund" in carried and partner.url in carried
        refused = " ".join((await page.inner_text("#rejected li")).split())
        assert alder.url in refused and "not_granted" in refused and "is for" in refused
        await page.get_by_role("link", name="Open the proposal").click()
        assert "A regional rent strike fund" in await page.inner_text("h1")
        await page.go_back()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "facilitation.png"), full_page=True)

        # A form posted without this session's CSRF token changes nothing.
        response = await page.request.post(
            region.at("/organize/facilitation/grant"), form={"actor": alder.url + "/actor"}
        )
        assert response.status == 403
        assert alder.url not in await page.inner_text("#granted")
