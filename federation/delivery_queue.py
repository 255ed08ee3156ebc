"""The durable delivery queue's rows: ``fed_outgoing`` and ``fed_delivery`` (§9.3).

One row per outgoing activity and one per (activity, recipient inbox) with its
state, attempt count and next due time. :func:`enqueue` writes them inside the
caller's aiosqlite transaction, so an outgoing activity commits together with the
chain entry that caused it and the queue is the source of truth after a crash. The
delivery worker reads and updates them with the plain ``sqlite3`` functions below,
run on :class:`federation.store.Database`'s thread. The tables are created by
federation/store.py's schema.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
import msgspec

# Delivery states (the transitions between them are the table in delivery.py).
QUEUED = "queued"
RETRYING = "retrying"
SENT = "sent"
DEAD = "dead"


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
