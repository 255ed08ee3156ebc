"""SQL of nested regions (node/nested.py): the signed entries one level holds about the
level next to it, kept verbatim like node/regional_store.py keeps tallies.

Registered as the node's ``nested`` migration component.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from node.regional_store import HeldEntry
from node.storage import Database, Tx

# lower: a lower region's Decision, its input upward (held by the upper region and the
#   upper level's chapters); level: a lower region's Level entry (held by the upper
#   region); tally: an upper-level chapter's Tally, upper: the upper region's Decision
#   (both held by a lower region, to verify the level above its own)
Kind = Literal["lower", "level", "tally", "upper"]

NESTED_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE nested_entries (
        proposal TEXT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        entry BLOB NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (proposal, kind, actor)
    )
    """,
)


async def put(tx: Tx, proposal: str, kind: Kind, held: HeldEntry, now: float) -> HeldEntry:
    """Keep `held` unless this actor already has one of this kind; the one kept."""
    await tx.execute(
        "INSERT OR IGNORE INTO nested_entries"
        " (proposal, kind, actor, seq, digest, entry, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (proposal, kind, held.actor, held.seq, held.digest, msgspec.json.encode(held.entry), now),
    )
    row = await tx.fetchone(
        "SELECT actor, seq, digest, entry FROM nested_entries"
        " WHERE proposal = ? AND kind = ? AND actor = ?",
        (proposal, kind, held.actor),
    )
    assert row is not None
    return HeldEntry(row["actor"], row["seq"], row["digest"], msgspec.json.decode(row["entry"]))


async def held(db: Database, proposal: str, kind: Kind) -> list[HeldEntry]:
    rows = await db.fetchall(
        "SELECT actor, seq, digest, entry FROM nested_entries WHERE proposal = ? AND kind = ?"
        " ORDER BY actor",
        (proposal, kind),
    )
    return [
        HeldEntry(r["actor"], r["seq"], r["digest"], msgspec.json.decode(r["entry"])) for r in rows
    ]
