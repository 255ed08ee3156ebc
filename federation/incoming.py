"""Received activities and the chain entries they carry: ``fed_incoming``,
``fed_entry`` and ``fed_equivocation`` (§9.3).

``fed_incoming`` holds every accepted incoming activity verbatim, keyed by its id: it
is the dedupe table and the inbox's work queue (store first, then act). ``fed_entry``
keys signed chain entries by (actor, seq, digest), so two different entries for one
(actor, seq) are both kept, and ``fed_equivocation`` records the (actor, seq) pairs for
which that happened. The inbox's hot paths are plain ``sqlite3`` functions run on
:class:`federation.store.Database`'s thread; the node reads the evidence through its
aiosqlite connection (:func:`equivocations`, :func:`is_equivocating`). The tables are
created by federation/store.py's schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiosqlite
import msgspec

# Incoming states: stored and waiting for its handler, handled, no handler for its
# type (accepted and ignored, as ActivityPub expects), handler kept failing,
# or an equivocating entry kept only as evidence.
RECEIVED = "received"
PROCESSED = "processed"
IGNORED = "ignored"
FAILED = "failed"
EVIDENCE = "evidence"


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """A chain entry carried by an incoming activity, with its digest (§5)."""

    actor: str
    seq: int
    digest: str
    body: bytes


@dataclass(frozen=True, slots=True)
class IncomingRecord:
    activity_id: str
    body_digest: str
    actor: str
    type: str
    body: bytes
    state: str
    entry: EntryRecord | None = None


@dataclass(frozen=True, slots=True)
class EntryRefusal:
    """Metadata of a chain entry the inbox refused (§9.3), never its body: what the
    node's bounded rejection log keeps. ``actor``, ``seq``, ``type`` and ``proposal``
    are as the entry claims them (unverified, hence only metadata), cut to
    :data:`REFUSAL_FIELD_MAX` characters so one log row stays small."""

    at: float
    actor: str
    seq: int | None
    type: str
    proposal: str | None
    code: str
    reason: str


REFUSAL_FIELD_MAX = 512


# What an entry is about, by its type: the field that names it (docs/protocol.md §9.3).
_SUBJECT_FIELD = {"Question": "id", "Attendance": "event"}


def entry_subject(entry: Mapping[str, object]) -> str | None:
    """What a refused entry is shown under: the id of a Question, the ``event`` of an
    Attendance count, else the ``proposal`` it names (a Tally, Decision, Level)."""
    value = entry.get(_SUBJECT_FIELD.get(str(entry.get("type")), "proposal"))
    return value if isinstance(value, str) else None


def entry_refusal(entry: dict[str, object], *, at: float, code: str, reason: str) -> EntryRefusal:
    """The refusal record of an entry as it claims itself; its subject
    (``entry_subject``) is kept in ``proposal``."""

    def text(value: object) -> str | None:
        return value[:REFUSAL_FIELD_MAX] if isinstance(value, str) else None

    seq = entry.get("seq")
    kind = text(entry.get("type")) or "?"
    proposal = text(entry_subject(entry))
    return EntryRefusal(
        at=at,
        actor=text(entry.get("actor")) or "?",
        seq=seq if type(seq) is int and 0 <= seq < 2**63 else None,  # fits SQLite
        type=kind,
        proposal=proposal,
        code=code,
        reason=reason[: REFUSAL_FIELD_MAX * 2],
    )


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What storing one incoming activity did: ``new``, ``duplicate`` or ``conflict``.

    For a conflict ``stored_body`` is the body already held under that id, so the
    caller can decide whether the two are the same JSON serialized differently.
    """

    status: str
    equivocation: bool = False
    stored_body: bytes | None = None


