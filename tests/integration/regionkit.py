"""Crafting signed entries as a real node would, with that node's own keys, and
POSTing them HTTP-signed to another node's inbox (for the forged/late/duplicate and
disputed cases, which an honest node never produces)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from federation.client import FederationClient, http_signer
from node.bootstrap import identity_of
from node.config import DATABASE_FILE
from node.demo import Cluster, Node, wait_until
from protocol import chain


def head(node: Node) -> tuple[int, str]:
    """(seq, digest) of the newest entry in the node's chain, read from its file."""
    conn = sqlite3.connect(node.data / DATABASE_FILE)
    try:
        seq, digest = conn.execute(
            "SELECT seq, digest FROM chain_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return int(seq), str(digest)


def sign_next(node: Node, body: dict[str, Any], published: str, *, skip: int = 0) -> dict[str, Any]:
    """`body` signed with the node's real key as its next entry (`skip` seqs further)."""
    identity = identity_of(Path(node.data))
    seq, digest = head(node)
    built = chain.make_entry(
        body,
        actor=identity.actor,
        seq=seq + 1 + skip,
        prev=digest,
        key=identity.signing_key,
        key_id=identity.key_id,
        published=published,
    )
    entry: dict[str, Any] = msgspec.to_builtins(built)
    return entry


def entry_body(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's own fields, without the envelope the chain adds."""
    envelope = {"@context", "id", "actor", "seq", "prev", "published", "proof"}
    return {k: v for k, v in entry.items() if k not in envelope}


async def post_signed(sender: Node, inbox_of: Node, activity: dict[str, Any]) -> int:
    """POST `activity` to `inbox_of`'s inbox, HTTP-signed with `sender`'s RSA key."""
    return (await post_answered(sender, inbox_of, activity))[0]


async def post_answered(
    sender: Node, inbox_of: Node, *activities: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    """As `post_signed`, for one or more activities (one client); the last answer."""
    identity = identity_of(Path(sender.data))
    signer = http_signer(identity.rsa_key_id, identity.rsa_key)
    status, answer = 0, {}
    async with FederationClient(signer=signer, allow_private_network=True) as client:
        for activity in activities:
            response = await client.post(f"{inbox_of.url}/inbox", msgspec.json.encode(activity))
            status, answer = response.status, msgspec.json.decode(response.body)
    return status, answer


def stored_anywhere(node: Node, entry: dict[str, Any]) -> list[str]:
    """The tables of `node` that hold anything of `entry` (by its id, or its actor and
    seq): empty for an entry the inbox refused."""
    found: list[str] = []
    conn = sqlite3.connect(Path(node.data) / DATABASE_FILE)
    try:
        checks = {
            "fed_incoming": ("SELECT 1 FROM fed_incoming WHERE activity_id = ?", (entry["id"],)),
            "fed_entry": (
                "SELECT 1 FROM fed_entry WHERE actor = ? AND seq = ?",
                (entry["actor"], entry["seq"]),
            ),
            "regional_tallies": (
                "SELECT 1 FROM regional_tallies WHERE chapter = ? AND seq = ?",
                (entry["actor"], entry["seq"]),
            ),
            "regional_rejected": (
                "SELECT 1 FROM regional_rejected WHERE actor = ? AND seq = ?",
                (entry["actor"], entry["seq"]),
            ),
        }
        for table, (sql, args) in checks.items():
            if conn.execute(sql, args).fetchone() is not None:
                found.append(table)
    finally:
        conn.close()
    return found


async def join_region(c: Cluster, follower: Node, region: Node) -> None:
    """`follower` asks to follow `region` over the API; wait until it sees the Accept."""
    status, body = await c.call("POST", follower, "/api/federation/join", {"region": region.url})
    assert status == 202, body

    async def accepted() -> bool | None:
        _, seen = await c.call("GET", follower, "/api/federation")
        ok = any(
            f["state"] == "accepted" and f["region"] == region.actor for f in seen["following"]
        )
        return True if ok else None

    await wait_until(f"{region.name} to accept {follower.name}", accepted)


async def local_id(c: Cluster, n: Node, object_id: str, timeout: float = 30.0) -> str:
    """`n`'s local id of the proposal `object_id`, once it holds it."""

    async def probe() -> str | None:
        _, body = await c.call("GET", n, "/api/proposals")
        ids = [i["id"] for i in body["items"] if i["object_id"] == object_id]
        return ids[0] if ids else None

    return await wait_until(f"{n.name} to hold {object_id}", probe, timeout)
