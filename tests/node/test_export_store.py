"""The export's reads (node.export_store) on real SQLite files: a node that never
federated answers nothing, without an error; one that did gives back what it holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from federation import actors as fed_actors
from federation import store as fed_store
from node import export_store
from node.regional_store import REGIONAL_MIGRATIONS
from node.schema import NODE_MIGRATIONS
from node.storage import Database


async def test_a_node_that_never_federated_has_nothing_to_export(tmp_path: Path) -> None:
    db = Database(tmp_path / "node.db", {"node": NODE_MIGRATIONS}, readers=1)
    await db.open()
    try:
        assert await export_store.received_entries(db) == []
        assert await export_store.remote_actor_documents(db) == []
        assert await export_store.counted_ballots(db) == []
        assert not await export_store.holds_regional(db)
    finally:
        await db.close()


async def test_received_entries_and_actor_documents_come_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    db = Database(path, {"node": NODE_MIGRATIONS, "regional": REGIONAL_MIGRATIONS}, readers=1)
    await db.open()
    await db.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(fed_store.SCHEMA + fed_actors.SCHEMA)
        for actor, seq in (("b", 1), ("a", 2), ("a", 0)):
            conn.execute(
                "INSERT INTO fed_entry (actor, seq, digest, body, activity_id, received_at)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (actor, seq, f"{actor}{seq}", f'{{"seq": {seq}}}'.encode(), f"act-{actor}{seq}"),
            )
        for actor in ("z", "m"):
            conn.execute(
                "INSERT INTO fed_actor (id, document, fetched_at, expires_at) VALUES (?, ?, 0, 0)",
                (actor, f'{{"id": "{actor}"}}'.encode()),
            )
    await db.open()
    try:
        assert await export_store.received_entries(db) == [
            b'{"seq": 0}',
            b'{"seq": 2}',
            b'{"seq": 1}',
        ]
        assert await export_store.remote_actor_documents(db) == [b'{"id": "m"}', b'{"id": "z"}']
        assert await export_store.holds_regional(db)
    finally:
        await db.close()