def store_incoming(
    conn: sqlite3.Connection, batch: Sequence[IncomingRecord], now: float
) -> list[StoreOutcome]:
    """Store a batch of verified activities in one transaction (group commit).

    A known id with the same body digest, or whose entry is already held as
    equivocation evidence, is a duplicate (nothing written); a known id with another
    digest is a conflict, of which nothing is written unless its
    entry proves an equivocation (a bare entry's id is the entry's own, so two
    entries for one seq share it): that entry is kept, ``equivocation`` set. A chain
    entry whose (actor, seq) already holds a different digest is stored too, marked
    as equivocation evidence, and its activity is kept in state ``evidence``.

    The common batch, every id new and no entry meeting another digest of its
    (actor, seq), is written by one SQL statement that is its own transaction
    (:func:`_store_all_new`); any other batch is stored one record at a time.
    """
    # (Autocommit would first commit a transaction the caller holds open.)
    if len(batch) <= _ONE_STATEMENT and not conn.in_transaction:
        out = _store_all_new(conn, batch, now)
        if out is not None:
            return out
    try:
        out = _store_each(conn, batch, now)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return out


# Why one statement: this runs on a thread beside a busy event loop, and every SQLite
# call there ends in a wait for the GIL (and, on a loaded machine, for a CPU), so a
# commit's latency grows with its number of statements, not rows. One INSERT into a
# temporary view, run in autocommit mode, is one call: the view's INSTEAD OF trigger
# writes each row (in order, each seeing the rows before it) and aborts the whole
# statement, so nothing of it is kept, as soon as a row is not plainly new.
_NOT_NEW = "convene: batch is not all new"
_BATCH_SQL = f"""
CREATE TEMP VIEW IF NOT EXISTS convene_inbox_batch AS SELECT
    NULL AS activity_id, NULL AS body_digest, NULL AS actor, NULL AS type, NULL AS body,
    NULL AS state, NULL AS at, NULL AS e_actor, NULL AS e_seq, NULL AS e_digest,
    NULL AS e_body;
CREATE TEMP TRIGGER IF NOT EXISTS convene_inbox_batch_row
INSTEAD OF INSERT ON convene_inbox_batch
BEGIN
    SELECT RAISE(ABORT, '{_NOT_NEW}')
    WHERE EXISTS (SELECT 1 FROM fed_incoming WHERE activity_id = NEW.activity_id)
       OR EXISTS (SELECT 1 FROM fed_entry WHERE actor = NEW.e_actor
                  AND seq = NEW.e_seq AND digest != NEW.e_digest);
    INSERT INTO fed_incoming (activity_id, body_digest, actor, type, body, state,
                              attempts, next_attempt_at, received_at)
    VALUES (NEW.activity_id, NEW.body_digest, NEW.actor, NEW.type, NEW.body, NEW.state,
            0, NEW.at, NEW.at);
    INSERT OR IGNORE INTO fed_entry (actor, seq, digest, body, activity_id, received_at)
    SELECT NEW.e_actor, NEW.e_seq, NEW.e_digest, NEW.e_body, NEW.activity_id, NEW.at
    WHERE NEW.e_actor IS NOT NULL;
END;
"""
# 11 parameters a row stays far below SQLite's limit of 32,766 per statement; a
# larger batch (the inbox's are at most 512) is simply stored one record at a time.
_ONE_STATEMENT = 1024


