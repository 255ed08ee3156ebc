"""A chapter follows its region's key rotation: two real `convene serve` processes on
loopback. The chapter has cached the region's keys; the region rotates both (chain key
and RSA) through its admin API; its next regional proposal is verified and opened by
the chapter, and an entry later signed with the retired key is refused and named."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from federation.client import FederationClient, http_signer
from node.bootstrap import identity_of
from node.config import load_config
from node.demo import Cluster, Node, wait_until
from node.services import build_services
from protocol import chain
from protocol.keys import SigningKey

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("rotation")
    async with Cluster(root, ["Alder"], grace_s=2) as c:
        await c.create(members_per_chapter=1)
        services = build_services(load_config(c.region.data))
        await services.db.open()
        try:
            admin = await services.members.add("Region admin", "admin")
        finally:
            await services.db.close()
        c.region.organizer["admin_token"] = admin.token
        await c.start()
        await c.join()
        yield c


async def adopted(c: Cluster, chapter: Node, object_id: str) -> str:
    return await c.adopted(chapter, object_id, timeout=30)


def head(node: Node) -> dict[str, Any]:
    conn = sqlite3.connect(node.data / "convene.sqlite3")
    try:
        (blob,) = conn.execute(
            "SELECT entry FROM chain_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    entry: dict[str, Any] = msgspec.json.decode(blob)
    return entry


async def post_as(sender: Node, to: Node, activity: dict[str, Any]) -> tuple[int, Any]:
    """POST `activity` to `to`'s inbox, HTTP-signed with `sender`'s current RSA key."""
    identity = identity_of(Path(sender.data))
    signer = http_signer(identity.rsa_key_id, identity.rsa_key)
    async with FederationClient(signer=signer, allow_private_network=True) as client:
        response = await client.post(f"{to.url}/inbox", msgspec.json.encode(activity))
    return response.status, msgspec.json.decode(response.body) if response.body else None


async def test_chapter_follows_the_rotation_and_refuses_the_retired_key(cluster: Cluster) -> None:
    region, (alder,) = cluster.region, cluster.chapters
    closes = 3600
    first = await cluster.propose(closes, method="choice", options=["tram", "bus"])
    await adopted(cluster, alder, first["object_id"])  # the chapter now holds the old keys

    old_seed = (region.data / "keys" / "ed25519.seed").read_bytes()
    old_id = chain.key_id(region.actor, 0)
    status, rotated = await cluster.call(
        "POST", region, "/api/keys/rotate", {"rsa": True}, region.organizer["admin_token"]
    )
    assert status == 200, rotated
    assert rotated["rsa_rotated"] and rotated["retired_key_id"] == old_id

    # The next proposal is signed by the new key and reaches the chapter over HTTP
    # signed by the new RSA key: the chapter refetches the actor, checks the new key
    # against the region's chain, and opens the proposal.
    second = await cluster.propose(closes, method="choice", options=["park", "pool"])
    local = await adopted(cluster, alder, second["object_id"])
    question = head(region)
    assert question["type"] == "Question" and question["id"] == second["object_id"]
    assert question["proof"]["verificationMethod"] == rotated["key_id"]
    status, view = await cluster.call("GET", alder, f"/api/proposals/{local}")
    assert status == 200 and view["status"] == "open"

    # Whoever holds the retired key cannot speak for the region any more.
    retired = SigningKey.from_seed(old_seed)
    seq = question["seq"] + 1
    forged = msgspec.to_builtins(
        chain.make_entry(
            {"type": "Decision", "proposal": second["object_id"], "outcome": {"result": "passed"}},
            actor=region.actor,
            seq=seq,
            prev=chain.entry_digest(question),
            key=retired,
            key_id=old_id,
            published=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
    )
    # Wrapped as an activity's object, the inbox itself refuses it and says why.
    wrapped = {
        "id": f"{region.actor}/activities/forged-{seq}",
        "type": "Create",
        "actor": region.actor,
        "object": forged,
    }
    status, body = await post_as(region, alder, wrapped)
    assert status == 401 and body["error"] == "unknown_key", body
    assert f"seq {seq}" in body["detail"] and old_id in body["detail"]
    assert rotated["key_id"] in body["detail"]

    # Sent bare, as nodes relay entries, it is refused just the same and nothing of it
    # is stored; the refusal log still lets the chapter name it as forged, with the
    # region, the seq and the key.
    status, body = await post_as(region, alder, forged)
    assert status == 401 and body["error"] == "unknown_key", body

    async def named() -> dict[str, Any] | None:
        view = await cluster.regional(alder, local)
        return next((r for r in view["rejected"] if r["code"] == "forged"), None)

    rejection = await wait_until("the chapter to reject the retired key's entry", named)
    assert rejection["actor"] == region.actor and rejection["seq"] == seq
    assert old_id in rejection["reason"] and rotated["key_id"] in rejection["reason"]
    view = await cluster.regional(alder, local)
    assert view["decision"] is None  # nothing the retired key signed was taken
