"""SQL the audit-bundle export reads (node/export.py): read-only, used by it alone.

Federation's tables (``fed_actor``, ``fed_entry``) exist only once the node has
federated, so each of their reads answers nothing on a node that never did.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.storage import Database

_COUNTED_BALLOTS_SQL = (
    "SELECT p.object_id AS proposal, p.spec AS spec, b.member_id AS member,"
    " b.ballot AS ballot, b.nonce AS nonce, b.receipt AS receipt,"
    " s.counter AS counter, s.key AS key, s.signature AS signature"
    " FROM ballots b JOIN proposals p ON p.id = b.proposal_id"
    # member-signed (§7.5), unless the member revoked the key before the count: the
    # signature then vouches for nothing and the ballot is exported as custodial
    " LEFT JOIN ballot_signatures s ON s.receipt = b.receipt AND NOT EXISTS ("
    "SELECT 1 FROM member_keys k WHERE k.key = s.key AND k.revoked_seq <= p.tally_seq)"
    " WHERE b.counted = 1 AND p.tally_seq IS NOT NULL"
    " ORDER BY p.object_id, b.receipt"
)


@dataclass(frozen=True, slots=True)
class CountedBallot:
    """A ballot counted in a signed tally, with its member's signature when it has one
    that was not revoked before the count (``counter``, ``key``, ``signature``)."""

    proposal: str  # the proposal's object id
    spec: bytes  # the proposal's spec, JSON
    member: str
    ballot: bytes  # JSON
    nonce: str | None  # hex; None once discarded (the export then gives the receipt only)
    receipt: str
    counter: int | None
    key: str | None
    signature: str | None


async def _has_table(db: Database, name: str) -> bool:
    row = await db.fetchone(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    )
    return row is not None


async def counted_ballots(db: Database) -> list[CountedBallot]:
    """Every counted ballot of every tallied proposal, by proposal and receipt."""
    return [
        CountedBallot(
            proposal=str(row["proposal"]),
            spec=_bytes(row["spec"]),
            member=str(row["member"]),
            ballot=_bytes(row["ballot"]),
            nonce=row["nonce"],
            receipt=str(row["receipt"]),
            counter=row["counter"],
            key=row["key"],
            signature=row["signature"],
        )
        for row in await db.fetchall(_COUNTED_BALLOTS_SQL)
    ]


async def received_entries(db: Database) -> list[bytes]:
    """Other actors' chain entries the inbox verified and kept (evidence included)."""
    if not await _has_table(db, "fed_entry"):
        return []
    rows = await db.fetchall("SELECT body FROM fed_entry ORDER BY actor, seq, digest")
    return [_bytes(row["body"]) for row in rows]


async def remote_actor_documents(db: Database) -> list[bytes]:
    """The actor documents of other nodes this node has cached."""
    if not await _has_table(db, "fed_actor"):
        return []
    rows = await db.fetchall("SELECT document FROM fed_actor ORDER BY id")
    return [_bytes(row["document"]) for row in rows]


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


async def holds_regional(db: Database) -> bool:
    """Whether this node's schema has the regional tables (node/regional_store.py)."""
    return await _has_table(db, "regional_questions")