def _store_all_new(
    conn: sqlite3.Connection, batch: Sequence[IncomingRecord], now: float
) -> list[StoreOutcome] | None:
    """Store the batch as new records in one statement; None, with nothing written,
    when one of them is not (a known or repeated id, or an entry whose (actor, seq)
    holds another digest)."""
    if not batch:
        return []
    values: list[object] = []
    for r in batch:
        e = r.entry
        values += (r.activity_id, r.body_digest, r.actor, r.type, r.body, r.state, now)
        values += (None, None, None, None) if e is None else (e.actor, e.seq, e.digest, e.body)
    sql = "INSERT INTO convene_inbox_batch VALUES " + ",".join(
        ["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(batch)
    )
    level = conn.isolation_level
    conn.isolation_level = None  # autocommit: the statement is the transaction
    try:
        try:
            conn.execute(sql, values)
        except sqlite3.OperationalError as exc:
            if "convene_inbox_batch" not in str(exc):
                raise
            conn.executescript(_BATCH_SQL)  # once per connection
            conn.execute(sql, values)
    except sqlite3.IntegrityError as exc:
        if str(exc) != _NOT_NEW:
            raise
        return None
    finally:
        conn.isolation_level = level
    return [StoreOutcome("new") for _ in batch]


def _store_each(
    conn: sqlite3.Connection, batch: Sequence[IncomingRecord], now: float
) -> list[StoreOutcome]:
    out: list[StoreOutcome] = []
    for rec in batch:
        # The common case (a new id) costs one statement; only a known id reads back.
        inserted = conn.execute(
            "INSERT OR IGNORE INTO fed_incoming (activity_id, body_digest, actor, type,"
            " body, state, attempts, next_attempt_at, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (
                rec.activity_id,
                rec.body_digest,
                rec.actor,
                rec.type,
                rec.body,
                rec.state,
                now,
                now,
            ),
        ).rowcount
        if not inserted:
            row = conn.execute(
                "SELECT body_digest, body FROM fed_incoming WHERE activity_id = ?",
                (rec.activity_id,),
            ).fetchone()
            if row[0] == rec.body_digest or (
                rec.entry is not None and _is_evidence(conn, rec.entry)
            ):
                out.append(StoreOutcome("duplicate", False, row[1]))
                continue
            # A bare entry's activity id is the entry's id, so a second signed
            # entry for one seq arrives under a known id: it is kept if it proves
            # an equivocation, and nothing else of a replay is stored.
            caught = rec.entry is not None and _keep_evidence(conn, rec, now)
            out.append(StoreOutcome("conflict", caught, row[1]))
            continue
        equivocation = False
        e = rec.entry
        if e is not None and _insert_entry(conn, e, rec.activity_id, now):
            equivocation = _other_digest(conn, e)
            if equivocation:
                _mark_equivocation(conn, e, now)
                conn.execute(
                    "UPDATE fed_incoming SET state = ? WHERE activity_id = ?",
                    (EVIDENCE, rec.activity_id),
                )
        out.append(StoreOutcome("new", equivocation))
    return out


def _insert_entry(conn: sqlite3.Connection, e: EntryRecord, activity_id: str, now: float) -> bool:
    """Keep a verified entry once per (actor, seq, digest); whether it was new."""
    return bool(
        conn.execute(
            "INSERT OR IGNORE INTO fed_entry (actor, seq, digest, body, activity_id, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (e.actor, e.seq, e.digest, e.body, activity_id, now),
        ).rowcount
    )


def _other_digest(conn: sqlite3.Connection, e: EntryRecord) -> bool:
    found = conn.execute(
        "SELECT 1 FROM fed_entry WHERE actor = ? AND seq = ? AND digest != ? LIMIT 1",
        (e.actor, e.seq, e.digest),
    ).fetchone()
    return found is not None


def _mark_equivocation(conn: sqlite3.Connection, e: EntryRecord, now: float) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO fed_equivocation (actor, seq, detected_at) VALUES (?, ?, ?)",
        (e.actor, e.seq, now),
    )


def _is_evidence(conn: sqlite3.Connection, e: EntryRecord) -> bool:
    """Whether this very entry is already held as one side of an equivocation."""
    found = conn.execute(
        "SELECT 1 FROM fed_entry e JOIN fed_equivocation q ON q.actor = e.actor"
        " AND q.seq = e.seq WHERE e.actor = ? AND e.seq = ? AND e.digest = ?",
        (e.actor, e.seq, e.digest),
    ).fetchone()
    return found is not None


def _keep_evidence(conn: sqlite3.Connection, rec: IncomingRecord, now: float) -> bool:
    """For an activity whose id is taken: store its entry only when another digest is
    held for that (actor, seq) and this one is not yet; whether it was kept."""
    e = rec.entry
    assert e is not None
    if not _other_digest(conn, e) or not _insert_entry(conn, e, rec.activity_id, now):
        return False
    _mark_equivocation(conn, e, now)
    return True


@dataclass(frozen=True, slots=True)
class PendingIncoming:
    activity_id: str
    type: str
    body: bytes
    attempts: int


