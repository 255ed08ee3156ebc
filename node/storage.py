"""The node's SQLite file: one writer connection, a few readers, numbered migrations.

Theory of operation. SQLite in WAL mode lets readers run beside one writer. Every
change goes through `Database.write()`, which takes an in-process lock and then
`BEGIN IMMEDIATE` (so a second process, such as `convene member add` while the node
runs, waits on SQLite's own lock instead of failing half way), and commits or rolls
back as a whole: a state change and its chain entry are always in one transaction.
`synchronous=FULL` makes every commit durable before it returns.

Migrations are numbered per component ("node", and whatever federation/ registers):
a component's list only ever grows, and `schema_migrations` records what a file has,
so an old file opens under new code by applying the missing steps in order.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from node.errors import NodeError

Params = Sequence[Any] | Mapping[str, Any]
Row = sqlite3.Row
T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA synchronous = FULL",
)


class StorageError(NodeError):
    code = "storage"
    status = 500


class Tx:
    """An open write transaction. Only storage modules put SQL through it."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> aiosqlite.Connection:
        """The writer connection, for other layers' storage modules (same transaction)."""
        return self._conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the last inserted rowid."""
        cursor = await self._conn.execute(sql, params)
        rowid = cursor.lastrowid
        await cursor.close()
        return int(rowid or 0)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))


class Database:
    """`Database(path, migrations)`, then `await db.open()` ... `await db.close()`.

    `migrations` maps a component name to its ordered steps; other layers may add
    their component before `open` (see node/app.py).
    """

    def __init__(
        self, path: Path, migrations: dict[str, Sequence[str]], *, readers: int = 3
    ) -> None:
        self.path = path
        self.migrations = migrations
        self._reader_count = max(1, readers)
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = itertools.cycle([0])
        self._write_lock = asyncio.Lock()
        self._inline: sqlite3.Connection | None = None

    async def open(self, *, upto: Mapping[str, int] | None = None) -> None:
        """Open (creating if needed) and migrate. `upto` stops early; tests use it.

        On any failure (a file newer than this program, a locked or corrupt file)
        everything opened so far is closed before the error leaves: each aiosqlite
        connection is a non-daemon thread, and one left open keeps the process alive
        after the command has failed.
        """
        try:
            await self._open(upto or {})
        except BaseException:
            await self.close()
            raise

    async def _open(self, upto: Mapping[str, int]) -> None:
        fresh = not self.path.exists()
        self._writer = await _connect(self.path)
        if fresh:
            os.chmod(self.path, 0o600)
        await self._writer.execute("PRAGMA journal_mode = WAL")
        await self._migrate(self.migrations, upto)
        for _ in range(self._reader_count):
            self._readers.append(await _connect(self.path, query_only=True))
        self._next_reader = itertools.cycle(range(len(self._readers)))
        self._inline = sqlite3.connect(self.path, isolation_level=None)
        self._inline.row_factory = sqlite3.Row
        for pragma in (*_PRAGMAS, "PRAGMA query_only = ON"):
            self._inline.execute(pragma)

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StorageError(f"{self.path} is not open")
        return self._writer

    async def close(self) -> None:
        """Close every connection; safe to call twice or after a failed `open`."""
        readers, self._readers = self._readers, []
        for conn in readers:
            await conn.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One IMMEDIATE transaction: committed if the block returns, else rolled back."""
        async with self._write_lock:
            writer = self.writer
            await writer.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(writer)
            except BaseException:
                await writer.execute("ROLLBACK")
                raise
            else:
                await writer.execute("COMMIT")

    async def write_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` as one IMMEDIATE transaction on the writer's own thread.

        Same guarantees as `write()`, but BEGIN, the body and COMMIT cost one thread
        hop instead of one each: on a busy loop every hop can wait a whole GIL switch
        interval, and the group-committed ballot path is all hops. `fn` must only run
        SQL (it is off the event loop). This uses aiosqlite's `_execute`, the hook its
        own methods are built on.
        """
        async with self._write_lock:
            writer = self.writer
            conn = writer._conn

            def atomic() -> T:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result

            result: T = await writer._execute(atomic)  # type: ignore[no-untyped-call]
            return result

    def _reader(self) -> aiosqlite.Connection:
        return self._readers[next(self._next_reader)]

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._reader().execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._reader().execute_fetchall(sql, params))

    def lookup(self, sql: str, params: Params = ()) -> Row | None:
        """A point read by key, run on the event loop's own thread.

        For hot, index-backed single-row reads (a token on every request) a thread hop
        costs more than the read: in WAL mode a reader never waits for the writer, so
        this cannot stall the loop behind a commit. Anything scanning belongs in
        `fetchone`/`fetchall`.
        """
        if self._inline is None:
            raise StorageError(f"{self.path} is not open")
        row: Row | None = self._inline.execute(sql, params).fetchone()
        return row

    async def schema_versions(self) -> dict[str, int]:
        rows = await self.fetchall(
            "SELECT component, MAX(version) AS v FROM schema_migrations GROUP BY component"
        )
        return {row["component"]: int(row["v"]) for row in rows}

    async def _migrate(
        self, migrations: Mapping[str, Sequence[str]], upto: Mapping[str, int]
    ) -> None:
        await self.writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (component, version))"
        )
        for component, steps in migrations.items():
            limit = min(len(steps), upto.get(component, len(steps)))
            async with self.write() as tx:
                row = await tx.fetchone(
                    "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations"
                    " WHERE component = ?",
                    (component,),
                )
                have = int(row["v"]) if row else 0
                if have > len(steps):
                    raise StorageError(
                        f"{self.path}: component {component!r} is at schema {have}, newer "
                        f"than this program knows ({len(steps)}); upgrade convene"
                    )
                for version in range(have + 1, limit + 1):
                    for statement in _statements(steps[version - 1]):
                        await tx.execute(statement)
                    await tx.execute(
                        "INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                        (component, version),
                    )


def _statements(script: str) -> list[str]:
    # executescript would COMMIT on its own and break the one-transaction migration step.
    return [part.strip() for part in script.split(";") if part.strip()]


async def _connect(path: Path, *, query_only: bool = False) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN ourselves, so nothing opens a transaction behind
    # our back; check_same_thread is irrelevant because aiosqlite owns one thread each.
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        for pragma in (*_PRAGMAS, *(["PRAGMA query_only = ON"] if query_only else [])):
            await conn.execute(pragma)
    except BaseException:
        await conn.close()  # not yet handed to the Database, so nobody else would
        raise
    return conn
