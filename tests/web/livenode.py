"""Browser test harness (its fixtures are in conftest.py): a real node (real SQLite
file, real HTTP on 127.0.0.1) and one Debian Chromium driven by Playwright's async
API, shared by a module's tests.

The node runs in the test's event loop as a real aiohttp server on a free loopback
port, built by the node's own `create_app`; the browser talks to it over TCP like any
other client. Chromium is told to resolve nothing but 127.0.0.1, so no test can reach
the internet.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from playwright.async_api import BrowserContext, Page

from node.api import SERVICES_KEY
from node.app import create_app
from node.bootstrap import init_node
from node.clock import rfc3339
from node.config import load_config
from node.proposal_forms import NewProposal
from node.services import NodeServices

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
PASS = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveNode:
    url: str
    services: NodeServices
    data_dir: Path

    def at(self, path: str) -> str:
        return self.url + path


async def start_node(
    data_dir: Path, name: str = "Riverside Chapter", kind: str = "chapter"
) -> tuple[LiveNode, web.AppRunner]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    await init_node(data_dir, name=name, url=url, kind=kind)
    # Loopback federation between test nodes needs private addresses allowed.
    options = {"port": port, "host": "127.0.0.1", "allow_private_network": True}
    app = create_app(load_config(data_dir, options))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return LiveNode(url, app[SERVICES_KEY], data_dir), runner


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# -- what a person does in the browser -------------------------------------------------


async def use_link(page: Page, link: str, passphrase: str | None = PASS) -> None:
    """Log in with a one-time link; with a passphrase, also save it and wait until the
    home page has made and registered this device's ballot key.

    member_keys.js registers the key and then reloads the page; a test that clicked
    before the reload could lose its click to it. The script marks the key as this
    device's (``data-device-key``) only on the page that finds it registered, which
    is the reloaded one, so waiting for that mark waits out the reload too.
    """
    await page.goto(link)
    await page.get_by_role("button", name="Log me in").click()
    await page.wait_for_url(re.compile(r"/account/passphrase\?welcome=1$"))
    if passphrase is not None:
        await page.fill("#password", passphrase)
        await page.fill("#again", passphrase)
        await page.get_by_role("button", name="Save passphrase").click()
        await page.get_by_text("Passphrase saved").wait_for()
        await page.locator("[data-member-keys][data-device-key]").wait_for(state="attached")
        await page.wait_for_load_state("load")


async def organizer_page(context: BrowserContext, node: LiveNode, name: str) -> Page:
    added = await node.services.members.add(name, "organizer")
    page = await context.new_page()
    await use_link(page, added.login_url, passphrase=None)  # Argon2id is slow on purpose
    return page


async def member_page(context: BrowserContext, node: LiveNode, name: str) -> Page:
    added = await node.services.members.add(name, "member")
    page = await context.new_page()
    await use_link(page, added.login_url, passphrase=None)
    return page


async def create(
    page: Page, node: LiveNode, title: str, method: str, options: list[str] | None = None
) -> str:
    await page.goto(node.at("/organize/proposals/new"))
    await page.fill("#title", title)
    await page.fill("#body", f"Should we decide {title}?\n\nSecond paragraph.")
    await page.check(f"#m-{method}")
    await page.fill("#options", "\n".join(options or []))
    await page.get_by_role("button", name="Create proposal").click()
    await page.wait_for_url(re.compile(r"/proposals/p-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


async def open_proposal(
    node: LiveNode,
    title: str,
    method: str,
    options: list[str] | None = None,
    closes_in_s: int | None = None,
    block_limit: int = 0,
) -> str:
    """A proposal opened through the proposals service (the form is tested once, above)."""
    members = await node.services.members.all()
    organizer = next((m for m in members if m.at_least("organizer")), None)
    if organizer is None:
        organizer = (await node.services.members.add("Founder", "organizer")).member
    closes = None
    if closes_in_s is not None:
        closes = rfc3339(time.time() + closes_in_s)
    form = NewProposal(
        title=title, method=method, options=options or [], closes_at=closes, block_limit=block_limit
    )
    return (await node.services.proposals.create(organizer, form)).id


async def receipt_of(page: Page) -> str:
    await page.get_by_text("Your vote is recorded").wait_for()
    return (await page.inner_text("#receipt")).strip()


async def close(page: Page, node: LiveNode, proposal_id: str) -> None:
    await page.goto(node.at(f"/proposals/{proposal_id}"))
    await page.get_by_role("button", name="Close voting now and count").click()
    await page.wait_for_url(re.compile(rf"/proposals/{proposal_id}/results$"))


async def chart_texts(page: Page) -> list[str]:
    return await page.locator("svg.chart:not(.turnout) text").all_text_contents()
