"""A node in-process on loopback publishes a chain entry to its followers: the Accept
and the entry arrive, signed and verbatim, at a real follower inbox."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from fedkit import StaticSource, make_actor

from federation import follow, httpsig
from federation.routes import setup_routes
from node.app import LEDGER_KEY, create_app
from node.bootstrap import init_node
from node.config import load_config
from node.federation_glue import FOLLOW_KEY, publication, wake_delivery


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def region(tmp_path: Path) -> AsyncIterator[web.Application]:
    port = _free_port()
    data = tmp_path / "region"
    await init_node(data, name="Region", url=f"http://127.0.0.1:{port}", kind="region")
    app = create_app(load_config(data, {"allow_private_network": True, "port": port}))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield app
    await runner.cleanup()


@pytest.fixture
async def chapter(serve: Any) -> tuple[StaticSource, list[dict[str, Any]]]:
    """A follower with a real inbox that checks the signature's shape and records."""
    received: list[dict[str, Any]] = []
    source = StaticSource(make_actor("http://placeholder"), [])

    async def inbox(request: web.Request) -> web.Response:
        body = await request.read()
        parsed = httpsig.parse_signature_headers(
            "POST", request.path_qs, request.headers, body, scheme="http"
        )
        assert parsed.key_id.endswith("/actor#main-key")
        received.append(msgspec.json.decode(body))
        return web.Response(status=202)

    app = web.Application()
    setup_routes(app, source)
    app.router.add_post("/inbox", inbox)
    source.actor = make_actor(await serve(app))
    return source, received


async def _eventually(check: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not delivered in time"
        await asyncio.sleep(0.05)


async def test_followers_receive_the_accept_and_then_every_published_entry(
    region: web.Application, chapter: tuple[StaticSource, list[dict[str, Any]]]
) -> None:
    source, received = chapter
    service = region[FOLLOW_KEY]
    follow_id = source.actor.id + "/follows/1"
    activity = follow.follow_activity(source.actor.id, service.host.actor_id, follow_id)
    await service.on_follow(activity, source.actor.id)
    await _eventually(lambda: any(r["type"] == "Accept" for r in received))
    (accept,) = received
    assert accept["object"] == follow_id and accept["follower"] == source.actor.id

    body = {"type": "RosterChange", "operation": "add", "member": "m-1", "role": "member"}
    appended = await region[LEDGER_KEY].append(body, await publication(region))
    wake_delivery(region)
    await _eventually(lambda: len(received) == 2)
    assert received[1] == appended.entry
