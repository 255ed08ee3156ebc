"""The region side of following against a real node store (SQLite file, real chain):
manual approval, the Accept entry, and Follow/Accept/Undo that do not fit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from fedkit import StaticSource, make_actor

from federation import follow
from federation.actors import ActorCache
from federation.client import FederationClient
from federation.follow import FollowError, FollowService
from federation.routes import setup_routes
from node.bootstrap import init_node
from node.config import load_config
from node.federation_glue import FEDERATION_MIGRATIONS, NodeHost
from node.services import build_services
from protocol import chain


@pytest.fixture
async def chapter(serve: Any) -> StaticSource:
    """A remote chapter actor served on loopback."""
    source = StaticSource(make_actor("http://placeholder"), [])
    app = web.Application()
    setup_routes(app, source)
    source.actor = make_actor(await serve(app))
    return source


@pytest.fixture
async def region(tmp_path: Path) -> AsyncIterator[tuple[FollowService, Any]]:
    data = tmp_path / "region"
    await init_node(data, name="Region", url="http://127.0.0.1:1", kind="region")
    services = build_services(load_config(data))
    services.db.migrations["federation"] = FEDERATION_MIGRATIONS
    await services.db.open()
    client = FederationClient(signer=None, allow_private_network=True)
    actors = await ActorCache.open(services.config.database_path, client)
    host = NodeHost(services)
    host.manually_approves_followers = True
    yield FollowService(host, actors), services
    await actors.close()
    await client.close()
    await services.db.close()


def _follow(chapter: StaticSource, region_actor: str, n: int = 1) -> dict[str, Any]:
    return follow.follow_activity(chapter.actor.id, region_actor, f"{chapter.actor.id}/follows/{n}")


async def _entries(services: Any) -> list[dict[str, Any]]:
    return [
        msgspec.json.decode(e) if isinstance(e, bytes) else e
        for e in await services.ledger.entries()
    ]


async def test_manual_approval_then_accept_entry(
    region: tuple[FollowService, Any], chapter: StaticSource
) -> None:
    service, services = region
    activity = _follow(chapter, services.identity.actor)
    pending = await service.on_follow(activity, chapter.actor.id)
    assert pending.state == "pending"
    assert len(await _entries(services)) == 1  # no Accept yet: only the genesis
    accepted = await service.approve(chapter.actor.id)
    assert accepted.state == "accepted" and accepted.accept_seq == 1
    entries = await _entries(services)
    assert entries[1]["type"] == "Accept"
    assert entries[1]["object"] == activity["id"]
    assert entries[1]["follower"] == chapter.actor.id
    chain.verify_chain(entries)
    # A repeated Follow is answered with the same entry, not a new one.
    again = await service.on_follow(activity, chapter.actor.id)
    assert again.state == "accepted" and len(await _entries(services)) == 2
    # Undo Follow removes the follower.
    undo = follow.undo_activity(chapter.actor.id, activity, f"{chapter.actor.id}/undo/1")
    removed = await service.on_undo(undo, chapter.actor.id)
    assert removed is not None and removed.state == "removed"


async def test_follow_by_someone_else_or_for_someone_else_is_refused(
    region: tuple[FollowService, Any], chapter: StaticSource
) -> None:
    service, services = region
    activity = _follow(chapter, services.identity.actor)
    with pytest.raises(FollowError) as forged:
        await service.on_follow(activity, "https://mallory.example/actor")
    assert forged.value.status == 403 and "signer" in forged.value.detail
    with pytest.raises(FollowError) as elsewhere:
        await service.on_follow(_follow(chapter, "https://other.example/actor"), chapter.actor.id)
    assert "not " + services.identity.actor in elsewhere.value.detail


async def test_approving_without_a_pending_follow_is_refused(
    region: tuple[FollowService, Any], chapter: StaticSource
) -> None:
    service, _ = region
    with pytest.raises(FollowError) as info:
        await service.approve(chapter.actor.id)
    assert info.value.status == 404


async def test_accept_for_a_follow_never_sent_is_refused(
    region: tuple[FollowService, Any], chapter: StaticSource
) -> None:
    service, _ = region
    accept = {"id": chapter.actor.id + "/entries/3", "type": "Accept", "object": "x/follows/9"}
    with pytest.raises(FollowError) as info:
        await service.on_accept(accept, chapter.actor.id)
    assert info.value.status == 409 and "did not send" in info.value.detail


def test_lifecycle_tables_have_no_dead_states() -> None:
    # Every state a transition leads to can be left again or is a resting state.
    resting = {"accepted", "removed", "rejected", "left"}
    for table in (follow.FOLLOWER_STATES, follow.FOLLOWING_STATES):
        reached = set(table.values())
        leavable = {state for state, _ in table}
        assert reached <= leavable | resting
