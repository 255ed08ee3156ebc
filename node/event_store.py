"""SQL of convenings (node/events.py): the Event entries held here, members' RSVPs, the
and the verified Attendance entries. A refused count is kept, like every refused entry,
in Regional's rejection log (node/regional_store.py) under its event.

Registered as the node's ``events`` migration component. Signed entries are kept
verbatim (JSON bytes); what a page shows is recomputed from them by protocol/events.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from node.storage import Database, Row, Tx

EVENTS_MIGRATIONS: tuple[str, ...] = (
    # 1: events (own and a followed region's), RSVPs in arrival order, verified
    # attendance counts (one per chapter and event)
    """
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        object_id TEXT NOT NULL UNIQUE,
        host TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        entry BLOB NOT NULL,
        start_time TEXT NOT NULL,
        poll TEXT,
        received_at REAL NOT NULL
    );
    CREATE TABLE event_rsvps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event TEXT NOT NULL,
        member TEXT NOT NULL,
        answer TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX event_rsvps_by_event ON event_rsvps (event, id);
    CREATE TABLE event_attendance (
        event TEXT NOT NULL,
        chapter TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        entry BLOB NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (event, chapter)
    )
    """,
)


@dataclass(frozen=True)
class HeldEvent:
    id: str  # "e-" + the first 16 hex digits of the entry digest: the same on every node
    object_id: str
    host: str
    seq: int
    digest: str
    entry: dict[str, Any]
    poll: str | None


@dataclass(frozen=True)
class HeldCount:
    chapter: str
    seq: int
    digest: str
    entry: dict[str, Any]


def event_id(digest: str) -> str:
    return "e-" + digest[:16]


def _event(row: Row) -> HeldEvent:
    return HeldEvent(
        row["id"],
        row["object_id"],
        row["host"],
        row["seq"],
        row["digest"],
        msgspec.json.decode(row["entry"]),
        row["poll"],
    )


_EVENT_COLUMNS = "id, object_id, host, seq, digest, entry, poll"


async def put_event(tx: Tx, held: HeldEvent, now: float) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO events"
        " (id, object_id, host, seq, digest, entry, start_time, poll, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            held.id,
            held.object_id,
            held.host,
            held.seq,
            held.digest,
            msgspec.json.encode(held.entry),
            str(held.entry.get("startTime")),
            held.poll,
            now,
        ),
    )


async def event_by_object_tx(tx: Tx, object_id: str) -> HeldEvent | None:
    row = await tx.fetchone(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE object_id = ?", (object_id,)
    )
    return None if row is None else _event(row)


async def event_by_object(db: Database, object_id: str) -> HeldEvent | None:
    row = await db.fetchone(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE object_id = ?", (object_id,)
    )
    return None if row is None else _event(row)


async def event(db: Database, local_id: str) -> HeldEvent | None:
    row = await db.fetchone(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (local_id,))
    return None if row is None else _event(row)


async def all_events(db: Database) -> list[HeldEvent]:
    rows = await db.fetchall(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY start_time, id")
    return [_event(r) for r in rows]


# --- RSVPs --------------------------------------------------------------------------------


async def put_rsvp(tx: Tx, event: str, member: str, answer: str, now: float) -> None:
    await tx.execute(
        "INSERT INTO event_rsvps (event, member, answer, at) VALUES (?, ?, ?, ?)",
        (event, member, answer, now),
    )


async def rsvps_tx(tx: Tx, event: str) -> list[tuple[str, str]]:
    """Every answer to ``event`` as (member, answer), in the order they arrived."""
    rows = await tx.fetchall(
        "SELECT member, answer FROM event_rsvps WHERE event = ? ORDER BY id", (event,)
    )
    return [(str(r["member"]), str(r["answer"])) for r in rows]


async def rsvps(db: Database, event: str) -> list[tuple[str, str]]:
    rows = await db.fetchall(
        "SELECT member, answer FROM event_rsvps WHERE event = ? ORDER BY id", (event,)
    )
    return [(str(r["member"]), str(r["answer"])) for r in rows]


async def answer_of(db: Database, event: str, member: str) -> str | None:
    row = await db.fetchone(
        "SELECT answer FROM event_rsvps WHERE event = ? AND member = ? ORDER BY id DESC LIMIT 1",
        (event, member),
    )
    return None if row is None else str(row["answer"])


# --- attendance counts ----------------------------------------------------------------------


async def put_count(tx: Tx, event: str, held: HeldCount, now: float) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO event_attendance"
        " (event, chapter, seq, digest, entry, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (event, held.chapter, held.seq, held.digest, msgspec.json.encode(held.entry), now),
    )


def _count(row: Row) -> HeldCount:
    return HeldCount(row["chapter"], row["seq"], row["digest"], msgspec.json.decode(row["entry"]))


async def counts_tx(tx: Tx, event: str) -> list[HeldCount]:
    rows = await tx.fetchall(
        "SELECT chapter, seq, digest, entry FROM event_attendance WHERE event = ? ORDER BY chapter",
        (event,),
    )
    return [_count(r) for r in rows]


async def counts(db: Database, event: str) -> list[HeldCount]:
    rows = await db.fetchall(
        "SELECT chapter, seq, digest, entry FROM event_attendance WHERE event = ? ORDER BY chapter",
        (event,),
    )
    return [_count(r) for r in rows]