def due_incoming(
    conn: sqlite3.Connection, now: float, exclude_ids: Sequence[str], limit: int
) -> list[PendingIncoming]:
    """The activities waiting for their handler and due by ``now``, oldest first."""
    marks = ",".join("?" * len(exclude_ids))
    skip = f" AND activity_id NOT IN ({marks})" if exclude_ids else ""
    # One result row for the whole batch (bodies hex-encoded, so every byte comes back
    # as stored): each row read is a wait for the GIL beside the busy event loop. The
    # aggregate's order is not SQL's promise, so the rows are sorted again here.
    (packed,) = conn.execute(
        "SELECT json_group_array(json_array(next_attempt_at, rowid, activity_id, type,"
        " hex(body), attempts)) FROM (SELECT rowid, * FROM fed_incoming"
        f" WHERE state = 'received' AND next_attempt_at <= ?{skip}"
        " ORDER BY next_attempt_at, rowid LIMIT ?)",
        (now, *exclude_ids, limit),
    ).fetchone()
    rows = msgspec.json.decode(packed, type=list[tuple[float, int, str, str, str, int]])
    rows.sort(key=lambda r: (r[0], r[1]))
    return [PendingIncoming(a, t, bytes.fromhex(body), n) for _, _, a, t, body, n in rows]


def next_incoming_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM fed_incoming WHERE state = 'received'"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


@dataclass(frozen=True, slots=True)
class ProcessingMark:
    """The outcome of one handler run: the activity's next state, its attempt count,
    when it is due again (if still ``received``) and the error, if any."""

    activity_id: str
    state: str
    attempts: int
    next_attempt_at: float
    error: str | None


_CHUNK = 1024  # marks per UPDATE: 5 parameters each, far below SQLite's 32,766


def record_processing(conn: sqlite3.Connection, marks: Sequence[ProcessingMark]) -> None:
    """Write the outcomes of a batch of handler runs in one transaction."""
    # Committed without its own fsync (the next FULL commit carries it to disk): a
    # mark lost to a power cut means one more run of an idempotent handler, the same
    # as a crash just before this commit, and no acknowledged activity is lost.
    level = conn.isolation_level
    if len(marks) <= _CHUNK and not conn.in_transaction:
        # One statement, its own transaction: no BEGIN or COMMIT calls (the GIL again).
        conn.isolation_level = None
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        for i in range(0, len(marks), _CHUNK):
            part = marks[i : i + _CHUNK]
            values: list[object] = []
            for m in part:
                values += (m.activity_id, m.state, m.attempts, m.next_attempt_at, m.error)
            conn.execute(
                "UPDATE fed_incoming SET state = v.column2, attempts = v.column3,"
                " next_attempt_at = v.column4, last_error = v.column5 FROM (VALUES "
                + ",".join(["(?, ?, ?, ?, ?)"] * len(part))
                + ") AS v WHERE fed_incoming.activity_id = v.column1",
                values,
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.execute("PRAGMA synchronous=FULL")
        conn.isolation_level = level


# --- equivocation evidence --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two or more different signed entries one actor published with the same seq."""

    actor: str
    seq: int
    detected_at: float
    entries: tuple[bytes, ...]


async def equivocations(conn: aiosqlite.Connection, actor: str | None = None) -> list[Equivocation]:
    """The evidence of every equivocation seen (optionally of one actor), oldest first."""
    where, args = ("WHERE q.actor = ?", (actor,)) if actor is not None else ("", ())
    async with conn.execute(
        "SELECT q.actor, q.seq, q.detected_at, e.body FROM fed_equivocation q"
        " JOIN fed_entry e ON e.actor = q.actor AND e.seq = q.seq"
        f" {where} ORDER BY q.detected_at, q.actor, q.seq, e.received_at, e.digest",
        args,
    ) as cur:
        rows = list(await cur.fetchall())
    grouped: dict[tuple[str, int], tuple[float, list[bytes]]] = {}
    for a, s, at, body in rows:
        grouped.setdefault((a, s), (at, []))[1].append(bytes(body))
    return [Equivocation(a, s, at, tuple(bodies)) for (a, s), (at, bodies) in grouped.items()]


async def is_equivocating(conn: aiosqlite.Connection, actor: str) -> bool:
    """Whether ``actor`` has been caught signing two different entries for one seq."""
    async with conn.execute(
        "SELECT 1 FROM fed_equivocation WHERE actor = ? LIMIT 1", (actor,)
    ) as cur:
        return await cur.fetchone() is not None
