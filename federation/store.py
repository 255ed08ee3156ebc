"""The federation layer's SQLite file: its tables and the thread its hot paths run on
(docs/protocol.md §9.3).

:data:`SCHEMA` creates four concerns' tables, whose queries live beside them:

- ``fed_outgoing`` / ``fed_delivery``, the durable delivery queue:
  federation/delivery_queue.py;
- ``fed_incoming`` (dedupe table and inbox work queue), ``fed_entry`` (received
  chain entries by (actor, seq, digest)) and ``fed_equivocation``:
  federation/incoming.py.

The node talks to these tables through aiosqlite connections (:func:`ensure_schema`,
``enqueue``, ``equivocations``). The inbox and the delivery worker, which are hot
paths, run plain ``sqlite3`` functions on a private thread (:class:`Database`) so
that one batch costs one thread hop and one commit. Every public name of the two
query modules stays importable from here (``store.enqueue``, ``store.RECEIVED``...).

The inbox and the delivery worker, the two services over that thread, share their
lifetime here too: :func:`service_ctx` runs one for an app's lifetime and :func:`nap`
is the wait of their background loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite
from aiohttp import web

from federation.delivery_queue import (
    DEAD,
    QUEUED,
    RETRYING,
    SENT,
    Delivery,
    Recipient,
    deliveries,
    due_deliveries,
    enqueue,
    host_of,
    next_due_at,
    record_attempt,
)
from federation.incoming import (
    EVIDENCE,
    FAILED,
    IGNORED,
    PROCESSED,
    RECEIVED,
    EntryRecord,
    Equivocation,
    IncomingRecord,
    PendingIncoming,
    ProcessingMark,
    StoreOutcome,
    due_incoming,
    equivocations,
    is_equivocating,
    next_incoming_due_at,
    record_processing,
    store_incoming,
)

__all__ = [
    "DEAD",
    "EVIDENCE",
    "FAILED",
    "IGNORED",
    "PROCESSED",
    "QUEUED",
    "RECEIVED",
    "RETRYING",
    "SCHEMA",
    "SENT",
    "Database",
    "Delivery",
    "EntryRecord",
    "Equivocation",
    "IncomingRecord",
    "PendingIncoming",
    "ProcessingMark",
    "Recipient",
    "Service",
    "StoreOutcome",
    "deliveries",
    "due_deliveries",
    "due_incoming",
    "enqueue",
    "ensure_schema",
    "equivocations",
    "host_of",
    "is_equivocating",
    "nap",
    "next_due_at",
    "next_incoming_due_at",
    "record_attempt",
    "record_processing",
    "service_ctx",
    "store_incoming",
]

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


async def ensure_schema(conn: aiosqlite.Connection) -> None:
    """Create the federation tables if missing; safe to call at every start."""
    await conn.executescript(SCHEMA)
    await conn.commit()


# --- the private thread the hot paths run on ---------------------------------------


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
    try:
        # WAL lets the node's own connection read while we write.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.executescript(SCHEMA)
        conn.commit()
    except BaseException:
        conn.close()
        raise
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
        """Connect on the worker thread; on failure the thread is stopped too, so a
        node that cannot open its file exits instead of idling on a live thread."""
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(
                self._executor, _connect, self.path, self._synchronous
            )
        except BaseException:
            self._executor.shutdown(wait=True)
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("Database.open() was not awaited")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(conn, *args))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``fn(conn, *args)`` on the thread; the caller attaches a callback
        instead of awaiting (see federation/inbox.py's group commit)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("Database.open() was not awaited")
        return self._executor.submit(fn, conn, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)


# --- the lifetime of the services over that thread ---------------------------------


class Service(Protocol):
    """A background service with a paired start and stop (the inbox, the worker)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=Service)


def service_ctx(
    factory: Callable[[web.Application], S], key: web.AppKey[S]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry that runs ``factory(app)`` for the app's lifetime
    under ``key``: started before the app serves, stopped when it shuts down."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        service = factory(app)
        await service.start()
        app[key] = service
        try:
            yield
        finally:
            await service.stop()

    return ctx


async def nap(wake: asyncio.Event, seconds: float) -> None:
    """Sleep until ``wake`` is set or ``seconds`` pass, then clear ``wake``.

    asyncio.timeout rather than asyncio.wait_for: on Python 3.11 wait_for can swallow
    a cancellation that lands as the event fires, and then stop() would wait forever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
    wake.clear()
