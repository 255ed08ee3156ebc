"""What a fediverse follower of a region receives (node/regional_outbox.py, docs/protocol.md
§9.5): a region node in-process (create_app, real loopback port, real SQLite file), a
convene chapter and a stand-in for a Mastodon-family server. The stand-in is a small
foreign aiohttp server on loopback: it serves a `Person` actor with an RSA key, follows
the region with an HTTP-signed `Follow`, and records every POST to its inbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import msgspec
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nodekit import call, free_port
from servekit import serving

from federation.client import FederationClient, http_signer
from node.bootstrap import init_node
from node.config import load_config
from node.federation_glue import ACTORS_KEY, actor_names
from node.regional_outbox import for_fediverse
from node.services import build_services
from protocol import proofs
from protocol.errors import ProtocolError
from protocol.keys import VerifyKey

T = TypeVar("T")
AS2 = "https://www.w3.org/ns/activitystreams"


class Fediverse:
    """One foreign account, `alice`, on its own loopback server."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.actor = f"{self.base}/users/alice"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.received: list[dict[str, Any]] = []

    def document(self) -> dict[str, Any]:
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "@context": [AS2, "https://w3id.org/security/v1"],
            "id": self.actor,
            "type": "Person",
            "preferredUsername": "alice",
            "name": "Alice",
            "inbox": f"{self.actor}/inbox",
            "outbox": f"{self.actor}/outbox",
            "followers": f"{self.actor}/followers",
            "endpoints": {"sharedInbox": f"{self.base}/inbox"},
            "publicKey": {
                "id": f"{self.actor}#main-key",
                "owner": self.actor,
                "publicKeyPem": pem.decode("ascii"),
            },
        }

    def app(self) -> web.Application:
        async def actor(_: web.Request) -> web.Response:
            return web.json_response(self.document(), content_type="application/activity+json")

        async def inbox(request: web.Request) -> web.Response:
            assert "signature" in {h.lower() for h in request.headers}  # HTTP-signed
            self.received.append(await request.json())
            return web.Response(status=202)

        app = web.Application()
        app.router.add_get("/users/alice", actor)
        app.router.add_post("/users/alice/inbox", inbox)
        app.router.add_post("/inbox", inbox)
        return app

    async def follow(self, region_actor: str, region_inbox: str) -> None:
        follow = {
            "@context": AS2,
            "id": f"{self.actor}#follows/1",
            "type": "Follow",
            "actor": self.actor,
            "object": region_actor,
        }
        signer = http_signer(f"{self.actor}#main-key", self.key)
        async with FederationClient(signer=signer, allow_private_network=True) as client:
            response = await client.post(region_inbox, msgspec.json.encode(follow))
            assert response.status in (200, 202), response.body

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [a for a in self.received if a.get("type") == kind]


