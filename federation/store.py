"""SQLite tables and queries of the federation layer (docs/protocol.md §9.3).

Four concerns live here and nowhere else:

- ``fed_outgoing`` / ``fed_delivery``: the durable delivery queue, one row per
  activity and one per (activity, recipient inbox) with its state, attempt count
  and next due time. Rows are written by :func:`enqueue` inside the caller's
  transaction, so an outgoing activity commits together with the chain entry that
  caused it; the queue is the source of truth after a crash.
- ``fed_incoming``: every accepted incoming activity, verbatim, keyed by its id.
  It is the dedupe table and the inbox's work queue (store first, then act).
- ``fed_entry``: signed chain entries received embedded in activities, keyed by
  (actor, seq, digest) so that two different entries for one (actor, seq) are both
  kept.
- ``fed_equivocation``: the (actor, seq) pairs for which that happened.

The node talks to these tables through aiosqlite connections (:func:`ensure_schema`,
:func:`enqueue`, :func:`equivocations`). The inbox and the delivery worker, which are
hot paths, run plain ``sqlite3`` functions on a private thread (:class:`Database`)
so that one batch costs one thread hop and one commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiosqlite
import msgspec

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fed_outgoing (
    id INTEGER PRIMARY KEY,
    activity_id TEXT,
    body BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fed_delivery (
    id INTEGER PRIMARY KEY,
    outgoing_id INTEGER NOT NULL REFERENCES fed_outgoing(id),
    inbox TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    updated_at REAL NOT NULL,
    UNIQUE (outgoing_id, inbox)
);
CREATE INDEX IF NOT EXISTS fed_delivery_due
    ON fed_delivery (next_attempt_at) WHERE state IN ('queued', 'retrying');
CREATE TABLE IF NOT EXISTS fed_incoming (
    activity_id TEXT PRIMARY KEY,
    body_digest TEXT NOT NULL,
    actor TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS fed_incoming_due
    ON fed_incoming (next_attempt_at) WHERE state = 'received';
CREATE TABLE IF NOT EXISTS fed_entry (
    actor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    digest TEXT NOT NULL,
    body BLOB NOT NULL,
    activity_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (actor, seq, digest)
);
CREATE TABLE IF NOT EXISTS fed_equivocation (
    actor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    detected_at REAL NOT NULL,
    PRIMARY KEY (actor, seq)
);
"""

# Delivery states (the transitions between them are the table in delivery.py).
QUEUED = "queued"
RETRYING = "retrying"
SENT = "sent"
DEAD = "dead"

# Incoming states: stored and waiting for its handler, handled, no handler for its
# type (accepted and ignored, as ActivityPub expects), handler kept failing,
# or an equivocating entry kept only as evidence.
RECEIVED = "received"
PROCESSED = "processed"
IGNORED = "ignored"
FAILED = "failed"
EVIDENCE = "evidence"


async def ensure_schema(conn: aiosqlite.Connection) -> None:
    """Create the federation tables if missing; safe to call at every start."""
    await conn.executescript(SCHEMA)
    await conn.commit()


# --- outgoing -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """An actor's inbox, and its server's shared inbox when the actor document names one."""

    inbox: str
    shared_inbox: str | None = None

    @property
    def target(self) -> str:
        # One POST to a shared inbox reaches every follower on that server.
        return self.shared_inbox or self.inbox


def _targets(recipients: Iterable[str | Recipient]) -> list[str]:
    seen: dict[str, None] = {}
    for r in recipients:
        url = r.target if isinstance(r, Recipient) else r
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"recipient inbox {url!r} is not an http(s) URL")
        seen.setdefault(url, None)
    return list(seen)


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.lower()


async def enqueue(
    conn: aiosqlite.Connection,
    activity: bytes | dict[str, Any],
    recipients: Iterable[str | Recipient],
    *,
    now: float | None = None,
) -> int:
    """Queue ``activity`` for every recipient inbox, inside the caller's transaction.

    Nothing is committed here: the rows become durable when the caller commits the
    transaction that also holds the state change causing the activity. Recipients
    are inbox URLs or :class:`Recipient` (a shared inbox is used when known);
    duplicates collapse to one delivery. Returns the outgoing row id.
    """
    body = activity if isinstance(activity, bytes) else msgspec.json.encode(activity)
    doc = activity if isinstance(activity, dict) else msgspec.json.decode(body)
    activity_id = doc.get("id") if isinstance(doc, dict) else None
    at = time.time() if now is None else now
    cur = await conn.execute(
        "INSERT INTO fed_outgoing (activity_id, body, created_at) VALUES (?, ?, ?)",
        (activity_id if isinstance(activity_id, str) else None, body, at),
    )
    outgoing_id = cur.lastrowid
    assert outgoing_id is not None
    await conn.executemany(
        "INSERT OR IGNORE INTO fed_delivery"
        " (outgoing_id, inbox, host, state, attempts, next_attempt_at, updated_at)"
        " VALUES (?, ?, ?, ?, 0, ?, ?)",
        [(outgoing_id, url, host_of(url), QUEUED, at, at) for url in _targets(recipients)],
    )
    return outgoing_id


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    inbox: str
    host: str
    state: str
    attempts: int
    next_attempt_at: float
    body: bytes
    last_error: str | None = None


