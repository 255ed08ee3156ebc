"""SQLite tables and queries of following (docs/protocol.md §9.4).

``fed_follower`` holds who follows this node (region side) and ``fed_following`` whom
this node follows (chapter side), one row per relationship with its lifecycle state
(the transition tables are in federation/follow.py). Every function runs on the
caller's connection inside the caller's transaction, so a state change commits with
the chain entry or the queued delivery that goes with it.
"""

from __future__ import annotations

import time

import aiosqlite
import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS fed_follower (
    actor_id TEXT PRIMARY KEY,
    inbox TEXT NOT NULL,
    shared_inbox TEXT,
    follow_id TEXT NOT NULL,
    state TEXT NOT NULL,
    accept_seq INTEGER,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fed_following (
    target TEXT PRIMARY KEY,
    inbox TEXT NOT NULL,
    follow_id TEXT NOT NULL,
    state TEXT NOT NULL,
    accept_id TEXT,
    updated_at REAL NOT NULL
);
"""

# For read-only connections (the followers collection).
ACCEPTED_FOLLOWERS_SQL = (
    "SELECT actor_id FROM fed_follower WHERE state = 'accepted' ORDER BY actor_id"
)


class Follower(msgspec.Struct, frozen=True):
    actor_id: str
    inbox: str
    shared_inbox: str | None
    follow_id: str
    state: str
    accept_seq: int | None


class Following(msgspec.Struct, frozen=True):
    target: str
    inbox: str
    follow_id: str
    state: str
    accept_id: str | None


async def ensure_schema(conn: aiosqlite.Connection) -> None:
    await conn.executescript(SCHEMA)
    await conn.commit()


async def followers(conn: aiosqlite.Connection, state: str = "accepted") -> list[Follower]:
    cur = await conn.execute(
        "SELECT actor_id, inbox, shared_inbox, follow_id, state, accept_seq FROM fed_follower"
        " WHERE state = ? ORDER BY actor_id",
        (state,),
    )
    rows = await cur.fetchall()
    await cur.close()
    return [Follower(*row) for row in rows]


async def following(conn: aiosqlite.Connection) -> list[Following]:
    cur = await conn.execute(
        "SELECT target, inbox, follow_id, state, accept_id FROM fed_following ORDER BY target"
    )
    rows = await cur.fetchall()
    await cur.close()
    return [Following(*row) for row in rows]


async def follower(conn: aiosqlite.Connection, actor_id: str) -> Follower | None:
    cur = await conn.execute(
        "SELECT actor_id, inbox, shared_inbox, follow_id, state, accept_seq FROM fed_follower"
        " WHERE actor_id = ?",
        (actor_id,),
    )
    row = await cur.fetchone()
    await cur.close()
    return Follower(*row) if row else None


async def following_of(conn: aiosqlite.Connection, target: str) -> Following | None:
    cur = await conn.execute(
        "SELECT target, inbox, follow_id, state, accept_id FROM fed_following WHERE target = ?",
        (target,),
    )
    row = await cur.fetchone()
    await cur.close()
    return Following(*row) if row else None


async def put_follower(conn: aiosqlite.Connection, f: Follower) -> None:
    await conn.execute(
        "INSERT INTO fed_follower"
        " (actor_id, inbox, shared_inbox, follow_id, state, accept_seq, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (actor_id) DO UPDATE SET"
        " inbox = excluded.inbox, shared_inbox = excluded.shared_inbox,"
        " follow_id = excluded.follow_id, state = excluded.state,"
        " accept_seq = excluded.accept_seq, updated_at = excluded.updated_at",
        (f.actor_id, f.inbox, f.shared_inbox, f.follow_id, f.state, f.accept_seq, time.time()),
    )


async def put_following(conn: aiosqlite.Connection, f: Following) -> None:
    await conn.execute(
        "INSERT INTO fed_following (target, inbox, follow_id, state, accept_id, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target) DO UPDATE SET"
        " inbox = excluded.inbox, follow_id = excluded.follow_id, state = excluded.state,"
        " accept_id = excluded.accept_id, updated_at = excluded.updated_at",
        (f.target, f.inbox, f.follow_id, f.state, f.accept_id, time.time()),
    )
