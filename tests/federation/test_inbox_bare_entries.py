"""Chain entries sent as the activity itself (as nodes relay Questions, Tallies,
Decisions, Accepts) are kept like wrapped ones (§9.3): stored in the received entries
once verified, with the same dedupe and equivocation evidence."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import msgspec
import pytest
from test_inbox import CHAPTER, Node, create, enc, entry, node, post, signed

from federation import store
from protocol import canonical

__all__ = ["node"]  # the fixture, shared with test_inbox.py


def held(node: Node) -> list[tuple[int, str, dict[str, Any]]]:
    with sqlite3.connect(node.db) as conn:
        rows = conn.execute("SELECT seq, digest, body FROM fed_entry ORDER BY seq, digest")
        return [(s, d, msgspec.json.decode(b)) for s, d, b in rows.fetchall()]


async def send(node: Node, activity: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = enc(activity)
    return await post(node.url, body, signed(node.url, body))


async def test_a_bare_entry_is_kept_as_a_received_entry(node: Node) -> None:
    bare = entry(3, "agree")
    status, answer = await send(node, bare)
    assert (status, answer) == (202, {"id": bare["id"], "status": "ignored"})
    assert held(node) == [(3, canonical.digest(bare), bare)]
    # The same entry serialized otherwise, and sent again: one entry, no evidence.
    again = msgspec.json.encode(dict(reversed(list(bare.items()))))
    status, answer = await post(node.url, again, signed(node.url, again))
    assert (status, answer["status"]) == (202, "duplicate")
    assert len(held(node)) == 1
    async with aiosqlite.connect(node.db) as conn:
        assert not await store.is_equivocating(conn, CHAPTER)


async def test_two_bare_entries_for_one_seq_are_kept_as_equivocation(node: Node) -> None:
    first, second = entry(4, "agree"), entry(4, "block")
    assert first["id"] == second["id"]  # an entry's id is its actor and seq
    assert (await send(node, first))[0] == 202
    status, answer = await send(node, second)
    assert (status, answer["status"]) == (202, "accepted")
    assert [(s, d) for s, d, _ in held(node)] == sorted(
        (4, canonical.digest(e)) for e in (first, second)
    )
    async with aiosqlite.connect(node.db) as conn:
        found = await store.equivocations(conn, CHAPTER)
    assert [(q.actor, q.seq, len(q.entries)) for q in found] == [(CHAPTER, 4, 2)]
    assert {msgspec.json.decode(b)["summary"] for b in found[0].entries} == {"agree", "block"}
    # The activity table still holds the first only: the second is evidence, not work.
    with sqlite3.connect(node.db) as conn:
        assert conn.execute("SELECT body FROM fed_incoming").fetchall() == [(enc(first),)]
    # A third copy of the second entry adds nothing.
    status, answer = await send(node, second)
    assert status == 202 and len(held(node)) == 2


async def test_a_bare_entry_equivocating_with_a_wrapped_one(node: Node) -> None:
    assert (await send(node, create(50, entry(5, "agree"))))[0] == 202
    assert (await send(node, entry(5, "block")))[0] == 202
    async with aiosqlite.connect(node.db) as conn:
        assert [(q.seq, len(q.entries)) for q in await store.equivocations(conn)] == [(5, 2)]


def edited(e: dict[str, Any]) -> dict[str, Any]:
    return {**e, "summary": "block"}


def unsigned(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k != "proof"}


@pytest.mark.parametrize("forge", [edited, unsigned], ids=["edited", "unsigned"])
async def test_an_unverified_bare_entry_is_no_received_entry(node: Node, forge: Any) -> None:
    # Accepted for its handler to reject with a reason, but never kept as an entry
    # of its actor, so it can neither pass for one nor make an equivocation.
    assert (await send(node, entry(2, "agree")))[0] == 202
    forged = forge(entry(2, "agree"))
    status, answer = await send(node, {**forged, "id": f"{CHAPTER}/forged/2"})
    assert (status, answer["status"]) == (202, "ignored")
    assert [s for s, _, _ in held(node)] == [2]
    async with aiosqlite.connect(node.db) as conn:
        assert not await store.is_equivocating(conn, CHAPTER)
