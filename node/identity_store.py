"""SQL for the node's identity row (table `node_identity`)."""

from __future__ import annotations

import json
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


def current_key(database: Path) -> tuple[int, str] | None:
    """(seq, publicKeyMultibase) of the key the chain's latest Genesis or KeyRotation
    names (ARCHITECTURE "The signature chain"); None before the chain exists."""
    if not database.exists():
        return None
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT seq, entry FROM chain_entries WHERE type IN ('Genesis', 'KeyRotation')"
            " ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"{database} has no readable chain: {exc}") from exc
    finally:
        conn.close()
    return (
        None
        if row is None
        else (int(row[0]), json.loads(row[1])["assertionKey"]["publicKeyMultibase"])
    )


async def latest_rotation_after(tx: Tx, seq: int) -> int | None:
    """The seq of the latest KeyRotation entry after `seq`, if any (a range scan)."""
    row = await tx.fetchone(
        "SELECT seq FROM chain_entries WHERE seq > ? AND type = 'KeyRotation'"
        " ORDER BY seq DESC LIMIT 1",
        (seq,),
    )
    return None if row is None else int(row["seq"])
