"""SQL of the bottom-up agenda (node/agenda_service.py): the signed agenda entries this
node holds, its own and the verified ones of others.

Registered as the node's ``agenda`` migration component. Entries are kept verbatim
(JSON bytes) beside the few columns the queries need; the agenda is always recomputed
from the entries by protocol/agenda.py, never from the columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from node.storage import Database, Tx

AGENDA_MIGRATIONS: tuple[str, ...] = (
    # 1: every held agenda entry (config, submission, sponsorship, close), by digest;
    # `config` is the config's digest (a config row names itself), `item` the item a
    # sponsorship names
    """
    CREATE TABLE agenda_entries (
        digest TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        type TEXT NOT NULL,
        actor TEXT NOT NULL,
        seq INTEGER NOT NULL,
        item TEXT,
        entry BLOB NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX agenda_entries_by_config ON agenda_entries (config, type, actor, seq)
    """,
)

AGENDA_TYPES = ("AgendaConfig", "AgendaSubmission", "AgendaSponsorship", "AgendaClose")


@dataclass(frozen=True)
class Held:
    """A verified agenda entry held here."""

    digest: str
    config: str
    type: str
    actor: str
    seq: int
    item: str | None
    entry: dict[str, Any]


async def put(tx: Tx, held: Held, now: float) -> bool:
    """Hold an entry; False when it was held already (an identical copy)."""
    before = await tx.fetchone("SELECT 1 FROM agenda_entries WHERE digest = ?", (held.digest,))
    if before is not None:
        return False
    await tx.execute(
        "INSERT INTO agenda_entries (digest, config, type, actor, seq, item, entry, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            held.digest,
            held.config,
            held.type,
            held.actor,
            held.seq,
            held.item,
            msgspec.json.encode(held.entry),
            now,
        ),
    )
    return True


def _held(row: Any) -> Held:
    return Held(
        row["digest"],
        row["config"],
        row["type"],
        row["actor"],
        row["seq"],
        row["item"],
        msgspec.json.decode(row["entry"]),
    )


_COLUMNS = "digest, config, type, actor, seq, item, entry"


async def config(db: Database, digest: str) -> Held | None:
    row = await db.fetchone(
        f"SELECT {_COLUMNS} FROM agenda_entries WHERE digest = ? AND type = 'AgendaConfig'",
        (digest,),
    )
    return None if row is None else _held(row)


async def config_tx(tx: Tx, digest: str) -> Held | None:
    row = await tx.fetchone(
        f"SELECT {_COLUMNS} FROM agenda_entries WHERE digest = ? AND type = 'AgendaConfig'",
        (digest,),
    )
    return None if row is None else _held(row)


async def configs(db: Database) -> list[Held]:
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM agenda_entries WHERE type = 'AgendaConfig'"
        " ORDER BY received_at DESC, digest"
    )
    return [_held(r) for r in rows]


async def of_config(db: Database, config_digest: str) -> list[Held]:
    """Every submission, sponsorship and close held for one config, in chain order."""
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM agenda_entries WHERE config = ? AND type != 'AgendaConfig'"
        " ORDER BY actor, seq",
        (config_digest,),
    )
    return [_held(r) for r in rows]


async def entry(db: Database, digest: str) -> Held | None:
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM agenda_entries WHERE digest = ?", (digest,))
    return None if row is None else _held(row)


async def entry_tx(tx: Tx, digest: str) -> Held | None:
    row = await tx.fetchone(f"SELECT {_COLUMNS} FROM agenda_entries WHERE digest = ?", (digest,))
    return None if row is None else _held(row)


# --- what agenda_service reads from the regional component's tables ------------------------


@dataclass(frozen=True)
class Refused:
    """An agenda entry this node did not take, with the reason (metadata only)."""

    actor: str
    seq: int | None
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


_REFUSED_SQL = (
    "SELECT actor, seq, type, code, reason, received_at AS at FROM regional_rejected"
    " WHERE type IN ({marks})"
    " UNION ALL SELECT actor, seq, type, code, reason, at FROM inbox_refusals"
    " WHERE type IN ({marks}) ORDER BY at DESC LIMIT ?"
)


async def refused(db: Database, limit: int = 200) -> list[Refused]:
    """Agenda entries rejected after verification (node/regional.py keeps them with the
    reason) or refused by the inbox (bad or missing proof), newest first."""
    marks = ", ".join("?" * len(AGENDA_TYPES))
    rows = await db.fetchall(
        _REFUSED_SQL.format(marks=marks), (*AGENDA_TYPES, *AGENDA_TYPES, limit)
    )
    return [Refused(r["actor"], r["seq"], r["type"], r["code"], r["reason"]) for r in rows]
