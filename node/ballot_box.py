"""Durable group commit of ballots.

Theory of operation. A ballot is acknowledged (201 with its receipt) only after the
transaction holding it is committed with `synchronous=FULL`, so an acknowledged ballot
survives kill -9. An fsync per ballot would cap a small machine at a few hundred
ballots a second; instead every ballot waiting while one commit is in flight joins
the next transaction (group commit, as databases do for their logs). Each batch
re-reads the status of its proposals and its members inside the write transaction, so
a ballot racing a close is either in the tally or refused with 409, never silently
dropped, and a member removed since their token was checked (the API keeps a small
token cache for voters, `Members.voter`) is refused with 401. A batch is two
statements whatever its size (proposal_store.store_ballot_batch): the writer thread
wins the GIL back from a busy event loop once per SQLite call, so fewer calls is a
shorter commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass, field

from node import member_key_store, proposal_store
from node.errors import Conflict, NodeError, Unauthorized
from node.storage import Database

log = logging.getLogger("convene.ballots")


@dataclass
class PendingBallot:
    proposal_id: str
    member_id: str
    receipt: str
    ballot_json: str
    nonce_hex: str | None
    cast_at: str
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # (counter, key, signature) of a member-signed ballot; None for a custodial one
    member_signature: tuple[int, str, str] | None = None

    def signature_row(self) -> tuple[str, str, str, int, str, str] | None:
        if self.member_signature is None:
            return None
        counter, key, signature = self.member_signature
        return (self.receipt, self.proposal_id, self.member_id, counter, key, signature)

    def row(self) -> tuple[str, str, str, str, str | None, str]:
        return (
            self.proposal_id,
            self.member_id,
            self.receipt,
            self.ballot_json,
            self.nonce_hex,
            self.cast_at,
        )


class BallotBox:
    def __init__(self, db: Database, *, max_batch: int) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: asyncio.Queue[PendingBallot] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ballot-box")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(NodeError("the node is shutting down", status=503))

    async def submit(self, pending: PendingBallot) -> None:
        """Queue a ballot and return once it is committed (or raise why it was not)."""
        if self._task is None or self._task.done():
            raise NodeError("the ballot box is not running", code="unavailable", status=503)
        self._queue.put_nowait(pending)
        await asyncio.shield(pending.done)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                accepted = await self._commit(batch)
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(
                            NodeError("the node is shutting down", status=503)
                        )
                raise
            except Exception as exc:  # the batch rolled back: each waiter learns why
                log.exception("ballot batch of %d failed", len(batch))
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                continue
            for pending in accepted:
                if not pending.done.done():
                    pending.done.set_result(None)

    async def _commit(self, batch: list[PendingBallot]) -> list[PendingBallot]:
        rows = [p.row() for p in batch]
        ids = [p.proposal_id for p in batch]

        def store(conn: sqlite3.Connection) -> list[str]:
            outcome = proposal_store.store_ballot_batch(conn, ids, rows)
            # a signed ballot and its signature commit together, or neither does
            signed = [
                p.signature_row()
                for p, said in zip(batch, outcome, strict=True)
                if said == "stored"
            ]
            member_key_store.insert_signatures(conn, [r for r in signed if r is not None])
            return outcome

        outcome = await self._db.write_now(store)
        accepted: list[PendingBallot] = []
        for pending, said in zip(batch, outcome, strict=True):
            if said == "stored":
                accepted.append(pending)
            elif not pending.done.done():
                pending.done.set_exception(_refusal(pending, said))
        return accepted


def _refusal(pending: PendingBallot, why: str) -> NodeError:
    if why == "removed":
        return Unauthorized(
            f"member {pending.member_id} was removed; their ballot on proposal "
            f"{pending.proposal_id} is refused"
        )
    return Conflict(
        f"proposal {pending.proposal_id} is no longer open; "
        "ballots are accepted only while it is open"
    )
