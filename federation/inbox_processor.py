"""The inbox's processor: stored activities to their handlers, at least once (§9.3).

Theory of operation. federation/inbox.py stores every verified activity before it
answers 202; this reads them back in arrival order (``fed_incoming`` in state
``received``, due now) and calls the handler registered for their type, from one
table supplied by the node. A handler that raises or hangs past its timeout is
retried with exponential backoff and the activity is marked failed after the last
try; the state change for each outcome is the table :data:`PROCESS_TRANSITIONS`.
Outcomes are written once per batch of up to :data:`BATCH` activities, together with
the read of the next batch. Processing is at least once across crashes (after a kill
the handlers of the batch in hand run again; a clean stop still writes the outcomes of
those that ran), so handlers must be idempotent, e.g. keyed by (actor, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from federation import store
from federation.incoming import (
    FAILED,
    IGNORED,
    PROCESSED,
    RECEIVED,
    PendingIncoming,
    ProcessingMark,
)

log = logging.getLogger(__name__)

BATCH = 64  # activities handled per trip to the database thread


@dataclass(frozen=True, slots=True)
class IncomingActivity:
    """What a handler gets: a stored, verified activity."""

    activity_id: str
    type: str
    actor: str
    activity: dict[str, Any]
    body: bytes
    # The embedded chain entry whose proof was verified, if the object is one.
    entry: dict[str, Any] | None = None


Handler = Callable[[IncomingActivity], Awaitable[None]]


def actor_id(value: object) -> str | None:
    """The id of an activity's ``actor``, given as a string or an embedded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


# Incoming processing as data: (state, handler outcome) -> next state.
PROCESS_TRANSITIONS: Mapping[tuple[str, str], str] = {
    (RECEIVED, "ok"): PROCESSED,
    (RECEIVED, "unhandled"): IGNORED,  # the handler table changed since it was stored
    (RECEIVED, "error"): RECEIVED,  # due again after a backoff
    (RECEIVED, "exhausted"): FAILED,
}


class InboxProcessor:
    """Runs handlers over stored activities; :meth:`wake` when new ones are due."""

    def __init__(
        self,
        db: store.Database,
        handlers: Mapping[str, Handler],
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 8,
        handler_timeout: float = 60.0,
    ) -> None:
        self.db = db
        self._handlers = dict(handlers)
        self._clock = clock
        self._max_attempts = max_attempts
        self._handler_timeout = handler_timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def handles(self, kind: str) -> bool:
        """Whether activities of type ``kind`` have a handler (else they are ignored)."""
        return kind in self._handlers

    def start(self) -> None:
        self._task = asyncio.create_task(self._process_loop(), name="convene-inbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Look for due activities now."""
        self._wake.set()

    async def _process_loop(self) -> None:
        # One trip to the database thread per batch: it writes the previous batch's
        # outcomes and reads the next due rows in one go, so a busy inbox pays one
        # thread hop and one commit per BATCH activities, not per activity.
        marks: list[ProcessingMark] = []
        try:
            while True:
                try:
                    rows, nxt = await self.db.run(_settle_and_fetch, marks, self._clock(), BATCH)
                    marks = []
                    for row in rows:
                        marks.append(await self._process(row))
                    # After a batch, go straight back: its outcomes are written by the
                    # next trip, which also takes whatever arrived meanwhile.
                    delay = 0.0 if rows else 1.0
                    if not rows and nxt is not None:
                        delay = max(0.01, min(delay, nxt - self._clock()))
                except Exception:
                    log.exception("inbox processor failed; retrying")
                    marks, delay = [], 1.0
                if delay:
                    await store.nap(self._wake, delay)
                self._wake.clear()
        except asyncio.CancelledError:
            # Stopping: the outcomes of handlers that already ran are still written
            # (the thread runs this before it closes the connection), so a restart
            # runs only the one that was interrupted again. Writing a batch twice,
            # if the trip in flight wrote it too, changes nothing.
            if marks:
                self.db.submit(store.record_processing, marks)
            raise

    async def _process(self, row: PendingIncoming) -> ProcessingMark:
        error: str | None = None
        try:
            # Decoded strictly and verified before it was stored; read it back plainly.
            activity = msgspec.json.decode(row.body)
            actor = actor_id(activity.get("actor")) or ""
            obj = activity.get("object")
            entry = obj if isinstance(obj, dict) and "seq" in obj else None
            incoming = IncomingActivity(row.activity_id, row.type, actor, activity, row.body, entry)
            handler = self._handlers.get(row.type)
            if handler is None:
                outcome = "unhandled"
            else:
                # A handler that hangs must not stall every activity behind it.
                async with asyncio.timeout(self._handler_timeout):
                    await handler(incoming)
                outcome = "ok"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("handler for %s %s failed: %s", row.type, row.activity_id, error)
            outcome = "exhausted" if row.attempts + 1 >= self._max_attempts else "error"
        state = PROCESS_TRANSITIONS[(RECEIVED, outcome)]
        due = self._clock() + min(2.0 ** (row.attempts + 1), 3600.0)
        return ProcessingMark(row.activity_id, state, row.attempts + 1, due, error)


def _settle_and_fetch(
    conn: sqlite3.Connection, marks: list[ProcessingMark], now: float, limit: int
) -> tuple[list[PendingIncoming], float | None]:
    """Write a batch's outcomes, then read the next due rows; when there are none,
    also when the next retry is due (None: no activity waits)."""
    if marks:
        store.record_processing(conn, marks)
    rows = store.due_incoming(conn, now, [], limit)
    return rows, None if rows else store.next_incoming_due_at(conn)
