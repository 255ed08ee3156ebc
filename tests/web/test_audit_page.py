"""The audit page's rows: verified entries, a tampered entry, an equivocation."""

from __future__ import annotations

import copy
import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import ClientSession, CookieJar
from livenode import start_node
from yarl import URL

from federation import store as fed_store
from node.web import WEB_KEY
from node.web.audit_page import audit_rows
from node.web.session import COOKIE
from protocol import chain
from protocol.entries import make_entry
from protocol.keys import SigningKey

ACTOR = "https://hill.example/actor"
KEY = SigningKey.from_seed(bytes(range(32)))
KEY_ID = f"{ACTOR}#ed25519-0"
WHEN = "2026-11-26T15:00:00Z"


def build(n: int) -> list[dict[str, Any]]:
    entries = [chain.genesis(ACTOR, "Hill", "chapter", KEY, WHEN)]
    for seq in range(1, n):
        body = {"type": "RosterChange", "operation": "add", "member": f"m-{seq}", "role": "member"}
        prev = chain.entry_digest(entries[-1])
        entries.append(
            make_entry(
                body, actor=ACTOR, seq=seq, prev=prev, key=KEY, key_id=KEY_ID, published=WHEN
            )
        )
    return entries


def fork(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A second, different entry for the last entry's seq, properly signed."""
    last = entries[-1]
    body = {"type": "RosterChange", "operation": "remove", "member": "m-1", "role": "member"}
    return make_entry(
        body, actor=ACTOR, seq=last["seq"], prev=last["prev"], key=KEY, key_id=KEY_ID,
        published=WHEN,
    )  # fmt: skip


def test_a_sound_chain_is_verified_newest_first() -> None:
    entries = build(4)
    rows, findings = audit_rows(entries)
    assert findings == []
    assert [r.seq for r in rows] == [3, 2, 1, 0]
    assert {r.status for r in rows} == {"verified"}
    assert rows[-1].type == "Genesis"
    assert rows[0].digest == chain.entry_digest(entries[3])


def test_a_tampered_entry_and_everything_after_it_are_not_verified() -> None:
    entries = build(4)
    entries[2] = copy.deepcopy(entries[2])
    entries[2]["member"] = "m-forged"  # one changed field: the proof no longer holds
    rows, findings = audit_rows(entries)
    status = {r.seq: r.status for r in rows}
    assert status == {0: "verified", 1: "verified", 2: "not verified", 3: "not verified"}
    why = next(r.why for r in rows if r.seq == 2)
    assert "seq 2" in why and ACTOR in why
    assert len(findings) == 1


def test_two_entries_with_one_seq_are_flagged_as_equivocation() -> None:
    entries = build(3)
    other = fork(entries)
    rows, findings = audit_rows([*entries, other])
    flagged = [r for r in rows if r.status == "equivocation"]
    assert [r.seq for r in flagged] == [2, 2]
    assert "2 different entries claim seq 2" in flagged[0].why
    assert any("equivocation" in f or "claim seq 2" in f for f in findings)


async def test_the_page_lists_other_nodes_caught_equivocating(tmp_path: Path) -> None:
    live, runner = await start_node(tmp_path / "node")
    try:
        entries = build(3)
        body = {"type": "RosterChange", "operation": "remove", "member": "m-1", "role": "member"}
        other = make_entry(
            body,
            actor=ACTOR,
            seq=2,
            prev=entries[2]["prev"],
            key=KEY,
            key_id=KEY_ID,
            published=WHEN,
        )
        records = []
        for n, entry in enumerate((entries[2], other)):
            raw = msgspec.json.encode(entry)
            digest = chain.entry_digest(entry)
            records.append(
                fed_store.IncomingRecord(
                    activity_id=f"{ACTOR}/activities/{n}",
                    body_digest=hashlib.sha256(raw).hexdigest(),
                    actor=ACTOR,
                    type="Create",
                    body=raw,
                    state=fed_store.QUEUED,
                    entry=fed_store.EntryRecord(ACTOR, 2, digest, raw),
                )
            )
        # Stored the way the inbox stores verified activities: the second is evidence.
        conn = sqlite3.connect(live.services.config.database_path)
        try:
            outcomes = fed_store.store_incoming(conn, records, now=time.time())
        finally:
            conn.close()
        assert [o.equivocation for o in outcomes] == [False, True]
        cookie = runner.app[WEB_KEY].codec.issue(None, time.time())
        jar = CookieJar(unsafe=True)
        jar.update_cookies({COOKIE: cookie}, URL(live.url))
        async with ClientSession(cookie_jar=jar) as session, session.get(live.at("/audit")) as r:
            html = await r.text()
        caught = html[html.index('id="caught"') :]
        assert ACTOR in caught and "at seq 2: 2 different entries" in caught
        assert chain.entry_digest(entries[2]) in caught and chain.entry_digest(other) in caught
        assert "All " in html and "entries verified" in html  # our own chain is sound
    finally:
        await runner.cleanup()
