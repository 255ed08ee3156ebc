"""The inbox's work queue (federation/incoming.py): what the processor reads back and
marks, in the few-statement forms the hot path uses."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import store
from federation.inbox_processor import InboxProcessor, IncomingActivity
from federation.store import EntryRecord, IncomingRecord, ProcessingMark


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(store.SCHEMA)
    return conn


def _record(n: int, body: bytes, *, entry: bool = False) -> IncomingRecord:
    return IncomingRecord(
        activity_id=f"https://a.test/activities/{n}",
        body_digest=f"digest-{n}",
        actor="https://a.test/actor",
        type="Create",
        body=body,
        state=store.RECEIVED,
        entry=EntryRecord("https://a.test/actor", n, f"d{n}", b"{}") if entry else None,
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(1, 9), st.integers(1, 50))
def test_due_rows_come_back_in_arrival_order_byte_for_byte(
    bodies: list[bytes], batch: int, limit: int
) -> None:
    conn = _conn()
    records = [_record(n, body) for n, body in enumerate(bodies)]
    for i in range(0, len(records), batch):
        # Later batches are stored at later times, as the inbox's group commit does.
        store.store_incoming(conn, records[i : i + batch], float(i))
    due = store.due_incoming(conn, 1e9, [], limit)
    assert [(d.activity_id, d.body, d.attempts) for d in due] == [
        (r.activity_id, r.body, 0) for r in records[:limit]
    ]


def test_nothing_is_due_before_its_time_and_an_empty_queue_reads_empty() -> None:
    conn = _conn()
    assert store.due_incoming(conn, 10.0, [], 64) == []
    store.store_incoming(conn, [_record(1, b"{}")], 5.0)
    assert store.due_incoming(conn, 4.9, [], 64) == []
    assert [d.activity_id for d in store.due_incoming(conn, 5.0, [], 64)] == [
        "https://a.test/activities/1"
    ]


def test_marks_beyond_one_statement_chunk_are_all_written() -> None:
    conn = _conn()
    records = [_record(n, f'{{"n":{n}}}'.encode(), entry=True) for n in range(2100)]
    assert {o.status for o in store.store_incoming(conn, records, 1.0)} == {"new"}
    # Every third fails and is due again later; the rest are done.
    marks = [
        ProcessingMark(
            r.activity_id,
            store.RECEIVED if n % 3 == 0 else store.PROCESSED,
            1,
            100.0 if n % 3 == 0 else 1.0,
            "boom" if n % 3 == 0 else None,
        )
        for n, r in enumerate(records)
    ]
    store.record_processing(conn, marks)
    assert store.due_incoming(conn, 99.0, [], 1000) == []
    again = store.due_incoming(conn, 100.0, [], 1000)
    assert [d.activity_id for d in again] == [r.activity_id for r in records[::3]]
    assert {d.attempts for d in again} == {1}
    errors = conn.execute(
        "SELECT state, COUNT(*), COUNT(last_error) FROM fed_incoming GROUP BY state ORDER BY state"
    ).fetchall()
    assert errors == [(store.PROCESSED, 1400, 0), (store.RECEIVED, 700, 700)]
    # synchronous is back to FULL for the inbox's own commits.
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_a_batch_over_one_chunk_with_a_known_id_falls_back_and_loses_nothing() -> None:
    conn = _conn()
    first = dataclasses.replace(_record(450, b"first"), body_digest="another")
    store.store_incoming(conn, [first], 1.0)
    records = [_record(n, b"x", entry=True) for n in range(600)]
    outcomes = store.store_incoming(conn, records, 2.0)
    assert [o.status for o in outcomes].count("new") == 599
    # 450 came before with another body: a conflict, and nothing of it is rewritten.
    assert outcomes[450].status == "conflict" and outcomes[450].stored_body == b"first"
    assert conn.execute("SELECT COUNT(*) FROM fed_incoming").fetchone()[0] == 600
    assert conn.execute("SELECT COUNT(*) FROM fed_entry").fetchone()[0] == 599


def test_a_few_marks_are_one_transaction_and_leave_the_connection_as_it_was() -> None:
    conn = _conn()
    store.store_incoming(conn, [_record(1, b"{}"), _record(2, b"{}")], 1.0)
    level = conn.isolation_level
    store.record_processing(
        conn, [ProcessingMark("https://a.test/activities/2", store.FAILED, 8, 1.0, "gave up")]
    )
    assert conn.isolation_level == level and not conn.in_transaction
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert [d.activity_id for d in store.due_incoming(conn, 5.0, [], 64)] == [
        "https://a.test/activities/1"
    ]
    assert conn.execute(
        "SELECT state, attempts, last_error FROM fed_incoming WHERE activity_id LIKE '%/2'"
    ).fetchone() == (store.FAILED, 8, "gave up")


async def test_stopping_mid_batch_keeps_the_outcomes_of_handlers_that_ran(
    tmp_path: Path,
) -> None:
    db = store.Database(tmp_path / "inbox.db")
    await db.open()
    records = [_record(n, b'{"type": "Create"}') for n in range(3)]
    await db.run(store.store_incoming, records, 1.0)
    ran: list[str] = []
    blocked = asyncio.Event()

    async def handler(activity: IncomingActivity) -> None:
        ran.append(activity.activity_id)
        if len(ran) == 2:
            blocked.set()
            await asyncio.Event().wait()  # hangs until the processor is stopped

    processor = InboxProcessor(db, {"Create": handler}, clock=lambda: 10.0)
    processor.start()
    await asyncio.wait_for(blocked.wait(), 10)
    await processor.stop()
    await db.close()

    with sqlite3.connect(tmp_path / "inbox.db") as conn:
        states = conn.execute(
            "SELECT activity_id, state, attempts FROM fed_incoming ORDER BY rowid"
        ).fetchall()
    # The first handler's outcome is written; the interrupted one and the one not
    # reached are due again, and a restart runs them (at least once, never lost).
    assert states == [
        (records[0].activity_id, store.PROCESSED, 1),
        (records[1].activity_id, store.RECEIVED, 0),
        (records[2].activity_id, store.RECEIVED, 0),
    ]


def test_a_caller_s_open_transaction_is_not_committed_early() -> None:
    conn = _conn()
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.execute("INSERT INTO other VALUES (1)")  # the caller's transaction, still open
    unbindable = dataclasses.replace(_record(1, b"{}"), body=object())  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        store.store_incoming(conn, [unbindable], 1.0)
    # The failed store rolled back, the caller's row with it, as before the one-statement
    # path existed: that path must not have committed the caller's transaction first.
    assert conn.execute("SELECT COUNT(*) FROM other").fetchone() == (0,)
    assert conn.execute("SELECT COUNT(*) FROM fed_incoming").fetchone() == (0,)
