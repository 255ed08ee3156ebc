"""Fixtures for node tests: an initialised data folder and in-process services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nodekit import FakeClock

from node.bootstrap import init_node
from node.config import load_config
from node.services import NodeServices, build_services


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def services(tmp_path: Path, clock: FakeClock) -> AsyncIterator[NodeServices]:
    data = tmp_path / "data"
    await init_node(data, name="Riverside", url="http://127.0.0.1:9", clock=clock)
    built = build_services(load_config(data), clock)
    await built.db.open()
    built.ballot_box.start()
    try:
        yield built
    finally:
        await built.ballot_box.stop()
        await built.db.close()
        await asyncio.sleep(0)
