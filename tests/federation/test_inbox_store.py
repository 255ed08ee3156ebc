"""Properties of the inbox's storage (federation/store.py) over any arrival order."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import store
from federation.store import EntryRecord, IncomingRecord

ACTORS = ["https://a.test/actor", "https://b.test/actor"]

# An arrival: (activity number, content variant, entry actor index, entry seq, entry variant)
arrivals = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(0, 2),
        st.integers(0, 2),
    ),
    max_size=30,
)


def record(n: int, variant: int, actor: int, seq: int, entry_variant: int) -> IncomingRecord:
    # An activity's content decides its entry; another content under one id may carry
    # another entry, as a bare entry's second version does.
    entry_variant = (entry_variant + variant) % 3
    return IncomingRecord(
        activity_id=f"https://a.test/activities/{n}",
        body_digest=f"{n}-{variant}",
        actor=ACTORS[0],
        type="Create",
        body=f"{n}-{variant}".encode(),
        state=store.RECEIVED,
        entry=EntryRecord(ACTORS[actor], seq, f"d{entry_variant}", b"{}"),
    )


@settings(max_examples=60, deadline=None)
@given(arrivals, st.integers(1, 7))
def test_dedupe_and_equivocation_follow_from_the_arrivals(
    xs: list[tuple[int, int, int, int, int]], batch: int
) -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(store.SCHEMA)
    records = [record(*x) for x in xs]
    outcomes: list[store.StoreOutcome] = []
    for i in range(0, len(records), batch):
        outcomes += store.store_incoming(conn, records[i : i + batch], 1.0)

    # The model: ids dedupe activities; entries are kept by (actor, seq, digest); a
    # known id is written only when its entry proves an equivocation not yet held.
    first: dict[str, IncomingRecord] = {}
    held: set[tuple[str, int, str]] = set()
    marked: set[tuple[str, int]] = set()

    def others(e: EntryRecord) -> bool:
        return any((a, s) == (e.actor, e.seq) and d != e.digest for a, s, d in held)

    for rec, out in zip(records, outcomes, strict=True):
        e = rec.entry
        assert e is not None
        key = (e.actor, e.seq, e.digest)
        if rec.activity_id not in first:
            first[rec.activity_id] = rec
            assert out.status == "new"
            caught = key not in held and others(e)
            held.add(key)
        elif first[rec.activity_id].body_digest == rec.body_digest or (
            key in held and (e.actor, e.seq) in marked
        ):
            assert out.status == "duplicate"
            continue
        else:
            assert out.status == "conflict"
            assert out.stored_body == first[rec.activity_id].body
            caught = key not in held and others(e)
            if caught:
                held.add(key)
        assert out.equivocation == caught
        if caught:
            marked.add((e.actor, e.seq))
    rows = conn.execute("SELECT activity_id, body FROM fed_incoming").fetchall()
    assert sorted(rows) == sorted((r.activity_id, r.body) for r in first.values())
    assert set(conn.execute("SELECT actor, seq FROM fed_equivocation").fetchall()) == marked
    assert set(conn.execute("SELECT actor, seq, digest FROM fed_entry").fetchall()) == held


def test_the_evidence_query_returns_both_entries(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    conn = sqlite3.connect(db)
    conn.executescript(store.SCHEMA)
    one = record(1, 0, 1, 2, 0)
    two = record(2, 0, 1, 2, 1)
    outs = store.store_incoming(conn, [one, two], 5.0)
    assert [o.equivocation for o in outs] == [False, True]
    conn.close()

    async def query() -> tuple[list[store.Equivocation], bool, bool]:
        async with aiosqlite.connect(db) as c:
            return (
                await store.equivocations(c, ACTORS[1]),
                await store.is_equivocating(c, ACTORS[1]),
                await store.is_equivocating(c, ACTORS[0]),
            )

    found, marked, other = asyncio.run(query())
    assert marked and not other
    assert [(q.actor, q.seq, q.detected_at, len(q.entries)) for q in found] == [
        (ACTORS[1], 2, 5.0, 2)
    ]


async def test_a_database_that_cannot_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    def fed_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("convene-fed-db")]

    before = fed_threads()
    (tmp_path / "not-a-file").mkdir()
    db = store.Database(tmp_path / "not-a-file")
    with pytest.raises(sqlite3.Error):
        await db.open()
    assert fed_threads() == before
    await db.close()  # closing what never opened is harmless
