"""SQL for proposals and ballots."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from node.storage import Database, Row, Tx

_PROPOSAL = "SELECT * FROM proposals"


async def insert_proposal(tx: Tx, fields: dict[str, Any]) -> None:
    names = ", ".join(fields)
    marks = ", ".join(f":{name}" for name in fields)
    await tx.execute(f"INSERT INTO proposals ({names}) VALUES ({marks})", fields)


async def get_proposal(db: Database, proposal_id: str) -> Row | None:
    return await db.fetchone(f"{_PROPOSAL} WHERE id = ?", (proposal_id,))


async def get_proposal_tx(tx: Tx, proposal_id: str) -> Row | None:
    return await tx.fetchone(f"{_PROPOSAL} WHERE id = ?", (proposal_id,))


async def by_object_id(db: Database, object_id: str) -> Row | None:
    return await db.fetchone(f"{_PROPOSAL} WHERE object_id = ?", (object_id,))


async def list_proposals(db: Database) -> list[Row]:
    return await db.fetchall(f"{_PROPOSAL} ORDER BY created_at DESC, id")


async def update_proposal(tx: Tx, proposal_id: str, fields: dict[str, Any]) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in fields)
    await tx.execute(f"UPDATE proposals SET {sets} WHERE id = :id", {**fields, "id": proposal_id})


async def statuses(tx: Tx, proposal_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(proposal_ids))
    marks = ",".join("?" for _ in ids)
    rows = await tx.fetchall(f"SELECT id, status FROM proposals WHERE id IN ({marks})", ids)
    return {row["id"]: row["status"] for row in rows}


async def due_to_close(db: Database, now: int) -> list[str]:
    rows = await db.fetchall(
        "SELECT id FROM proposals WHERE status = 'open' AND closes_ts <= ? ORDER BY closes_ts",
        (now,),
    )
    return [row["id"] for row in rows]


async def next_close_time(db: Database) -> int | None:
    row = await db.fetchone(
        "SELECT MIN(closes_ts) AS t FROM proposals WHERE status = 'open' AND closes_ts IS NOT NULL"
    )
    return None if row is None or row["t"] is None else int(row["t"])


# Who may still put a ballot in: both answered by one statement, one row.
_BATCH_CHECK = (
    "SELECT (SELECT json_group_array(id) FROM proposals WHERE status = 'open'"
    " AND id IN (SELECT value FROM json_each(?))),"
    " (SELECT json_group_array(id) FROM members WHERE removed_at IS NULL"
    " AND id IN (SELECT value FROM json_each(?)))"
)


def store_ballot_batch(
    conn: sqlite3.Connection, proposal_ids: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> list[str]:
    """Insert the ballots whose proposal is open and whose member is current.

    `rows[i]` is in BALLOT_COLUMNS order for `proposal_ids[i]`; the answer says, for
    each, "stored", "closed" (its proposal is not open) or "removed" (its member was
    removed, perhaps by another process since the token was checked). Runs on the
    writer thread inside `Database.write_now`, so the checks and the insert are one
    transaction: a ballot racing a close is either counted or refused, never lost.
    Two statements whatever the batch size: every SQLite call on this thread must
    win the GIL back from a busy event loop, so a row-by-row executemany made a
    batch's commit wait once per row.
    """
    members = [row[1] for row in rows]
    check = conn.execute(
        _BATCH_CHECK,
        (json.dumps(sorted(set(proposal_ids))), json.dumps(sorted(set(members)))),
    ).fetchone()
    open_ids, current = set(json.loads(check[0])), set(json.loads(check[1]))
    outcome = [
        "stored"
        if member in current and pid in open_ids
        else ("removed" if member not in current else "closed")
        for pid, member in zip(proposal_ids, members, strict=True)
    ]
    keep = [row for row, said in zip(rows, outcome, strict=True) if said == "stored"]
    if keep:
        picks = ", ".join(f"value ->> {i}" for i in range(len(BALLOT_COLUMNS)))
        # ORDER BY key: ids follow arrival, and a member's last ballot is the highest id
        conn.execute(
            f"INSERT INTO ballots ({', '.join(BALLOT_COLUMNS)})"
            f" SELECT {picks} FROM json_each(?) ORDER BY key",
            (json.dumps(keep),),
        )
    return outcome


BALLOT_COLUMNS = ("proposal_id", "member_id", "receipt", "ballot", "nonce", "cast_at")


async def insert_ballots(tx: Tx, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in BALLOT_COLUMNS order; one statement for a whole group-commit batch."""
    await tx.executemany(
        f"INSERT INTO ballots ({', '.join(BALLOT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", rows
    )


async def last_ballots(tx: Tx, proposal_id: str) -> list[Row]:
    """Each current member's last ballot (the one that counts)."""
    return await tx.fetchall(
        "SELECT b.id, b.member_id, b.receipt, b.ballot FROM ballots b"
        " JOIN members m ON m.id = b.member_id AND m.removed_at IS NULL"
        " WHERE b.id IN (SELECT MAX(id) FROM ballots WHERE proposal_id = ? GROUP BY member_id)"
        " ORDER BY b.receipt",
        (proposal_id,),
    )


async def mark_counted(tx: Tx, ballot_ids: Iterable[int]) -> None:
    await tx.executemany("UPDATE ballots SET counted = 1 WHERE id = ?", [(i,) for i in ballot_ids])


async def counted_receipts(db: Database, proposal_id: str) -> list[str]:
    rows = await db.fetchall(
        "SELECT receipt FROM ballots WHERE proposal_id = ? AND counted = 1", (proposal_id,)
    )
    return [row["receipt"] for row in rows]


async def ballot_by_receipt(db: Database, proposal_id: str, receipt: str) -> Row | None:
    return await db.fetchone(
        "SELECT id, counted FROM ballots WHERE proposal_id = ? AND receipt = ?",
        (proposal_id, receipt),
    )


async def last_ballot_of(db: Database, proposal_id: str, member_id: str) -> Row | None:
    """One member's latest ballot on one proposal (the one that counts until close)."""
    return await db.fetchone(
        "SELECT receipt, ballot, nonce, cast_at, counted FROM ballots"
        " WHERE proposal_id = ? AND member_id = ? ORDER BY id DESC LIMIT 1",
        (proposal_id, member_id),
    )


async def ballot_count(db: Database, proposal_id: str) -> int:
    row = await db.fetchone(
        "SELECT COUNT(*) AS n FROM ballots WHERE proposal_id = ?", (proposal_id,)
    )
    return int(row["n"]) if row else 0


async def voters(db: Database, proposal_id: str) -> int:
    row = await db.fetchone(
        "SELECT COUNT(DISTINCT member_id) AS n FROM ballots WHERE proposal_id = ?", (proposal_id,)
    )
    return int(row["n"]) if row else 0


async def voters_by_proposal(db: Database) -> dict[str, int]:
    """Distinct voters of every proposal that has ballots, in one grouped query.

    The covering index ballots_by_member (proposal_id, member_id, id) answers it
    without touching the table, so a list page costs one query, not one per row.
    """
    rows = await db.fetchall(
        "SELECT proposal_id, COUNT(DISTINCT member_id) AS n FROM ballots GROUP BY proposal_id"
    )
    return {row["proposal_id"]: int(row["n"]) for row in rows}
