"""SQL of partner facilitation (node/facilitation.py): grants and revocations known here,
requests sent or carried out, and the refusals of facilitation entries.

Registered as the node's ``facilitation`` migration component. Signed entries are kept
verbatim; the columns beside them only serve the queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from node.storage import Database, Row, Tx

FACILITATION_MIGRATIONS: tuple[str, ...] = (
    # 1: grants (a region's own, or received by the facilitator or a following chapter),
    # revocations (kept apart: one may arrive before its grant), requests sent by this
    # node as facilitator or carried out by this node as region
    """
    CREATE TABLE facil_grants (
        digest TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        seq INTEGER NOT NULL,
        facilitator TEXT NOT NULL,
        convening TEXT,
        granted_by TEXT,
        entry BLOB NOT NULL
    );
    CREATE INDEX facil_grants_by_facilitator ON facil_grants (region, facilitator);
    CREATE TABLE facil_revokes (
        region TEXT NOT NULL,
        grant_digest TEXT NOT NULL,
        seq INTEGER NOT NULL,
        entry BLOB NOT NULL,
        PRIMARY KEY (region, grant_digest)
    );
    CREATE TABLE facil_requests (
        digest TEXT PRIMARY KEY,
        actor TEXT NOT NULL,
        seq INTEGER NOT NULL,
        region TEXT NOT NULL,
        grant_digest TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('sent', 'carried')),
        object_id TEXT,
        entry BLOB NOT NULL,
        at REAL NOT NULL
    )
    """,
)

# Types whose refusals the facilitation view lists.
ENTRY_TYPES = ("FacilitatorGrant", "FacilitatorRevoke", "FacilitationRequest")


@dataclass(frozen=True)
class GrantRow:
    digest: str
    region: str
    seq: int
    facilitator: str
    convening: str | None
    granted_by: str | None
    revoked_seq: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "grant": self.digest,
            "region": self.region,
            "seq": self.seq,
            "facilitator": self.facilitator,
            "convening": self.convening,
            "revoked_seq": self.revoked_seq,
            "in_force": self.revoked_seq is None,
        }


@dataclass(frozen=True)
class RequestRow:
    digest: str
    actor: str
    seq: int
    region: str
    grant: str
    action: str
    outcome: str
    object_id: str | None
    proposal: str | None
    entry: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.digest,
            "id": self.entry.get("id"),
            "actor": self.actor,
            "seq": self.seq,
            "region": self.region,
            "grant": self.grant,
            "action": self.action,
            "body": self.entry.get("body"),
            "outcome": self.outcome,
            "object_id": self.object_id,
            "proposal": self.proposal,
        }


_GRANTS = (
    "SELECT g.digest, g.region, g.seq, g.facilitator, g.convening, g.granted_by,"
    " r.seq AS revoked_seq FROM facil_grants g"
    " LEFT JOIN facil_revokes r ON r.region = g.region AND r.grant_digest = g.digest"
)
_REQUESTS = (
    "SELECT q.*, p.id AS proposal FROM facil_requests q"
    " LEFT JOIN proposals p ON p.object_id = q.object_id"
)


def _grant(row: Row) -> GrantRow:
    return GrantRow(
        row["digest"],
        row["region"],
        row["seq"],
        row["facilitator"],
        row["convening"],
        row["granted_by"],
        row["revoked_seq"],
    )


def _request(row: Row) -> RequestRow:
    return RequestRow(
        row["digest"],
        row["actor"],
        row["seq"],
        row["region"],
        row["grant_digest"],
        row["action"],
        row["outcome"],
        row["object_id"],
        row["proposal"],
        msgspec.json.decode(row["entry"]),
    )


# --- grants and revocations ------------------------------------------------------------


async def put_grant(
    tx: Tx,
    *,
    digest: str,
    region: str,
    seq: int,
    facilitator: str,
    convening: str | None,
    granted_by: str | None,
    entry: dict[str, Any],
) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO facil_grants"
        " (digest, region, seq, facilitator, convening, granted_by, entry)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (digest, region, seq, facilitator, convening, granted_by, msgspec.json.encode(entry)),
    )


async def put_revoke(tx: Tx, *, region: str, grant: str, seq: int, entry: dict[str, Any]) -> None:
    """Keep the first revocation of a grant (a later one changes nothing)."""
    await tx.execute(
        "INSERT INTO facil_revokes (region, grant_digest, seq, entry) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (region, grant_digest) DO UPDATE SET seq = excluded.seq,"
        " entry = excluded.entry WHERE excluded.seq < facil_revokes.seq",
        (region, grant, seq, msgspec.json.encode(entry)),
    )


async def grants(db: Database, region: str | None = None) -> list[GrantRow]:
    if region is None:
        rows = await db.fetchall(_GRANTS + " ORDER BY g.region, g.seq")
    else:
        rows = await db.fetchall(_GRANTS + " WHERE g.region = ? ORDER BY g.seq", (region,))
    return [_grant(r) for r in rows]


async def grant(db: Database, digest: str) -> GrantRow | None:
    row = await db.fetchone(_GRANTS + " WHERE g.digest = ?", (digest,))
    return None if row is None else _grant(row)


async def grant_tx(tx: Tx, digest: str) -> GrantRow | None:
    row = await tx.fetchone(_GRANTS + " WHERE g.digest = ?", (digest,))
    return None if row is None else _grant(row)


async def grants_for(db: Database, region: str, facilitator: str) -> list[GrantRow]:
    """``region``'s grants to ``facilitator`` not known to be revoked, newest first."""
    rows = await db.fetchall(
        _GRANTS + " WHERE g.region = ? AND g.facilitator = ? AND r.seq IS NULL ORDER BY g.seq DESC",
        (region, facilitator),
    )
    return [_grant(r) for r in rows]


