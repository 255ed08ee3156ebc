"""SQL for the node's identity row (table `node_identity`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from node.storage import StorageError, Tx


async def insert(tx: Tx, *, actor: str, url: str, name: str, kind: str, created_at: str) -> None:
    await tx.execute(
        "INSERT INTO node_identity (id, actor, url, name, kind, created_at)"
        " VALUES (1, ?, ?, ?, ?, ?)",
        (actor, url, name, kind, created_at),
    )


def read(database: Path) -> dict[str, str]:
    """Read the identity synchronously: the app factory needs it before the loop runs."""
    if not database.exists():
        raise StorageError(f"no database at {database}; run `convene init` first")
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT actor, url, name, kind FROM node_identity WHERE id = 1"
        ).fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"{database} has no node identity: {exc}") from exc
    finally:
        conn.close()
    if row is None:
        raise StorageError(f"{database} has no node identity; was `convene init` interrupted?")
    return {"actor": row[0], "url": row[1], "name": row[2], "kind": row[3]}
