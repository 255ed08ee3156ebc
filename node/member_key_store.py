"""SQL for members' own ballot keys and the signatures of member-signed ballots."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from node.storage import Database, Row, Tx

SIGNATURE_COLUMNS = ("receipt", "proposal_id", "member_id", "counter", "key", "signature")


async def insert_key(tx: Tx, key: str, member_id: str, seq: int, label: str) -> None:
    await tx.execute(
        "INSERT INTO member_keys (key, member_id, registered_seq, label) VALUES (?, ?, ?, ?)",
        (key, member_id, seq, label),
    )


async def key_row_tx(tx: Tx, key: str) -> Row | None:
    return await tx.fetchone(
        "SELECT key, member_id, registered_seq, revoked_seq, label FROM member_keys WHERE key = ?",
        (key,),
    )


async def set_revoked(tx: Tx, key: str, seq: int) -> None:
    await tx.execute("UPDATE member_keys SET revoked_seq = ? WHERE key = ?", (seq, key))


async def keys_of(db: Database, member_id: str) -> list[Row]:
    """A current member's keys, registered first; revoked ones too (revoked_seq set)."""
    return await db.fetchall(
        "SELECT k.key, k.registered_seq, k.revoked_seq, k.label FROM member_keys k"
        " JOIN members m ON m.id = k.member_id AND m.removed_at IS NULL"
        " WHERE k.member_id = ? ORDER BY k.registered_seq",
        (member_id,),
    )


async def last_counter(db: Database, proposal_id: str, member_id: str) -> int | None:
    row = await db.fetchone(
        "SELECT MAX(counter) AS c FROM ballot_signatures WHERE proposal_id = ? AND member_id = ?",
        (proposal_id, member_id),
    )
    return None if row is None or row["c"] is None else int(row["c"])


def last_counters(
    conn: sqlite3.Connection, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The highest stored counter per (proposal, member) among ``pairs`` (absent: none),
    read inside the ballots' group-commit transaction; one statement for the batch."""
    found = conn.execute(
        "SELECT proposal_id, member_id, MAX(counter) FROM ballot_signatures"
        " WHERE (proposal_id, member_id) IN"
        " (SELECT value ->> 0, value ->> 1 FROM json_each(?))"
        " GROUP BY proposal_id, member_id",
        (json.dumps(sorted(pairs)),),
    ).fetchall()
    return {(str(row[0]), str(row[1])): int(row[2]) for row in found}


def insert_signatures(conn: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """Rows in SIGNATURE_COLUMNS order, inside the ballots' own group-commit transaction
    (so a signed ballot is never stored without its signature, or the reverse)."""
    if rows:
        conn.executemany(
            f"INSERT INTO ballot_signatures ({', '.join(SIGNATURE_COLUMNS)})"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


async def signatures_of(db: Database, proposal_id: str) -> dict[str, Row]:
    """The member signatures of a proposal's ballots, by receipt."""
    rows = await db.fetchall(
        f"SELECT {', '.join(SIGNATURE_COLUMNS)} FROM ballot_signatures WHERE proposal_id = ?",
        (proposal_id,),
    )
    return {row["receipt"]: row for row in rows}


async def signed_counts(db: Database, proposal_id: str) -> tuple[int, int]:
    """(member-signed, custodial) among the counted ballots of a closed proposal; a
    ballot whose key was revoked before the tally counts as custodial, as exported."""
    row = await db.fetchone(
        "SELECT COUNT(s.receipt) AS signed, COUNT(*) - COUNT(s.receipt) AS custodial"
        " FROM ballots b JOIN proposals p ON p.id = b.proposal_id"
        " LEFT JOIN ballot_signatures s ON s.receipt = b.receipt AND NOT EXISTS ("
        "SELECT 1 FROM member_keys k WHERE k.key = s.key AND k.revoked_seq <= p.tally_seq)"
        " WHERE b.proposal_id = ? AND b.counted = 1",
        (proposal_id,),
    )
    return (0, 0) if row is None else (int(row["signed"]), int(row["custodial"]))
