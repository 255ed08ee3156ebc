"""SQL for the node's own signature chain (table `chain_entries`)."""

from __future__ import annotations

from node.storage import Database, StorageError, Tx


class ChainStoreError(StorageError):
    code = "chain_store"


async def head(tx: Tx) -> tuple[int, str] | None:
    row = await tx.fetchone("SELECT seq, digest FROM chain_entries ORDER BY seq DESC LIMIT 1")
    return (int(row["seq"]), str(row["digest"])) if row else None


async def insert(tx: Tx, *, seq: int, type_: str, digest: str, published: str, blob: bytes) -> None:
    await tx.execute(
        "INSERT INTO chain_entries (seq, type, digest, published, entry) VALUES (?, ?, ?, ?, ?)",
        (seq, type_, digest, published, blob),
    )


async def entries(db: Database, start: int = 0, limit: int | None = None) -> list[bytes]:
    rows = await db.fetchall(
        "SELECT entry FROM chain_entries WHERE seq >= ? ORDER BY seq LIMIT ?",
        (start, -1 if limit is None else limit),
    )
    return [bytes(row["entry"]) for row in rows]


async def entries_in(tx: Tx, types: tuple[str, ...]) -> list[bytes]:
    marks = ",".join("?" for _ in types)
    rows = await tx.fetchall(
        f"SELECT entry FROM chain_entries WHERE type IN ({marks}) ORDER BY seq", types
    )
    return [bytes(row["entry"]) for row in rows]


async def count(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM chain_entries")
    return int(row["n"]) if row else 0


async def digest_at(tx: Tx, seq: int) -> str:
    row = await tx.fetchone("SELECT digest FROM chain_entries WHERE seq = ?", (seq,))
    if row is None:
        raise ChainStoreError(f"no chain entry at seq {seq}")
    return str(row["digest"])
