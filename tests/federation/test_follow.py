"""The region side of following against a real node store (SQLite file, real chain):
manual approval, the Accept entry, and Follow/Accept/Undo that do not fit."""

from __future__ import annotations

import sqlite3
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
from node.demo import free_port
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


async def test_approving_an_unknown_actor_fetches_nothing_and_is_404(
    region: tuple[FollowService, Any],
) -> None:
    service, _ = region
    # Nothing listens there: a fetch would fail as unreachable (502), not as unknown.
    nowhere = f"http://127.0.0.1:{free_port()}/actor"
    with pytest.raises(FollowError) as info:
        await service.approve(nowhere)
    assert info.value.status == 404 and "no pending Follow" in info.value.detail


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
    resting = {"accepted", "removed", "rejected", "left"}  # each can be re-entered by a Follow
    for table in (follow.FOLLOWER_STATES, follow.FOLLOWING_STATES):
        reached = set(table.values())
        leavable = {state for state, _ in table}
        assert reached <= leavable | resting


def _queued(services: Any) -> list[tuple[str, dict[str, Any]]]:
    """(inbox, activity) of every queued delivery in the node's database file."""
    with sqlite3.connect(services.config.database_path) as db:
        rows = db.execute(
            "SELECT d.inbox, o.body FROM fed_delivery d JOIN fed_outgoing o"
            " ON o.id = d.outgoing_id ORDER BY d.id"
        ).fetchall()
    return [(inbox, msgspec.json.decode(body)) for inbox, body in rows]


async def test_reject_tells_the_follower(
    region: tuple[FollowService, Any], chapter: StaticSource
) -> None:
    service, services = region
    activity = _follow(chapter, services.identity.actor)
    await service.on_follow(activity, chapter.actor.id)
    rejected = await service.reject(chapter.actor.id, nonce="n1")
    assert rejected.state == "rejected"
    ((inbox, sent),) = _queued(services)
    assert inbox == chapter.actor.url("inbox")
    assert sent["type"] == "Reject" and sent["object"] == activity["id"]
    assert len(await _entries(services)) == 1  # a refusal is not a chain entry
    with pytest.raises(FollowError):
        await service.approve(chapter.actor.id)  # nothing pending any more


@pytest.fixture
async def member_chapter(tmp_path: Path) -> AsyncIterator[tuple[FollowService, Any]]:
    data = tmp_path / "chapter"
    await init_node(data, name="Chapter", url="http://127.0.0.1:2", kind="chapter")
    services = build_services(load_config(data))
    services.db.migrations["federation"] = FEDERATION_MIGRATIONS
    await services.db.open()
    client = FederationClient(signer=None, allow_private_network=True)
    actors = await ActorCache.open(services.config.database_path, client)
    yield FollowService(NodeHost(services), actors), services
    await actors.close()
    await client.close()
    await services.db.close()


async def test_chapter_side_join_accept_reject_leave(
    member_chapter: tuple[FollowService, Any], chapter: StaticSource
) -> None:
    service, services = member_chapter
    remote_region = chapter  # any served actor will do as the region here
    joined = await service.join(remote_region.actor.base_url, nonce="j1")
    assert joined.state == "requested" and joined.target == remote_region.actor.id
    ((inbox, sent),) = _queued(services)
    assert inbox == remote_region.actor.url("inbox")
    assert sent == follow.follow_activity(services.identity.actor, joined.target, joined.follow_id)
    region_id = remote_region.actor.id
    # An answer to a Follow never sent, or from someone else, is refused.
    with pytest.raises(FollowError):
        await service.on_accept({"type": "Accept", "object": "elsewhere/follows/1"}, region_id)
    with pytest.raises(FollowError):
        await service.on_accept(
            {"type": "Accept", "object": joined.follow_id}, "https://x.example/a"
        )
    rejected = await service.on_reject({"type": "Reject", "object": joined.follow_id}, region_id)
    assert rejected.state == "rejected"
    with pytest.raises(FollowError) as late:
        await service.on_accept({"type": "Accept", "object": joined.follow_id}, region_id)
    assert late.value.status == 409
    again = await service.join(remote_region.actor.id, nonce="j2")
    assert again.state == "requested" and again.follow_id.endswith("/follows/j2")
    accepted = await service.on_accept(
        {"id": region_id + "/entries/1", "type": "Accept", "object": again.follow_id}, region_id
    )
    assert accepted.state == "accepted"
    left = await service.leave(region_id, nonce="u1")
    assert left.state == "left"
    inbox, undo = _queued(services)[-1]
    assert undo["type"] == "Undo" and undo["object"]["id"] == again.follow_id
