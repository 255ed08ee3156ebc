"""The inbox keeps equivocation evidence by the same rule as protocol/chain.py's audit
(§5.2): two copies of one seq are an equivocation only if the actor's key valid at that
seq signed both; a copy it did not sign is refused, never kept as evidence."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import msgspec
import pytest
from test_inbox import CHAPTER, Node, create, enc, entry, node, post, signed

from federation import store
from protocol.keys import SigningKey

__all__ = ["node"]  # the fixture, shared with test_inbox.py

STRANGER = SigningKey.from_seed(bytes([9]) * 32)


def edited_after_signing() -> dict[str, Any]:
    copy = entry(4, "agree")
    copy["summary"] = "block"
    return copy


def unsigned() -> dict[str, Any]:
    copy = entry(4, "block")
    del copy["proof"]
    return copy


@pytest.mark.parametrize(
    ("forge", "refusal"),
    [
        (edited_after_signing, (400, "bad_proof")),
        (unsigned, (400, "unsigned")),
        (lambda: entry(4, "block", key=STRANGER), (401, "unknown_key")),
    ],
    ids=["edited", "unsigned", "stranger"],
)
async def test_a_copy_the_actor_did_not_sign_is_no_equivocation(
    node: Node, forge: Any, refusal: tuple[int, str]
) -> None:
    honest = enc(create(40, entry(4, "agree")))
    assert (await post(node.url, honest, signed(node.url, honest)))[0] == 202
    forged = enc(create(41, forge()))
    status, answer = await post(node.url, forged, signed(node.url, forged))
    assert (status, answer["error"]) == refusal
    async with aiosqlite.connect(node.db) as conn:
        assert await store.equivocations(conn) == []
        assert not await store.is_equivocating(conn, CHAPTER)
    with sqlite3.connect(node.db) as conn:
        kept = [msgspec.json.decode(b) for (b,) in conn.execute("SELECT body FROM fed_entry")]
    assert [e["summary"] for e in kept] == ["agree"]


async def test_two_signed_copies_are_an_equivocation(node: Node) -> None:
    for n, text in enumerate(("agree", "block")):
        body = enc(create(50 + n, entry(4, text)))
        assert (await post(node.url, body, signed(node.url, body)))[0] == 202
    async with aiosqlite.connect(node.db) as conn:
        assert [(q.actor, q.seq) for q in await store.equivocations(conn)] == [(CHAPTER, 4)]
