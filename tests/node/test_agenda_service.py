"""The bottom-up agenda on real nodes (node/agenda_service.py, protocol.md §10.4): one
region and three chapters, each a real aiohttp server built by `create_app` on a
loopback port with its own SQLite file, federating over real signed HTTP. Tests run in
order on one cluster (module scope)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from nodekit import free_port

from node.api import SERVICES_KEY
from node.app import create_app
from node.bootstrap import init_node
from node.clock import rfc3339
from node.config import load_config
from node.regional import REGIONAL_KEY, Unready
from protocol import agenda, chain, keys

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Live:
    name: str
    url: str
    app: web.Application
    runner: web.AppRunner
    organizer: str = ""
    member: str = ""

    @property
    def actor(self) -> str:
        return self.app[SERVICES_KEY].identity.actor


@dataclass
class Cluster:
    region: Live
    chapters: list[Live]
    http: aiohttp.ClientSession

    async def call(
        self, method: str, node: Live, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or node.organizer}"}
        async with self.http.request(method, node.url + path, json=body, headers=headers) as r:
            return r.status, await r.json()


async def start(root: Path, name: str, kind: str) -> Live:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = root / name.lower()
    await init_node(data, name=name, url=url, kind=kind)
    app = create_app(load_config(data, {"port": port, "allow_private_network": True}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    members = app[SERVICES_KEY].members
    live = Live(name, url, app, runner)
    live.organizer = (await members.add("Organizer", "organizer")).to_json()["token"]
    live.member = (await members.add("Member", "member")).to_json()["token"]
    return live


async def until(what: str, probe: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("agenda")
    region = await start(root, "Region", "region")
    chapters = [await start(root, n, "chapter") for n in ("Alder", "Birch", "Cedar", "Dogwood")]
    async with aiohttp.ClientSession() as http:
        c = Cluster(region, chapters, http)
        for ch in chapters:
            status, _ = await c.call("POST", ch, "/api/federation/join", {"region": region.url})
            assert status == 202

        async def joined() -> bool | None:
            _, body = await c.call("GET", region, "/api/federation")
            ok = {f["actor"] for f in body["followers"] if f["state"] == "accepted"}
            return True if ok >= {ch.actor for ch in chapters} else None

        await until("the region to accept its chapters", joined)
        for ch in chapters:

            async def following(node: Live = ch) -> bool | None:
                _, body = await c.call("GET", node, "/api/federation")
                return True if any(f["state"] == "accepted" for f in body["following"]) else None

            await until(f"{ch.name} to follow", following)
        try:
            yield c
        finally:
            for node in [region, *chapters]:
                await node.runner.cleanup()


SEEN: dict[str, Any] = {}


async def agenda_on(c: Cluster, node: Live, config: str, check: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, view = await c.call("GET", node, f"/api/agenda/{config}")
        return view if status == 200 and check(view) else None

    found: dict[str, Any] = await until(f"{node.name}'s agenda", probe)
    return found


async def test_the_region_opens_an_agenda_for_listed_chapters(cluster: Cluster) -> None:
    c = cluster
    listed = [ch.actor for ch in c.chapters[:3]]  # Dogwood follows but is not listed
    body = {"convening": "Autumn convening", "chapters": listed, "min_sponsors": 2}
    status, view = await c.call("POST", c.region, "/api/agenda", body)
    assert status == 201, view
    assert view["needed"] == 2 and view["closed"] is False and view["items"] == []
    assert view["region"] == c.region.actor and view["chapters"] == listed
    SEEN["config"] = config = view["config"]
    for ch in c.chapters[:3]:
        seen = await agenda_on(c, ch, config, lambda v: True)
        assert seen["config"] == config
    # a member may read, not open; a chapter opens no regional agenda
    status, err = await c.call("POST", c.region, "/api/agenda", body, token=c.region.member)
    assert (status, err["error"]) == (403, "forbidden")
    status, err = await c.call("POST", c.chapters[0], "/api/agenda", body)
    assert status == 403 and "only a region" in err["detail"]
    status, err = await c.call("POST", c.region, "/api/agenda", {**body, "min_share": "3/2"})
    assert status == 400 and "min_share" in err["detail"]
    status, err = await c.call("POST", c.region, "/api/agenda", {**body, "colour": "red"})
    assert status == 400 and "colour" in err["detail"]


async def test_submissions_and_sponsorships_reach_every_node(cluster: Cluster) -> None:
    c = cluster
    config = SEEN["config"]
    alder, birch, cedar = c.chapters[:3]
    item = {"title": "Free transit", "summary": "Fare-free buses in the whole region"}
    status, sub = await c.call("POST", alder, f"/api/agenda/{config}/items", item)
    assert status == 201, sub
    status, other = await c.call(
        "POST", birch, f"/api/agenda/{config}/items", {"title": "Library hours"}
    )
    assert status == 201, other
    SEEN["transit"], SEEN["library"] = sub["item"], other["item"]
    for node in (c.region, alder, birch, cedar):
        await agenda_on(c, node, config, lambda v: len(v["items"]) == 2)
    status, sp = await c.call("POST", cedar, f"/api/agenda/{config}/items/{sub['item']}/sponsor")
    assert status == 201, sp
    views = [
        await agenda_on(c, node, config, lambda v: v["items"][0]["status"] == "qualified")
        for node in (c.region, alder, birch, cedar)
    ]
    # every node computes the same agenda from the same signed entries
    assert all(v["items"] == views[0]["items"] for v in views)
    top = views[0]["items"][0]
    assert top["item"] == sub["item"] and top["sponsors"] == sorted([alder.actor, cedar.actor])
    assert views[0]["items"][1]["status"] == "submitted"
    # a chapter sponsors once; the region and a member do not sponsor
    status, err = await c.call("POST", cedar, f"/api/agenda/{config}/items/{sub['item']}/sponsor")
    assert (status, err["error"]) == (409, "already_sponsored")
    status, err = await c.call(
        "POST", c.region, f"/api/agenda/{config}/items/{sub['item']}/sponsor"
    )
    assert status == 403
    status, err = await c.call(
        "POST", birch, f"/api/agenda/{config}/items/{sub['item']}/sponsor", token=birch.member
    )
    assert status == 403
    status, err = await c.call("POST", birch, f"/api/agenda/{config}/items/{'0' * 64}/sponsor")
    assert status == 404
    status, err = await c.call("POST", c.chapters[3], f"/api/agenda/{config}/items", item)
    assert status in (403, 404)  # Dogwood is not listed (and may not even hold the config)
    status, err = await c.call("POST", alder, f"/api/agenda/{config}/items", {"title": ""})
    assert status == 400


async def test_a_chapter_back_from_a_stop_pulls_what_it_missed(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    c = cluster
    config = SEEN["config"]
    alder, cedar = c.chapters[0], c.chapters[2]
    data = Path(cedar.app[SERVICES_KEY].config.data_dir)
    port = int(cedar.url.rsplit(":", 1)[1])
    await cedar.runner.cleanup()  # Cedar is down while Alder submits
    status, sub = await c.call(
        "POST", alder, f"/api/agenda/{config}/items", {"title": "Bike lanes"}
    )
    assert status == 201, sub
    await agenda_on(c, c.region, config, lambda v: sub["item"] in {i["item"] for i in v["items"]})
    app = create_app(load_config(data, {"port": port, "allow_private_network": True}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cedar.app, cedar.runner = app, runner
    # Alder's delivery to Cedar failed and waits out its backoff (16 s and more); the
    # catch-up on start pulls the entry from Alder's outbox well before that
    started = time.monotonic()
    held = await until(
        "Cedar to pull the item it missed",
        lambda: _holds(c, cedar, config, sub["item"]),
        timeout=12,
    )
    assert held and time.monotonic() - started < 12
    SEEN["bikes"] = sub["item"]


async def _holds(c: Cluster, node: Live, config: str, item: str) -> bool | None:
    status, view = await c.call("GET", node, f"/api/agenda/{config}")
    return True if status == 200 and item in {i["item"] for i in view["items"]} else None


def _refused(view: dict[str, Any], actor: str, seq: int) -> dict[str, Any] | None:
    return next((r for r in view["rejected"] if (r["actor"], r["seq"]) == (actor, seq)), None)


async def refusal_on(c: Cluster, node: Live, actor: str, seq: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        _, view = await c.call("GET", node, "/api/agenda")
        return _refused(view, actor, seq)

    found: dict[str, Any] = await until(f"{node.name} to name {actor} seq {seq}", probe)
    return found


async def test_misbehaving_chapters_are_refused_and_named(cluster: Cluster) -> None:
    c = cluster
    config = SEEN["config"]
    alder, dogwood = c.chapters[0], c.chapters[3]
    # Dogwood's node signs a submission although it is not listed (its API would
    # refuse; a misbehaving node appends it anyway, and the real delivery path runs)
    ledger = dogwood.app[SERVICES_KEY].ledger
    bad = await ledger.append(agenda.submission_body(c.region.actor, config, "Sneaked in"))
    r = await refusal_on(c, c.region, dogwood.actor, bad.seq)
    assert r["code"] == "not_listed" and r["type"] == "AgendaSubmission"
    assert dogwood.actor in r["reason"]
    # Alder signs one addressed to another region with this config
    ledger = alder.app[SERVICES_KEY].ledger
    wrong = await ledger.append(agenda.submission_body(dogwood.actor, config, "Elsewhere"))
    for node in (c.region, c.chapters[1]):
        r = await refusal_on(c, node, alder.actor, wrong.seq)
        assert r["code"] == "misaddressed" and "addressed to region" in r["reason"]
    # a malformed one: a title longer than §10.4 allows
    long_title = {"type": "AgendaSubmission", "region": c.region.actor, "config": config}
    malformed = await ledger.append({**long_title, "title": "x" * 501})
    r = await refusal_on(c, c.region, alder.actor, malformed.seq)
    assert r["code"] == "malformed" and "title" in r["reason"]
    # a config from a node Alder does not follow as its region (Dogwood, a chapter)
    rogue = await dogwood.app[SERVICES_KEY].ledger.append(
        agenda.config_body("Rogue convening", [alder.actor])
    )
    r = await refusal_on(c, alder, dogwood.actor, rogue.seq)
    assert r["code"] == "not_followed" and r["type"] == "AgendaConfig"
    _, held = await c.call("GET", alder, "/api/agenda")
    assert [a["convening"] for a in held["items"]] == ["Autumn convening"]
    # a forged one: Alder's name, another key
    forger = keys.SigningKey.from_seed(b"f" * 32)
    forged = chain.make_entry(
        agenda.submission_body(c.region.actor, config, "Forged"),
        actor=alder.actor,
        seq=malformed.seq + 1,
        prev="00" * 32,
        key=forger,
        key_id=f"{alder.actor}#ed25519-0",
        published="2026-11-26T15:00:00Z",
    )
    await c.region.app[REGIONAL_KEY].receive(forged)
    r = await refusal_on(c, c.region, alder.actor, malformed.seq + 1)
    assert r["code"] == "forged"
    # none of them made it onto any agenda
    for node in (c.region, *c.chapters[:3]):
        _, view = await c.call("GET", node, f"/api/agenda/{config}")
        assert {i["title"] for i in view["items"]} == {
            "Free transit",
            "Library hours",
            "Bike lanes",
        }


async def sign_next(node: Live, body: dict[str, Any], skip: int = 0) -> dict[str, Any]:
    """`body` signed with the node's real key as its next entry, not appended: what a
    node sends before it is seen in its chain (lets a test choose the arrival order)."""
    services = node.app[SERVICES_KEY]
    last = (await services.ledger.entries())[-1]
    built = chain.make_entry(
        body,
        actor=services.identity.actor,
        seq=last["seq"] + 1 + skip,
        prev=chain.entry_digest(last),
        key=services.identity.signing_key,
        key_id=services.identity.key_id,
        published="2026-11-26T15:00:00Z",
    )
    entry: dict[str, Any] = msgspec.to_builtins(built)
    return entry


async def test_a_sponsorship_before_its_submission_waits(cluster: Cluster) -> None:
    c = cluster
    config = SEEN["config"]
    birch, cedar = c.chapters[1], c.chapters[2]
    regional = c.region.app[REGIONAL_KEY]
    sub = await sign_next(birch, agenda.submission_body(c.region.actor, config, "Rent caps"))
    item = chain.entry_digest(sub)
    sp = await sign_next(cedar, agenda.sponsorship_body(c.region.actor, config, item))
    with pytest.raises(Unready, match=f"item {item} has not arrived yet"):
        await regional.receive(sp)  # the inbox would retry it later
    await regional.receive(sub)
    await regional.receive(sp)
    await regional.receive(sp)  # a second copy changes nothing
    _, view = await c.call("GET", c.region, f"/api/agenda/{config}")
    rent = next(i for i in view["items"] if i["item"] == item)
    assert rent["status"] == "qualified"
    assert rent["sponsors"] == sorted([birch.actor, cedar.actor])
    SEEN["rent"] = item


async def test_an_item_put_to_a_regional_vote_is_voted_everywhere(cluster: Cluster) -> None:
    c = cluster
    config = SEEN["config"]
    body = {
        "title": "Library hours",
        "body": "Put to a vote from the agenda",
        "method": "consent",
        "scope": "regional",
        "closes_at": rfc3339(time.time() + 3600),
        "agenda_item": SEEN["library"],
    }
    status, proposal = await c.call("POST", c.region, "/api/proposals", body)
    assert status == 201, proposal
    for node in (c.region, *c.chapters[:3]):
        seen = await agenda_on(
            c,
            node,
            config,
            lambda v: any(
                i["item"] == SEEN["library"] and i["status"] == "voted" for i in v["items"]
            ),
        )
        library = next(i for i in seen["items"] if i["item"] == SEEN["library"])
        assert library["proposal"] is not None  # this node's own id of the vote
        if node is c.region:
            assert library["proposal"] == proposal["id"]


async def test_closing_without_a_vote_drops_the_qualified_items_everywhere(
    cluster: Cluster,
) -> None:
    c = cluster
    config = SEEN["config"]
    status, err = await c.call("POST", c.chapters[0], f"/api/agenda/{config}/close")
    assert status == 403 and "closes it" in err["detail"]
    status, view = await c.call("POST", c.region, f"/api/agenda/{config}/close")
    assert status == 200 and view["closed"] is True
    for node in (c.region, *c.chapters[:3]):
        seen = await agenda_on(c, node, config, lambda v: v["closed"])
        # "Rent caps" was handed to the region alone (the test above), so only the
        # region holds it; every node flags what it holds
        dropped = [SEEN["transit"], SEEN["rent"]] if node is c.region else [SEEN["transit"]]
        assert sorted(seen["dropped"]) == sorted(dropped)
        assert seen["close"]["seq"] == view["close"]["seq"]
        status_of = {i["item"]: i["status"] for i in seen["items"]}
        assert status_of[SEEN["library"]] == "voted"
    status, err = await c.call("POST", c.region, f"/api/agenda/{config}/close")
    assert (status, err["error"]) == (409, "agenda_closed")
    status, err = await c.call(
        "POST", c.chapters[0], f"/api/agenda/{config}/items", {"title": "Too late"}
    )
    assert (status, err["error"]) == (409, "agenda_closed")
