"""SQL of regional votes (node/regional.py): questions, tallies, decisions, rejections
and the small outbox that turns a regional chain entry into deliveries.

Registered as the node's ``regional`` migration component. Signed entries are kept
verbatim (JSON bytes) beside the few columns the queries need; everything a node
decides is recomputed from those entries, never from the columns alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from federation.incoming import EntryRefusal
from node.storage import Database, Row, Tx

REGIONAL_MIGRATIONS: tuple[str, ...] = (
    # 1: regional questions held here (authored or adopted), tallies, region decisions,
    # rejected entries with the reason, and entries waiting for their recipients
    """
    CREATE TABLE regional_questions (
        object_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        digest TEXT NOT NULL,
        entry BLOB NOT NULL,
        due_ts INTEGER,
        decision_seq INTEGER
    );
    CREATE TABLE regional_tallies (
        proposal TEXT NOT NULL,
        chapter TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        entry BLOB NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (proposal, chapter)
    );
    CREATE TABLE regional_decisions (
        proposal TEXT NOT NULL,
        region TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        entry BLOB NOT NULL,
        received_at REAL NOT NULL,
        PRIMARY KEY (proposal, digest)
    );
    CREATE TABLE regional_rejected (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        proposal TEXT,
        actor TEXT NOT NULL,
        seq INTEGER,
        digest TEXT NOT NULL,
        type TEXT NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        received_at REAL NOT NULL,
        UNIQUE (actor, seq, digest, code)
    );
    CREATE INDEX regional_rejected_by_proposal ON regional_rejected (proposal, id);
    CREATE TABLE regional_outbox (
        seq INTEGER NOT NULL,
        target TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (seq, target)
    )
    """,
    # 2: the inbox's refusal log: metadata of chain entries the inbox refused (bad or
    # missing proof), never their bodies, kept to the newest REFUSAL_LOG_ROWS rows
    """
    CREATE TABLE inbox_refusals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        seq INTEGER,
        type TEXT NOT NULL,
        proposal TEXT,
        code TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX inbox_refusals_by_proposal ON inbox_refusals (proposal, id)
    """,
    # 3: nested regions (node/nested.py): the members of this node's level of an upper
    # region's proposal (JSON list), where a signed Level entry sets them; NULL: the
    # Question's own list
    """
    ALTER TABLE regional_questions ADD COLUMN level BLOB
    """,
)

# A flood of refused entries costs at most this many rows: the oldest go first.
REFUSAL_LOG_ROWS = 1000


@dataclass(frozen=True)
class Question:
    object_id: str
    region: str
    digest: str
    entry: dict[str, Any]
    due_ts: int | None
    decision_seq: int | None
    # a lower region's level (node/nested.py): its chapters vote on an upper region's
    # Question, and `region` is the lower region that decides at that level
    level: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HeldEntry:
    """A verified tally or region decision held for a proposal."""

    actor: str
    seq: int
    digest: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    proposal: str | None
    actor: str
    seq: int | None
    digest: str
    type: str
    code: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "seq": self.seq,
            "type": self.type,
            "code": self.code,
            "reason": self.reason,
        }


def _question(row: Row) -> Question:
    return Question(
        object_id=row["object_id"],
        region=row["region"],
        digest=row["digest"],
        entry=msgspec.json.decode(row["entry"]),
        due_ts=row["due_ts"],
        decision_seq=row["decision_seq"],
        level=None if row["level"] is None else tuple(msgspec.json.decode(row["level"])),
    )


# --- questions -------------------------------------------------------------------------


async def put_question(tx: Tx, q: Question) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO regional_questions (object_id, region, digest, entry, due_ts,"
        " decision_seq, level) VALUES (?, ?, ?, ?, ?, NULL, ?)",
        (
            q.object_id,
            q.region,
            q.digest,
            msgspec.json.encode(q.entry),
            q.due_ts,
            None if q.level is None else msgspec.json.encode(list(q.level)),
        ),
    )


async def question(db: Database, object_id: str) -> Question | None:
    row = await db.fetchone("SELECT * FROM regional_questions WHERE object_id = ?", (object_id,))
    return None if row is None else _question(row)


async def question_tx(tx: Tx, object_id: str) -> Question | None:
    row = await tx.fetchone("SELECT * FROM regional_questions WHERE object_id = ?", (object_id,))
    return None if row is None else _question(row)


async def questions(db: Database) -> list[Question]:
    rows = await db.fetchall("SELECT * FROM regional_questions ORDER BY object_id")
    return [_question(row) for row in rows]


async def set_decision_seq(tx: Tx, object_id: str, seq: int) -> None:
    await tx.execute(
        "UPDATE regional_questions SET decision_seq = ? WHERE object_id = ?", (seq, object_id)
    )


# --- tallies and decisions ---------------------------------------------------------------


async def put_tally(tx: Tx, proposal: str, held: HeldEntry, now: float) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO regional_tallies"
        " (proposal, chapter, seq, digest, entry, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (proposal, held.actor, held.seq, held.digest, msgspec.json.encode(held.entry), now),
    )


async def tally_of(tx: Tx, proposal: str, chapter: str) -> HeldEntry | None:
    row = await tx.fetchone(
        "SELECT chapter, seq, digest, entry FROM regional_tallies"
        " WHERE proposal = ? AND chapter = ?",
        (proposal, chapter),
    )
    if row is None:
        return None
    return HeldEntry(row["chapter"], row["seq"], row["digest"], msgspec.json.decode(row["entry"]))


async def tallies(db: Database, proposal: str) -> list[HeldEntry]:
    rows = await db.fetchall(
        "SELECT chapter, seq, digest, entry FROM regional_tallies WHERE proposal = ?"
        " ORDER BY chapter",
        (proposal,),
    )
    return [
        HeldEntry(r["chapter"], r["seq"], r["digest"], msgspec.json.decode(r["entry"]))
        for r in rows
    ]


async def put_decision(tx: Tx, proposal: str, held: HeldEntry, now: float) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO regional_decisions"
        " (proposal, region, seq, digest, entry, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (proposal, held.actor, held.seq, held.digest, msgspec.json.encode(held.entry), now),
    )


async def decisions(db: Database, proposal: str) -> list[HeldEntry]:
    rows = await db.fetchall(
        "SELECT region, seq, digest, entry FROM regional_decisions WHERE proposal = ?"
        " ORDER BY seq, digest",
        (proposal,),
    )
    return [
        HeldEntry(r["region"], r["seq"], r["digest"], msgspec.json.decode(r["entry"])) for r in rows
    ]


# --- rejections -------------------------------------------------------------------------


async def put_rejection(tx: Tx, r: Rejection, now: float) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO regional_rejected"
        " (proposal, actor, seq, digest, type, code, reason, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (r.proposal, r.actor, r.seq, r.digest, r.type, r.code, r.reason, now),
    )


async def rejections(db: Database, proposal: str) -> list[Rejection]:
    rows = await db.fetchall(
        "SELECT proposal, actor, seq, digest, type, code, reason FROM regional_rejected"
        " WHERE proposal = ? ORDER BY id",
        (proposal,),
    )
    return [
        Rejection(
            r["proposal"], r["actor"], r["seq"], r["digest"], r["type"], r["code"], r["reason"]
        )
        for r in rows
    ]


# --- the inbox's refusal log -----------------------------------------------------------

# The inbox's refusal codes as every view names them: a proof that does not verify, or
# one by a key not valid at that seq (e.g. retired), is a forgery.
_SHOWN_CODES = {"bad_proof": "forged", "unknown_key": "forged"}


def shown_code(code: str) -> str:
    """A refusal code as pages and the API show it (`forged` for a failed proof)."""
    return _SHOWN_CODES.get(code, code)


async def log_refusal(tx: Tx, r: EntryRefusal, *, keep: int = REFUSAL_LOG_ROWS) -> None:
    """Append one refusal and drop all but the newest ``keep`` rows (ids only grow,
    AUTOINCREMENT never reuses one, so "newest" is "highest id")."""
    rowid = await tx.execute(
        "INSERT INTO inbox_refusals (at, actor, seq, type, proposal, code, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (r.at, r.actor, r.seq, r.type, r.proposal, r.code, r.reason),
    )
    await tx.execute("DELETE FROM inbox_refusals WHERE id <= ?", (rowid - keep,))


async def refusals(db: Database, proposal: str) -> list[EntryRefusal]:
    """The logged refusals of entries naming ``proposal``, oldest first."""
    rows = await db.fetchall(
        "SELECT at, actor, seq, type, proposal, code, reason FROM inbox_refusals"
        " WHERE proposal = ? ORDER BY id",
        (proposal,),
    )
    return [
        EntryRefusal(
            r["at"], r["actor"], r["seq"], r["type"], r["proposal"], r["code"], r["reason"]
        )
        for r in rows
    ]


async def refusal_count(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) AS n FROM inbox_refusals")
    return int(row["n"]) if row is not None else 0


# --- outbox -----------------------------------------------------------------------------


async def queue_targets(tx: Tx, seq: int, targets: list[str]) -> None:
    await tx.executemany(
        "INSERT OR IGNORE INTO regional_outbox (seq, target) VALUES (?, ?)",
        [(seq, t) for t in targets],
    )


async def due_targets(db: Database, now: float) -> list[tuple[int, str, int]]:
    rows = await db.fetchall(
        "SELECT seq, target, attempts FROM regional_outbox WHERE next_try <= ?"
        " ORDER BY seq, target LIMIT 256",
        (now,),
    )
    return [(int(r["seq"]), str(r["target"]), int(r["attempts"])) for r in rows]


async def done_targets(tx: Tx, seq: int, targets: list[str]) -> None:
    await tx.executemany(
        "DELETE FROM regional_outbox WHERE seq = ? AND target = ?", [(seq, t) for t in targets]
    )


async def retry_target(tx: Tx, seq: int, target: str, attempts: int, next_try: float) -> None:
    await tx.execute(
        "UPDATE regional_outbox SET attempts = ?, next_try = ? WHERE seq = ? AND target = ?",
        (attempts, next_try, seq, target),
    )


# --- what regional.py reads from other components' tables ---------------------------------


async def accepted_followers(tx: Tx) -> list[str]:
    rows = await tx.fetchall(
        "SELECT actor_id FROM fed_follower WHERE state = 'accepted' ORDER BY actor_id"
    )
    return [str(r["actor_id"]) for r in rows]


async def is_follower(db: Database, actor: str) -> bool:
    row = await db.fetchone(
        "SELECT 1 FROM fed_follower WHERE actor_id = ? AND state = 'accepted'", (actor,)
    )
    return row is not None


async def followed_regions(db: Database) -> list[str]:
    rows = await db.fetchall(
        "SELECT target FROM fed_following WHERE state = 'accepted' ORDER BY target"
    )
    return [str(r["target"]) for r in rows]


async def proposal_by_object(db: Database, object_id: str) -> Row | None:
    return await db.fetchone(
        "SELECT id, status, decision, verification, origin FROM proposals WHERE object_id = ?",
        (object_id,),
    )


async def proposal_by_object_tx(tx: Tx, object_id: str) -> Row | None:
    return await tx.fetchone(
        "SELECT id, status, decision, verification, origin FROM proposals WHERE object_id = ?",
        (object_id,),
    )
