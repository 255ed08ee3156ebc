"""Partner facilitation on real nodes in-process (node/facilitation.py): a region and a
partner node, each create_app on its own loopback port and SQLite file, talking signed
HTTP. The region's intake is also fed entries directly (`Regional.receive`, the path
the inbox and the catch-up share) to replay and misaddress them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from nodekit import call, free_port
from servekit import serving

from node.app import LEDGER_KEY
from node.bootstrap import init_node
from node.config import load_config
from node.regional import REGIONAL_KEY
from node.services import build_services
from protocol import facilitation as rule
from protocol.canonical import digest

T = TypeVar("T")
# A region with no chapters yet: the proposal names the one expected to vote.
CHAPTER = "http://127.0.0.1:9/actor"
PROPOSAL = {
    "title": "Rent freeze",
    "body": "Freeze rents",
    "method": "consent",
    "chapters": [CHAPTER],
}


@dataclass
class Peer:
    app: Any
    url: str
    actor: str
    organizer: str
    member: str


async def make(tmp_path: Path, name: str, kind: str) -> tuple[Path, str, str]:
    data = tmp_path / name
    port = free_port()
    await init_node(data, name=name, url=f"http://127.0.0.1:{port}", kind=kind)
    services = build_services(load_config(data))
    await services.db.open()
    try:
        organizer = (await services.members.add("Organizer", "organizer")).token
        member = (await services.members.add("Member")).token
    finally:
        await services.db.close()
    return data, organizer, member


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Peer, Peer, aiohttp.ClientSession]]:
    async with AsyncExitStack() as stack:
        peers = []
        for name, kind in (("region", "region"), ("partner", "chapter")):
            data, organizer, member = await make(tmp_path, name, kind)
            app, url = await stack.enter_async_context(serving(data))
            peers.append(Peer(app, url, f"{url}/actor", organizer, member))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield peers[0], peers[1], http


async def api(http: aiohttp.ClientSession, peer: Peer, method: str, path: str, body: Any = None,
              token: str | None = None) -> tuple[int, Any]:  # fmt: skip
    return await call(http, method, peer.url + path, token or peer.organizer, body)


async def view(http: aiohttp.ClientSession, peer: Peer) -> dict[str, Any]:
    status, body = await api(http, peer, "GET", "/api/facilitation", token=peer.member)
    assert status == 200, body
    return dict(body)


async def own_entry(peer: Peer, entry_id: str) -> dict[str, Any]:
    entries = await peer.app[LEDGER_KEY].entries()
    return next(e for e in entries if e["id"] == entry_id)


async def granted(http: aiohttp.ClientSession, region: Peer, partner: Peer) -> str:
    status, grant = await api(http, region, "POST", "/api/facilitators", {"actor": partner.actor})
    assert status == 201, grant
    assert grant["facilitator"] == partner.actor and grant["in_force"]

    async def held() -> bool | None:
        return True if (await view(http, partner))["held"] else None

    await eventually("the partner to hold its grant", held)
    return str(grant["grant"])


async def test_a_granted_partner_proposes_and_closes_through_the_region(
    pair: tuple[Peer, Peer, aiohttp.ClientSession],
) -> None:
    region, partner, http = pair
    grant = await granted(http, region, partner)
    status, sent = await api(
        http,
        partner,
        "POST",
        "/api/facilitation/requests",
        {"region": region.actor, "action": "propose", "body": PROPOSAL},
    )
    assert status == 201 and sent["outcome"] == "sent" and sent["grant"] == grant, sent

    async def carried() -> dict[str, Any] | None:
        for r in (await view(http, region))["requests"]:
            if r["request"] == sent["request"] and r["proposal"]:
                return dict(r)
        return None

    done = await eventually("the region to carry out the request", carried)
    assert (done["actor"], done["action"], done["outcome"]) == (partner.actor, "propose", "carried")
    status, proposal = await api(http, region, "GET", f"/api/proposals/{done['proposal']}")
    assert status == 200 and proposal["title"] == PROPOSAL["title"]
    assert proposal["scope"] == "regional" and proposal["status"] == "open"
    question = await own_entry(region, proposal["object_id"])
    assert question["requested_by"] == sent["request"]
    # The audit's rule holds over the region's real chain and the partner's real request.
    request = await own_entry(partner, sent["id"])
    assert digest(request) == sent["request"]
    carried_out = rule.check_requested(await region.app[LEDGER_KEY].entries(), [request])
    assert [(c.request, c.facilitator) for c in carried_out] == [(sent["request"], partner.actor)]

    # Replayed into the region's intake: refused and named, no second proposal.
    await region.app[REGIONAL_KEY].receive(request)
    seen = await view(http, region)
    assert [(r["actor"], r["seq"], r["code"]) for r in seen["rejected"]] == [
        (partner.actor, request["seq"], "replayed")
    ]
    _, listed = await api(http, region, "GET", "/api/proposals")
    assert len(listed["items"]) == 1

    # The partner closes the proposal it asked for.
    status, closing = await api(
        http,
        partner,
        "POST",
        "/api/facilitation/requests",
        {"region": region.actor, "action": "close", "body": {"proposal": question["id"]}},
    )
    assert status == 201, closing

    async def closed() -> bool | None:
        _, p = await api(http, region, "GET", f"/api/proposals/{done['proposal']}")
        return True if p["status"] in ("closed", "decided") else None

    await eventually("the region to close the requested proposal", closed)


async def test_refusals_name_actor_seq_and_reason(
    pair: tuple[Peer, Peer, aiohttp.ClientSession],
) -> None:
    region, partner, http = pair
    requests = "/api/facilitation/requests"
    # No grant yet: the partner's node will not sign a request without one it holds.
    body = {"region": region.actor, "action": "propose", "body": PROPOSAL}
    status, answer = await api(http, partner, "POST", requests, body)
    assert (status, answer["error"]) == (409, "conflict"), answer
    # Granting: organizers only, never to the region itself, one grant in force at once.
    status, answer = await api(
        http, region, "POST", "/api/facilitators", {"actor": partner.actor}, token=region.member
    )
    assert status == 403, answer
    status, answer = await api(http, region, "POST", "/api/facilitators", {"actor": region.actor})
    assert status == 400 and "itself" in answer["detail"]
    status, answer = await api(http, region, "POST", "/api/facilitators", {"actor": "ftp://x"})
    assert status == 400, answer
    grant = await granted(http, region, partner)
    status, answer = await api(http, region, "POST", "/api/facilitators", {"actor": partner.actor})
    assert status == 409, answer
    # A body the partner's node cannot even read is a 400 there, nothing signed.
    status, answer = await api(
        http, partner, "POST", requests, {**body, "body": {**PROPOSAL, "colour": "red"}}
    )
    assert status == 400 and "colour" in answer["detail"]

    async def sign(**fields: Any) -> dict[str, Any]:
        status, sent = await api(http, partner, "POST", requests, {**body, **fields})
        assert status == 201, sent
        return await own_entry(partner, sent["id"])

    intake = region.app[REGIONAL_KEY]
    elsewhere = await sign(region=CHAPTER, grant=grant)
    unknown = await sign(grant="ab" * 32)
    bad_method = await sign(body={**PROPOSAL, "method": "lottery"})
    local = await sign(body={**PROPOSAL, "scope": "local"})
    not_theirs = await sign(action="close", body={"proposal": f"{region.actor}/entries/1"})
    for entry in (elsewhere, unknown, bad_method, local, not_theirs):
        await intake.receive(entry)
    status, answer = await api(http, region, "DELETE", f"/api/facilitators/{grant}")
    assert status == 200 and answer["revoked_seq"] is not None, answer
    status, answer = await api(http, region, "DELETE", f"/api/facilitators/{grant}")
    assert status == 409, answer
    after_revoke = await sign(grant=grant)
    await intake.receive(after_revoke)
    # A forgery: the partner's request with its body changed after signing.
    forged = {**after_revoke, "body": {**PROPOSAL, "title": "Something else"}}
    await intake.receive(forged)

    # The partner's node delivers each request too, so one may also be refused again
    # later for a second reason (e.g. revoked by then): each named at least as below.
    named = {(r["seq"], r["code"]) for r in (await view(http, region))["rejected"]}
    assert named >= {
        (elsewhere["seq"], "misaddressed"),
        (unknown["seq"], "not_granted"),
        (bad_method["seq"], "malformed"),
        (local["seq"], "malformed"),
        (not_theirs["seq"], "not_requested"),
        (after_revoke["seq"], "revoked"),
        (forged["seq"], "forged"),
    }
    for r in (await view(http, region))["rejected"]:
        assert r["actor"] == partner.actor and r["reason"]
    _, listed = await api(http, region, "GET", "/api/proposals")
    assert listed["items"] == []

    async def revoked_at_partner() -> bool | None:
        held = (await view(http, partner))["held"]
        return True if held and not held[0]["in_force"] else None

    await eventually("the partner to learn of the revocation", revoked_at_partner)
    status, answer = await api(http, partner, "POST", requests, body)
    assert status == 409, answer  # no grant in force held any more


async def test_bad_input_at_the_api_and_a_misaddressed_grant(
    pair: tuple[Peer, Peer, aiohttp.ClientSession],
) -> None:
    region, partner, http = pair
    for raw in (b"{not json", b'{"actor": "http://a.example/actor", "role": "boss"}', b"[]"):
        async with http.post(
            region.url + "/api/facilitators",
            data=raw,
            headers={"Authorization": f"Bearer {region.organizer}"},
        ) as r:
            answer = await r.json()
            assert (r.status, answer["error"]) == (400, "bad_request"), answer
    status, answer = await api(http, region, "DELETE", "/api/facilitators/" + "cd" * 32)
    assert status == 404, answer
    # A chapter grants nothing.
    status, answer = await api(http, partner, "POST", "/api/facilitators", {"actor": region.actor})
    assert status == 400 and "only a region" in answer["detail"], answer
    # A grant for someone else, from a region the partner does not follow: refused there.
    status, other = await api(http, region, "POST", "/api/facilitators", {"actor": CHAPTER})
    assert status == 201, other
    entry = await own_entry(region, f"{region.actor}/entries/{other['seq']}")
    await partner.app[REGIONAL_KEY].receive(entry)
    rejected = (await view(http, partner))["rejected"]
    assert [(r["actor"], r["seq"], r["code"]) for r in rejected] == [
        (region.actor, other["seq"], "misaddressed")
    ]
    assert (await view(http, partner))["known"] == []
