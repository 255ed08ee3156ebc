"""Nested regions on the organizers' region page (/organize/region, node/web/region_page.py)
in a real Chromium: a state region, a city region that follows it and one chapter under
the city, each a real node in this event loop (create_app, loopback port, SQLite file),
federating over signed HTTP. The state's regional proposal closes within seconds; the
chapter's tally goes to the city, the city's decision up to the state, the state's
decision back down. The page shows, by name: on the state, the city's decision as
recomputed; on the city, the state's decision as verified.

Screenshots: test-artifacts/web/nested.png, the city's page (copied to
docs/screenshots/nested.png), and nested-state.png, the state's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from livenode import ARTIFACTS, LiveNode, free_port, organizer_page
from playwright.async_api import Browser

from node.api import SERVICES_KEY
from node.app import create_app
from node.bootstrap import init_node
from node.clock import rfc3339
from node.config import load_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

T = TypeVar("T")
GRACE = 2  # seconds after close that tallies (and lower decisions) still count


async def start(root: Path, name: str, kind: str) -> tuple[LiveNode, web.AppRunner, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = root / name
    await init_node(data, name=name, url=url, kind=kind)
    options = {"port": port, "host": "127.0.0.1", "allow_private_network": True}
    app = create_app(load_config(data, options | {"regional_grace_s": GRACE}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    services = app[SERVICES_KEY]
    token = (await services.members.add(f"{name} organizer", "organizer")).token
    return LiveNode(url, services, data), runner, token


async def until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 40) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


async def test_the_region_page_shows_each_level_by_name(browser: Browser, tmp_path: Path) -> None:
    state, state_runner, state_token = await start(tmp_path, "Lakeland State", "region")
    city, city_runner, city_token = await start(tmp_path, "Harbor City", "region")
    chapter, chapter_runner, chapter_token = await start(tmp_path, "Dockside Chapter", "chapter")
    ctx = await browser.new_context(viewport={"width": 760, "height": 915})
    try:
        async with aiohttp.ClientSession() as http:

            async def call(
                node: LiveNode, token: str, method: str, path: str, body: Any = None
            ) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.request(method, node.at(path), json=body, headers=headers) as r:
                    return r.status, await r.json()

            for follower, token, region in (
                (city, city_token, state),
                (chapter, chapter_token, city),
            ):
                status, body = await call(
                    follower, token, "POST", "/api/federation/join", {"region": region.url}
                )
                assert status == 202, body
                actor = region.services.identity.actor

                async def joined(
                    f: LiveNode = follower, t: str = token, a: str = actor
                ) -> bool | None:
                    _, seen = await call(f, t, "GET", "/api/federation")
                    ok = [x for x in seen["following"] if x["state"] == "accepted"]
                    return True if any(x["region"] == a for x in ok) else None

                await until("the join to be accepted", joined)

            closes = rfc3339(time.time() + 4)
            status, proposal = await call(
                state,
                state_token,
                "POST",
                "/api/proposals",
                {"title": "Ferry fares", "method": "consent", "scope": "regional"}
                | {"closes_at": closes},
            )
            assert status == 201, proposal

            async def regional_view(node: LiveNode, token: str) -> dict[str, Any] | None:
                _, listed = await call(node, token, "GET", "/api/proposals")
                ids = [p["id"] for p in listed["items"] if p["object_id"] == proposal["object_id"]]
                if not ids:
                    return None
                _, view = await call(node, token, "GET", f"/api/proposals/{ids[0]}/regional")
                return dict(view)

            async def state_took_city() -> dict[str, Any] | None:
                view = await regional_view(state, state_token)
                return view if view and view.get("lower_decisions") else None

            async def city_verified() -> dict[str, Any] | None:
                view = await regional_view(city, city_token)
                return view if view and view.get("upper_verification") else None

            state_view = await until("the state to take the city's decision", state_took_city)
            city_view = await until("the city to check the state's decision", city_verified)
            assert city_view["upper_verification"] == "verified", city_view

        names = {"state": "Lakeland State", "city": "Harbor City", "chapter": "Dockside Chapter"}
        lead = await organizer_page(ctx, state, "Lena")
        await lead.goto(state.at("/organize/region"))
        accepted = await lead.inner_text("#accepted")
        assert names["city"] in accepted  # the follower by name, its address beside it
        levels = await lead.inner_text("#levels")
        assert "Ferry fares" in levels and names["city"] in levels
        seq = state_view["lower_decisions"][0]["seq"]
        assert f"seq {seq}" in levels and "recomputed" in levels
        assert city.services.identity.actor not in levels  # names, not addresses
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await lead.screenshot(path=str(ARTIFACTS / "nested-state.png"), full_page=True)
        # The results page of the same proposal shows its levels too, to members.
        # (Checked before logging in on the city: both share 127.0.0.1's cookies.)
        await lead.goto(state.at(f"/proposals/{state_view['id']}/results"))
        across = await lead.inner_text("#levels")
        assert names["city"] in across and f"seq {seq}" in across and "recomputed" in across
        assert city.services.identity.actor not in across

        host = await organizer_page(ctx, city, "Hugo")
        await host.goto(city.at("/organize/region"))
        following = await host.inner_text("#following")
        assert names["state"] in following and "member of this region" in following
        level = await host.inner_text("#levels")
        assert "This region decides for its 1 chapter" in level
        assert f"{names['state']}'s decision" in level and "verified" in level
        assert state.services.identity.actor not in level
        await host.screenshot(path=str(ARTIFACTS / "nested.png"), full_page=True)

        # The results page of the same proposal shows its levels too, to members.
        await host.goto(city.at(f"/proposals/{city_view['id']}/results"))
        across = await host.inner_text("#levels")
        assert f"{names['state']}'s decision" in across and "verified" in across
    finally:
        await ctx.close()
        for runner in (chapter_runner, city_runner, state_runner):
            await runner.cleanup()