async def own_entries(tx: Tx, region: str) -> list[dict[str, Any]]:
    """This region's own grant and revocation entries, as signed (for the shared rule)."""
    rows = await tx.fetchall(
        "SELECT entry FROM facil_grants WHERE region = ?"
        " UNION ALL SELECT entry FROM facil_revokes WHERE region = ?",
        (region, region),
    )
    return [msgspec.json.decode(r["entry"]) for r in rows]


# --- requests -------------------------------------------------------------------------


async def put_request(
    tx: Tx,
    *,
    digest: str,
    entry: dict[str, Any],
    region: str,
    grant: str,
    action: str,
    outcome: str,
    object_id: str | None,
    now: float,
) -> None:
    """Record a request once: a second carrying out of one digest fails the transaction
    (primary key), so a request is carried out at most once even across processes."""
    await tx.execute(
        "INSERT INTO facil_requests (digest, actor, seq, region, grant_digest, action,"
        " outcome, object_id, entry, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            digest,
            entry["actor"],
            entry["seq"],
            region,
            grant,
            action,
            outcome,
            object_id,
            msgspec.json.encode(entry),
            now,
        ),
    )


async def request(db: Database, digest: str) -> RequestRow | None:
    row = await db.fetchone(_REQUESTS + " WHERE q.digest = ?", (digest,))
    return None if row is None else _request(row)


async def requests(db: Database) -> list[RequestRow]:
    rows = await db.fetchall(_REQUESTS + " ORDER BY q.at, q.digest")
    return [_request(r) for r in rows]


async def proposal_requested_by(db: Database, object_id: str, actor: str) -> RequestRow | None:
    """The carried `propose` request of ``actor`` that opened the Question ``object_id``."""
    row = await db.fetchone(
        _REQUESTS + " WHERE q.object_id = ? AND q.actor = ? AND q.action = 'propose'"
        " AND q.outcome = 'carried'",
        (object_id, actor),
    )
    return None if row is None else _request(row)


# --- refusals (rows of node/regional_store.py's and the inbox's logs) --------------------


async def refusals(db: Database) -> list[dict[str, Any]]:
    """Facilitation entries refused after verification (regional rejection log) and at
    the inbox (bad or missing proof), oldest first."""
    marks = ", ".join("?" * len(ENTRY_TYPES))
    rows = await db.fetchall(
        "SELECT actor, seq, type, code, reason, received_at AS at FROM regional_rejected"
        f" WHERE type IN ({marks})"
        " UNION ALL SELECT actor, seq, type, code, reason, at FROM inbox_refusals"
        f" WHERE type IN ({marks}) ORDER BY at",
        (*ENTRY_TYPES, *ENTRY_TYPES),
    )
    return [
        {
            "actor": r["actor"],
            "seq": r["seq"],
            "type": r["type"],
            "code": r["code"],
            "reason": r["reason"],
        }
        for r in rows
    ]
