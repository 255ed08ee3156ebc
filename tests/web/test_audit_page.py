"""The audit page: entries checked in order, a tampered entry and what follows it
refused, a change on disk noticed, other nodes' equivocations listed."""

from __future__ import annotations

import copy
import hashlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import ClientSession, CookieJar, web
from livenode import LiveNode, start_node
from yarl import URL

from federation import store as fed_store
from node.web import WEB_KEY
from node.web.audit_page import Checked, check_more
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


def test_a_sound_chain_is_verified() -> None:
    entries = build(4)
    done = check_more(Checked(), entries)
    assert done.broken is None
    assert [r.seq for r in done.rows] == [0, 1, 2, 3]
    assert {r.status for r in done.rows} == {"verified"}
    assert done.rows[0].type == "Genesis"
    assert done.rows[3].digest == chain.entry_digest(entries[3])


def test_checking_in_steps_equals_checking_at_once() -> None:
    entries = build(6)
    stepwise = check_more(check_more(check_more(Checked(), entries[:1]), entries[1:4]), entries[4:])
    assert stepwise == check_more(Checked(), entries)


def test_a_tampered_entry_and_everything_after_it_are_not_verified() -> None:
    entries = build(4)
    entries[2] = copy.deepcopy(entries[2])
    entries[2]["member"] = "m-forged"  # one changed field: the proof no longer holds
    done = check_more(Checked(), entries)
    status = {r.seq: r.status for r in done.rows}
    assert status == {0: "verified", 1: "verified", 2: "not verified", 3: "not verified"}
    assert done.broken is not None and "seq 2" in done.broken and ACTOR in done.broken
    assert "follows an entry that failed" in done.rows[3].why


def test_an_entry_signed_twice_for_one_seq_breaks_the_link() -> None:
    entries = build(3)
    done = check_more(Checked(), [*entries, fork(entries)])
    assert [r.status for r in done.rows] == ["verified"] * 3 + ["not verified"]
    assert done.broken is not None and "seq 2" in done.broken


async def test_the_page_rechecks_when_a_checked_entry_changes_on_disk(tmp_path: Path) -> None:
    live, runner = await start_node(tmp_path / "node")
    try:
        await live.services.members.add("Ada", "member")
        first = await get_audit(runner, live)
        assert "All 2 entries verified" in first
        # Someone edits entry 1 in the database file behind the node's back.
        db = sqlite3.connect(live.services.config.database_path)
        try:
            blob = db.execute("SELECT entry FROM chain_entries WHERE seq = 1").fetchone()[0]
            forged = msgspec.json.decode(blob)
            forged["role"] = "admin"
            db.execute(
                "UPDATE chain_entries SET entry = ? WHERE seq = 1", (msgspec.json.encode(forged),)
            )
            db.commit()
        finally:
            db.close()
        second = await get_audit(runner, live)
        assert "Problems found" in second and "seq 1" in second
        assert second.count('class="badge not-verified"') == 1
    finally:
        await runner.cleanup()


async def get_audit(runner: web.AppRunner, live: LiveNode) -> str:
    cookie = runner.app[WEB_KEY].codec.issue(None, time.time())
    jar = CookieJar(unsafe=True)
    jar.update_cookies({COOKIE: cookie}, URL(live.url))
    async with ClientSession(cookie_jar=jar) as session, session.get(live.at("/audit")) as r:
        assert r.status == 200
        return await r.text()


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
        html = await get_audit(runner, live)
        caught = html[html.index('id="caught"') :]
        assert ACTOR in caught and "at seq 2: 2 different entries" in caught
        assert chain.entry_digest(entries[2]) in caught and chain.entry_digest(other) in caught
        assert "All " in html and "entries verified" in html  # our own chain is sound
    finally:
        await runner.cleanup()
