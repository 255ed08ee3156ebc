"""Browser test harness (its fixtures are in conftest.py): a real node (real SQLite
file, real HTTP on 127.0.0.1) and one Debian Chromium driven by Playwright's async
API, shared by a module's tests.

The node runs in the test's event loop as a real aiohttp server on a free loopback
port, built by the node's own `create_app`; the browser talks to it over TCP like any
other client. Chromium is told to resolve nothing but 127.0.0.1, so no test can reach
the internet.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from playwright.async_api import Page

from node.api import SERVICES_KEY
from node.app import create_app
from node.bootstrap import init_node
from node.config import load_config
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