_DELIVERY_COLS = (
    "d.id, d.inbox, d.host, d.state, d.attempts, d.next_attempt_at, o.body, d.last_error"
)


def due_deliveries(
    conn: sqlite3.Connection,
    now: float,
    exclude_ids: Sequence[int],
    exclude_hosts: Sequence[str],
    limit: int,
) -> list[Delivery]:
    """Deliveries whose time has come, oldest due first.

    Rows already in flight and rows of hosts at their concurrency limit are left
    out, so a backlog for one slow host never crowds out the others.
    """
    skip = ""
    if exclude_ids:
        skip += f" AND d.id NOT IN ({','.join('?' * len(exclude_ids))})"
    if exclude_hosts:
        skip += f" AND d.host NOT IN ({','.join('?' * len(exclude_hosts))})"
    rows = conn.execute(
        f"SELECT {_DELIVERY_COLS} FROM fed_delivery d JOIN fed_outgoing o"
        " ON o.id = d.outgoing_id WHERE d.state IN ('queued', 'retrying')"
        f" AND d.next_attempt_at <= ?{skip} ORDER BY d.next_attempt_at LIMIT ?",
        (now, *exclude_ids, *exclude_hosts, limit),
    ).fetchall()
    return [Delivery(*row) for row in rows]


def next_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM fed_delivery WHERE state IN ('queued', 'retrying')"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def record_attempt(
    conn: sqlite3.Connection,
    delivery_id: int,
    *,
    state: str,
    attempts: int,
    next_attempt_at: float,
    error: str | None,
    now: float,
) -> None:
    conn.execute(
        "UPDATE fed_delivery SET state = ?, attempts = ?, next_attempt_at = ?,"
        " last_error = ?, updated_at = ? WHERE id = ?",
        (state, attempts, next_attempt_at, error, now, delivery_id),
    )
    conn.commit()


def deliveries(conn: sqlite3.Connection) -> list[Delivery]:
    rows = conn.execute(
        f"SELECT {_DELIVERY_COLS} FROM fed_delivery d JOIN fed_outgoing o"
        " ON o.id = d.outgoing_id ORDER BY d.id"
    ).fetchall()
    return [Delivery(*row) for row in rows]


# --- incoming -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """A chain entry carried by an incoming activity, with its digest (§5)."""

    actor: str
    seq: int
    digest: str
    body: bytes


