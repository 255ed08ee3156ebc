"""The node's SQLite file: pragmas, migrations across versions, all-or-nothing writes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import DATABASE_FILE
from node.schema import NODE_MIGRATIONS
from node.storage import Database, StorageError


async def open_db(path: Path, **kwargs: object) -> Database:
    db = Database(path, {"node": NODE_MIGRATIONS}, readers=2)
    await db.open(**kwargs)  # type: ignore[arg-type]
    return db


async def test_wal_foreign_keys_and_private_file(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "n.sqlite3")
    try:
        row = await db.fetchone("PRAGMA journal_mode")
        assert row is not None and row[0] == "wal"
        row = await db.fetchone("PRAGMA foreign_keys")
        assert row is not None and row[0] == 1
        assert (tmp_path / "n.sqlite3").stat().st_mode & 0o777 == 0o600
        with pytest.raises(sqlite3.IntegrityError):
            async with db.write() as tx:  # a token for a member that does not exist
                await tx.execute(
                    "INSERT INTO api_tokens (token_hash, member_id, created_at) VALUES (?, ?, ?)",
                    ("h", "m-none", "2026-01-01T00:00:00Z"),
                )
        with pytest.raises(sqlite3.OperationalError):  # readers cannot write
            await db.fetchall("DELETE FROM chain_entries")
    finally:
        await db.close()


async def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    db = await open_db(tmp_path / "n.sqlite3")
    try:
        with pytest.raises(RuntimeError):
            async with db.write() as tx:
                await tx.execute(
                    "INSERT INTO chain_entries (seq, type, digest, published, entry)"
                    " VALUES (0, 'Genesis', 'd', 't', x'00')"
                )
                raise RuntimeError("crash between the entry and its effect")
        assert await db.fetchall("SELECT * FROM chain_entries") == []
    finally:
        await db.close()


async def test_old_database_opens_under_new_code(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = await open_db(path, upto={"node": 1})
    async with old.write() as tx:
        await tx.execute(
            "INSERT INTO chain_entries (seq, type, digest, published, entry)"
            " VALUES (0, 'Genesis', 'd0', 't', x'00')"
        )
        await tx.execute(
            "INSERT INTO members (id, name, role, created_at, added_seq)"
            " VALUES ('m-1', 'Ada', 'admin', 't', 0)"
        )
    assert await old.schema_versions() == {"node": 1}
    await old.close()

    new = await open_db(path)
    try:
        assert await new.schema_versions() == {"node": len(NODE_MIGRATIONS)}
        row = await new.fetchone("SELECT name FROM members WHERE id = 'm-1'")
        assert row is not None and row["name"] == "Ada"
        # step 2's column and table exist and work on the old rows
        assert await new.fetchall("SELECT counted FROM ballots") == []
        assert await new.fetchall("SELECT * FROM sessions") == []
        assert await new.fetchall("SELECT origin, question_digest FROM proposals") == []
    finally:
        await new.close()


async def test_other_components_migrate_beside_the_node(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    db = Database(path, {"node": NODE_MIGRATIONS, "extra": ("CREATE TABLE x (a INTEGER)",)})
    await db.open()
    assert await db.schema_versions() == {"node": len(NODE_MIGRATIONS), "extra": 1}
    await db.close()


async def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    db = await open_db(path)
    await db.close()
    older_code = Database(path, {"node": NODE_MIGRATIONS[:1]})
    with pytest.raises(StorageError, match="newer than this program"):
        await older_code.open()
    await older_code.close()


async def test_a_failed_open_closes_what_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite3"
    await (await open_db(path)).close()
    older_code = Database(path, {"node": NODE_MIGRATIONS[:1]})
    with pytest.raises(StorageError):
        await older_code.open()
    with pytest.raises(StorageError, match="is not open"):
        _ = older_code.writer  # the writer thread was closed, not left running
    await older_code.close()  # and closing again is harmless


def test_cli_on_a_newer_database_exits_promptly_with_the_reason(tmp_path: Path) -> None:
    # The real console script in its own process: a leaked aiosqlite thread would keep
    # it alive after the error, so the timeout is the assertion.
    convene = str(Path(sys.executable).with_name("convene"))
    data = tmp_path / "data"
    subprocess.run(
        [convene, "init", "--name", "c", "--url", "http://127.0.0.1:9", "--data", str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with sqlite3.connect(data / DATABASE_FILE) as conn:
        conn.execute("INSERT INTO schema_migrations (component, version) VALUES ('node', 999)")
    for command in (["member", "list"], ["serve", "--port", "9"]):
        done = subprocess.run(
            [convene, *command, "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode != 0, command
        assert "newer than this program" in done.stderr, (command, done.stderr)
        assert "schema 999" in done.stderr
