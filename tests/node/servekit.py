"""Serving a node in-process for the ops and backup tests: the app `create_app` builds,
on a real loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from nodekit import free_port
from yarl import URL

from node import bootstrap, rotation
from node.app import create_app
from node.config import load_config


@asynccontextmanager
async def serving(data: Path, **options: Any) -> AsyncIterator[tuple[web.Application, str]]:
    """The node in `data` as create_app builds it, in-process, on the loopback port its
    URL names (or a free one when its URL is a public name)."""
    named = URL(bootstrap.identity_of(data).url)
    port = named.port if named.host == "127.0.0.1" and named.port else free_port()
    config = load_config(data, {"port": port, "allow_private_network": True, **options})
    app = create_app(config)
    rotation.setup(app)  # as `convene serve` does
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def new_node(tmp_path: Path, name: str, url: str | None = None) -> Path:
    data = tmp_path / name
    await bootstrap.init_node(data, name=name, url=url or f"http://127.0.0.1:{free_port()}")
    return data


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with http.get(url, **kw) as response:
        return response.status, await response.text()
