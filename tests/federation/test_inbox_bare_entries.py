"""Chain entries sent as the activity itself (as nodes relay Questions, Tallies,
Decisions, Accepts) are kept like wrapped ones (§9.3): stored in the received entries
once verified, with the same dedupe and equivocation evidence; refused, with only
their metadata logged, when their proof does not verify or is missing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec
import pytest
from test_inbox import (
    CHAPTER,
    RSA_KEYS,
    Keys,
    Node,
    create,
    enc,
    entry,
    node,
    post,
    signed,
)

from federation import store
from federation.inbox import EntryRefusal, Inbox, TransportKey
from protocol import canonical
from protocol.errors import ProofError

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


@pytest.mark.parametrize(
    ("forge", "code"), [(edited, "bad_proof"), (unsigned, "unsigned")], ids=["edited", "unsigned"]
)
async def test_an_unverified_bare_entry_is_refused_and_only_logged(
    node: Node, forge: Any, code: str
) -> None:
    # Refused as a wrapped one is: a clear error, nothing of it stored, so it can
    # neither pass for an entry of its actor nor make an equivocation; the node is
    # told its metadata so it can still name it.
    assert (await send(node, entry(2, "agree")))[0] == 202
    forged = forge({**entry(2, "agree"), "proposal": "https://region.test/p/7"})
    status, answer = await send(node, forged)
    assert (status, answer["error"]) == (400, code), answer
    assert f"actor {CHAPTER}" in answer["detail"] and "seq 2" in answer["detail"]
    assert [s for s, _, _ in held(node)] == [2]
    with sqlite3.connect(node.db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM fed_incoming").fetchone() == (1,)
    async with aiosqlite.connect(node.db) as conn:
        assert not await store.is_equivocating(conn, CHAPTER)
    [logged] = node.refusals
    assert (logged.actor, logged.seq, logged.type, logged.code) == (CHAPTER, 2, "Tally", code)
    assert logged.proposal == "https://region.test/p/7" and logged.reason == answer["detail"]
    # The log never holds the body, only these fields.
    assert set(EntryRefusal.__slots__) == {
        "at",
        "actor",
        "seq",
        "type",
        "proposal",
        "code",
        "reason",
    }


async def test_a_refusal_log_that_fails_still_refuses(tmp_path: Path) -> None:
    keys = Keys()
    keys.transport[f"{CHAPTER}#main-key"] = TransportKey(CHAPTER, RSA_KEYS[0].public_key())

    async def broken_log(refusal: EntryRefusal) -> None:
        raise RuntimeError("disk full")

    inbox = Inbox(
        tmp_path / "node.db",
        transport_keys=keys.transport_key,
        entry_keys=keys.entry_key,
        handlers={},
        scheme="http",
        on_refusal=broken_log,
    )
    await inbox.start()
    try:
        body = enc(edited(entry(3)))
        url = "http://127.0.0.1:1/inbox"
        with pytest.raises(ProofError) as refused:
            await inbox.receive("POST", "/inbox", signed(url, body), body)
        assert refused.value.code == "bad_proof" and refused.value.seq == 3
    finally:
        await inbox.stop()
    with sqlite3.connect(tmp_path / "node.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM fed_incoming").fetchone() == (0,)