@dataclass(frozen=True, slots=True)
class IncomingRecord:
    activity_id: str
    body_digest: str
    actor: str
    type: str
    body: bytes
    state: str
    entry: EntryRecord | None = None


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What storing one incoming activity did: ``new``, ``duplicate`` or ``conflict``.

    For a conflict ``stored_body`` is the body already held under that id, so the
    caller can decide whether the two are the same JSON serialized differently.
    """

    status: str
    equivocation: bool = False
    stored_body: bytes | None = None


def store_incoming(
    conn: sqlite3.Connection, batch: Sequence[IncomingRecord], now: float
) -> list[StoreOutcome]:
    """Store a batch of verified activities in one transaction (group commit).

    A known id with the same body digest is a duplicate (nothing written); a known
    id with another digest is a conflict (nothing written). A chain entry whose
    (actor, seq) already holds a different digest is stored too, marked as
    equivocation evidence, and its activity is kept in state ``evidence``.
    """
    out: list[StoreOutcome] = []
    try:
        for rec in batch:
            # The common case (a new id) costs one statement; only a known id reads back.
            inserted = conn.execute(
                "INSERT OR IGNORE INTO fed_incoming (activity_id, body_digest, actor, type,"
                " body, state, attempts, next_attempt_at, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    rec.activity_id,
                    rec.body_digest,
                    rec.actor,
                    rec.type,
                    rec.body,
                    rec.state,
                    now,
                    now,
                ),
            ).rowcount
            if not inserted:
                row = conn.execute(
                    "SELECT body_digest, body FROM fed_incoming WHERE activity_id = ?",
                    (rec.activity_id,),
                ).fetchone()
                same = row[0] == rec.body_digest
                out.append(StoreOutcome("duplicate" if same else "conflict", False, row[1]))
                continue
            equivocation = False
            e = rec.entry
            if (
                e is not None
                and conn.execute(
                    "INSERT OR IGNORE INTO fed_entry"
                    " (actor, seq, digest, body, activity_id, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (e.actor, e.seq, e.digest, e.body, rec.activity_id, now),
                ).rowcount
            ):
                other = conn.execute(
                    "SELECT 1 FROM fed_entry WHERE actor = ? AND seq = ? AND digest != ? LIMIT 1",
                    (e.actor, e.seq, e.digest),
                ).fetchone()
                if other is not None:
                    equivocation = True
                    conn.execute(
                        "INSERT OR IGNORE INTO fed_equivocation (actor, seq, detected_at)"
                        " VALUES (?, ?, ?)",
                        (e.actor, e.seq, now),
                    )
                    conn.execute(
                        "UPDATE fed_incoming SET state = ? WHERE activity_id = ?",
                        (EVIDENCE, rec.activity_id),
                    )
            out.append(StoreOutcome("new", equivocation))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return out


@dataclass(frozen=True, slots=True)
class PendingIncoming:
    activity_id: str
    type: str
    body: bytes
    attempts: int


def due_incoming(
    conn: sqlite3.Connection, now: float, exclude_ids: Sequence[str], limit: int
) -> list[PendingIncoming]:
    marks = ",".join("?" * len(exclude_ids))
    skip = f" AND activity_id NOT IN ({marks})" if exclude_ids else ""
    rows = conn.execute(
        "SELECT activity_id, type, body, attempts FROM fed_incoming"
        f" WHERE state = 'received' AND next_attempt_at <= ?{skip}"
        " ORDER BY next_attempt_at LIMIT ?",
        (now, *exclude_ids, limit),
    ).fetchall()
    return [PendingIncoming(*row) for row in rows]


def next_incoming_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM fed_incoming WHERE state = 'received'"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def record_processing(
    conn: sqlite3.Connection,
    activity_id: str,
    *,
    state: str,
    attempts: int,
    next_attempt_at: float,
    error: str | None,
) -> None:
    # Committed without its own fsync (the next FULL commit carries it to disk): a
    # mark lost to a power cut means one more run of an idempotent handler, the same
    # as a crash just before this commit, and no acknowledged activity is lost.
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        conn.execute(
            "UPDATE fed_incoming SET state = ?, attempts = ?, next_attempt_at = ?,"
            " last_error = ? WHERE activity_id = ?",
            (state, attempts, next_attempt_at, error, activity_id),
        )
        conn.commit()
    finally:
        conn.execute("PRAGMA synchronous=FULL")


# --- equivocation evidence --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two or more different signed entries one actor published with the same seq."""

    actor: str
    seq: int
    detected_at: float
    entries: tuple[bytes, ...]


async def equivocations(conn: aiosqlite.Connection, actor: str | None = None) -> list[Equivocation]:
    """The evidence of every equivocation seen (optionally of one actor), oldest first."""
    where, args = ("WHERE q.actor = ?", (actor,)) if actor is not None else ("", ())
    async with conn.execute(
        "SELECT q.actor, q.seq, q.detected_at, e.body FROM fed_equivocation q"
        " JOIN fed_entry e ON e.actor = q.actor AND e.seq = q.seq"
        f" {where} ORDER BY q.detected_at, q.actor, q.seq, e.received_at, e.digest",
        args,
    ) as cur:
        rows = list(await cur.fetchall())
    grouped: dict[tuple[str, int], tuple[float, list[bytes]]] = {}
    for a, s, at, body in rows:
        grouped.setdefault((a, s), (at, []))[1].append(bytes(body))
    return [Equivocation(a, s, at, tuple(bodies)) for (a, s), (at, bodies) in grouped.items()]


async def is_equivocating(conn: aiosqlite.Connection, actor: str) -> bool:
    """Whether ``actor`` has been caught signing two different entries for one seq."""
    async with conn.execute(
        "SELECT 1 FROM fed_equivocation WHERE actor = ? LIMIT 1", (actor,)
    ) as cur:
        return await cur.fetchone() is not None


# --- the private thread the hot paths run on ---------------------------------------


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    # WAL lets the node's own connection read while we write.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.executescript(SCHEMA)
    conn.commit()
    return conn


class Database:
    """One ``sqlite3`` connection owned by one worker thread.

    Every call runs a plain function on that thread, so a whole batch (reads,
    writes, commit) costs a single hop off the event loop.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = str(path)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="convene-fed-db")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(
            self._executor, _connect, self.path, self._synchronous
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("Database.open() was not awaited")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(conn, *args))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
