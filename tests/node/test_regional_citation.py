"""A chapter checks a regional Question's `requested_by` (node/regional_citation.py,
docs/protocol.md §10.7) on real nodes in-process: a region, a partner facilitator and a
chapter following the region, each create_app on its own loopback port and SQLite file,
talking signed HTTP. Questions the region signs but could not rightly have signed are
built with the region's own key and fed to the chapter's intake (`Regional.receive`,
the path the inbox and the catch-up share)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from nodekit import call, free_port
from servekit import serving

from node import chain_store, regional_store
from node.api import SERVICES_KEY
from node.app import LEDGER_KEY
from node.bootstrap import init_node
from node.clock import rfc3339
from node.config import load_config
from node.regional import REGIONAL_KEY
from node.services import build_services
from protocol import chain
from protocol.canonical import digest

T = TypeVar("T")


@dataclass
class Peer:
    app: Any
    url: str
    actor: str
    organizer: str


async def make(tmp_path: Path, name: str, kind: str) -> tuple[Path, str]:
    data = tmp_path / name
    await init_node(data, name=name, url=f"http://127.0.0.1:{free_port()}", kind=kind)
    services = build_services(load_config(data))
    await services.db.open()
    try:
        organizer = (await services.members.add("Organizer", "organizer")).token
    finally:
        await services.db.close()
    return data, organizer


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer, Peer, aiohttp.ClientSession]]:
    async with AsyncExitStack() as stack:
        peers = []
        for name, kind in (("region", "region"), ("partner", "chapter"), ("chapter", "chapter")):
            data, organizer = await make(tmp_path, name, kind)
            app, url = await stack.enter_async_context(serving(data))
            peers.append(Peer(app, url, f"{url}/actor", organizer))
        region, partner, chapter = peers
        http = await stack.enter_async_context(aiohttp.ClientSession())
        status, body = await api(
            http, chapter, "POST", "/api/federation/join", {"region": region.url}
        )
        assert status == 202, body

        async def following() -> bool | None:
            _, view = await api(http, chapter, "GET", "/api/federation")
            return True if any(f["state"] == "accepted" for f in view["following"]) else None

        await eventually("the chapter to follow the region", following)
        yield region, partner, chapter, http


async def api(
    http: aiohttp.ClientSession, peer: Peer, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    return await call(http, method, peer.url + path, peer.organizer, body)


async def held_grants(http: aiohttp.ClientSession, peer: Peer) -> list[dict[str, Any]]:
    _, view = await api(http, peer, "GET", "/api/facilitation")
    return list(view["known"]) + list(view["held"])


async def sign_as(region: Peer, body: dict[str, Any]) -> dict[str, Any]:
    """An entry the region signs at its next seq without appending it: what a region
    breaking the rule would send."""
    services = region.app[SERVICES_KEY]
    async with services.db.write() as tx:
        head = await chain_store.head(tx)
    assert head is not None
    return chain.make_entry(
        body,
        actor=region.actor,
        seq=head[0] + 1,
        prev=head[1],
        key=services.identity.signing_key,
        key_id=services.identity.key_id,
        published=rfc3339(time.time()),
    )


async def rejected(chapter: Peer, object_id: str) -> list[tuple[str, int | None, str, str]]:
    db = chapter.app[SERVICES_KEY].db
    rows = await regional_store.rejections(db, object_id)
    return [(r.actor, r.seq, r.code, r.reason) for r in rows]


async def chapter_proposals(http: aiohttp.ClientSession, chapter: Peer) -> list[str]:
    _, listed = await api(http, chapter, "GET", "/api/proposals")
    return [str(p["object_id"]) for p in listed["items"]]


async def test_a_chapter_takes_a_cited_question_only_while_the_grant_is_in_force(
    trio: tuple[Peer, Peer, Peer, aiohttp.ClientSession],
) -> None:
    region, partner, chapter, http = trio
    status, grant = await api(http, region, "POST", "/api/facilitators", {"actor": partner.actor})
    assert status == 201, grant

    async def both_hold_grant() -> bool | None:
        held = [await held_grants(http, peer) for peer in (chapter, partner)]
        return True if all(held) else None

    await eventually("the chapter and the partner to hold the grant", both_hold_grant)

    proposal = {"title": "Rent freeze", "body": "Freeze rents", "method": "consent"}
    proposal["chapters"] = [chapter.actor]  # type: ignore[assignment]
    status, sent = await api(
        http,
        partner,
        "POST",
        "/api/facilitation/requests",
        {"region": region.actor, "action": "propose", "body": proposal},
    )
    assert status == 201, sent

    async def opened_on_chapter() -> str | None:
        entries = await region.app[LEDGER_KEY].entries()
        cited = [e for e in entries if e.get("requested_by") == sent["request"]]
        if cited and str(cited[0]["id"]) in await chapter_proposals(http, chapter):
            return str(cited[0]["id"])
        return None

    # The honest citation: held, the request fetched from the partner's outbox, checked.
    good = await eventually("the chapter to open the requested Question", opened_on_chapter)
    assert await rejected(chapter, good) == []
    question = next(e for e in await region.app[LEDGER_KEY].entries() if e["id"] == good)
    # Delivered again (a catch-up pull): held already, nothing rejected or opened twice.
    await chapter.app[REGIONAL_KEY].receive(question)
    assert await rejected(chapter, good) == []
    assert (await chapter_proposals(http, chapter)).count(good) == 1

    # A Question citing a request nobody made.
    invented = await sign_as(
        region, {**_body(question), "name": "Invented", "requested_by": digest({"x": 1})}
    )
    await chapter.app[REGIONAL_KEY].receive(invented)
    [(actor, seq, code, reason)] = await rejected(chapter, invented["id"])
    assert (actor, seq, code) == (region.actor, invented["seq"], "bad_citation")
    assert "not among the facilitators' requests" in reason
    assert invented["id"] not in await chapter_proposals(http, chapter)

    # The grant revoked, then a Question citing the partner's real request again (the
    # rule judges the grant in force at the citing seq).
    status, _ = await api(http, region, "DELETE", f"/api/facilitators/{grant['grant']}")
    assert status == 200
    late = await sign_as(region, _body(question))
    await chapter.app[REGIONAL_KEY].receive(late)
    [(actor, seq, code, reason)] = await rejected(chapter, late["id"])
    assert (actor, seq, code) == (region.actor, late["seq"], "bad_citation")
    assert "revoked" in reason
    assert late["id"] not in await chapter_proposals(http, chapter)

    # A citation that is no digest at all.
    garbled = await sign_as(region, {**_body(question), "requested_by": "nope"})
    await chapter.app[REGIONAL_KEY].receive(garbled)
    [(_, _, code, reason)] = (await rejected(chapter, garbled["id"]))[1:]  # after `late`'s
    assert code == "bad_citation" and "must be a request entry's digest" in reason


def _body(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's body: what `make_entry` takes to sign it again at another seq."""
    envelope = {"@context", "id", "actor", "seq", "prev", "published", "proof"}
    return {k: v for k, v in entry.items() if k not in envelope}