async def eventually(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


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


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with AsyncExitStack() as stack:
        fedi = Fediverse()
        runner = web.AppRunner(fedi.app())
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", fedi.port).start()
        region_data, region_token = await make(tmp_path, "region", "region")
        chapter_data, chapter_token = await make(tmp_path, "chapter", "chapter")
        region_app, region_url = await stack.enter_async_context(serving(region_data))
        _, chapter_url = await stack.enter_async_context(serving(chapter_data))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield {
            "fedi": fedi,
            "http": http,
            "region": (region_url, region_token),
            "region_app": region_app,
            "chapter": (chapter_url, chapter_token),
        }


async def test_a_fediverse_follower_gets_the_question_in_a_create_and_a_node_gets_it_bare(
    world: dict[str, Any],
) -> None:
    fedi: Fediverse = world["fedi"]
    http = world["http"]
    region_url, region_token = world["region"]
    chapter_url, chapter_token = world["chapter"]
    region_actor = f"{region_url}/actor"
    status, body = await call(
        http, "POST", f"{chapter_url}/api/federation/join", chapter_token, {"region": region_url}
    )
    assert status == 202, body
    await fedi.follow(region_actor, f"{region_url}/inbox")
    await eventually("the region to accept alice", lambda: _first(fedi.of_type("Accept")))

    async def both_followers() -> bool | None:
        _, view = await call(http, "GET", f"{region_url}/api/federation", region_token)
        accepted = {f["actor"] for f in view["followers"] if f["state"] == "accepted"}
        return True if {fedi.actor, f"{chapter_url}/actor"} <= accepted else None

    await eventually("the region to have both followers", both_followers)
    status, proposal = await call(
        http,
        "POST",
        f"{region_url}/api/proposals",
        region_token,
        {"title": "Rent freeze", "method": "consent", "scope": "regional"},
    )
    assert status == 201, proposal
    # The fediverse account is listed nowhere as a chapter: it sends no tallies.
    status, regional = await call(
        http, "GET", f"{region_url}/api/proposals/{proposal['id']}/regional", region_token
    )
    assert regional["chapters"] == [f"{chapter_url}/actor"]

    create = await eventually("alice to receive a Create", lambda: _first(fedi.of_type("Create")))
    question = create["object"]
    assert question["type"] == "Question" and question["id"] == proposal["object_id"]
    assert create["id"] == question["id"] + "#create"
    assert create["actor"] == region_actor == question["actor"]
    assert create["published"] == question["published"]
    assert create["to"] == [f"{AS2}#Public"] and create["cc"] == [f"{region_url}/followers"]
    assert fedi.of_type("Question") == []  # never bare to a fediverse server
    # The object is the signed entry verbatim: its proof still verifies.
    status, actor_doc = await call(http, "GET", region_actor)
    key = next(
        VerifyKey.from_multibase(m["publicKeyMultibase"])
        for m in actor_doc["assertionMethod"]
        if m["id"] == question["proof"]["verificationMethod"]
    )
    proofs.verified_digest(question, key)
    tampered = {**question, "name": "Rent hike"}
    with pytest.raises(ProtocolError):
        proofs.verified_digest(tampered, key)

    # A convening (§10.1) goes the same way: a Create(Event) to alice.
    status, event = await call(
        http,
        "POST",
        f"{region_url}/api/events",
        region_token,
        {"name": "Spring convening", "location": "Hall"}
        | {"start": "2030-04-01T18:00:00Z", "end": "2030-04-01T20:00:00Z"},
    )
    assert status == 201, event

    async def event_create() -> dict[str, Any] | None:
        found = [a for a in fedi.of_type("Create") if a["object"]["type"] == "Event"]
        return found[0] if found else None

    wrapped = await eventually("alice to receive the Event in a Create", event_create)
    assert wrapped["object"]["name"] == "Spring convening"
    assert wrapped["id"] == wrapped["object"]["id"] + "#create"
    assert fedi.of_type("Event") == []

    # Pages name alice from the actor cache alone (`ActorCache.cached`, never a fetch).
    app = world["region_app"]
    never = "http://127.0.0.1:9/users/nobody"
    cached = await app[ACTORS_KEY].cached([fedi.actor, never])
    assert list(cached) == [fedi.actor] and cached[fedi.actor].name == "Alice"
    names = await actor_names(app, [fedi.actor, never, region_actor])
    assert names == {fedi.actor: "Alice", never: "127.0.0.1:9", region_actor: "region"}

    # The convene chapter took it bare and opened it.
    async def adopted() -> bool | None:
        _, listed = await call(http, "GET", f"{chapter_url}/api/proposals", chapter_token)
        ids = {p["object_id"] for p in listed["items"]}
        return True if proposal["object_id"] in ids else None

    await eventually("the chapter to open the Question", adopted)


async def _first(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return items[0] if items else None


def test_only_as2_objects_are_wrapped() -> None:
    base = {"id": "http://127.0.0.1:1/actor/entries/4", "actor": "http://127.0.0.1:1/actor"}
    base["published"] = "2026-11-26T17:00:00Z"
    event = {**base, "type": "Event", "name": "Spring convening"}
    create = for_fediverse(event, "http://127.0.0.1:1/followers")
    assert create is not None and create["type"] == "Create" and create["object"] is event
    assert create["id"] == "http://127.0.0.1:1/actor/entries/4#create"
    for kind in ("Tally", "Decision", "FacilitatorGrant", "Level"):
        assert for_fediverse({**base, "type": kind}, "http://127.0.0.1:1/followers") is None
