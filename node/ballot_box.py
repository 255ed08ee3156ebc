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

One member's bad ballot never fails another's. Two copies of one member-signed ballot
sent at once both pass the API's counter check (each reads the last stored counter
before either commits), so the batch re-checks counters inside the transaction, in
arrival order, and answers the later copy 409 `replayed_ballot` while the rest commit.
Should any other constraint still fail a batch, its ballots are retried one per
transaction, so the failure reaches only the ballot that caused it.
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
        try:
            return await self._commit_batch(batch)
        except sqlite3.IntegrityError as exc:
            if len(batch) == 1:
                raise _integrity_refusal(batch[0], exc) from exc
            log.warning("ballot batch of %d hit %s; committing one by one", len(batch), exc)
        accepted: list[PendingBallot] = []
        for pending in batch:  # the batch rolled back whole: nothing of it is stored
            try:
                accepted += await self._commit([pending])
            except NodeError as exc:
                if not pending.done.done():
                    pending.done.set_exception(exc)
        return accepted

    async def _commit_batch(self, batch: list[PendingBallot]) -> list[PendingBallot]:
        def store(conn: sqlite3.Connection) -> list[str]:
            replayed = _replays(conn, batch)
            live = [p for p in batch if id(p) not in replayed]
            stored = iter(
                proposal_store.store_ballot_batch(
                    conn, [p.proposal_id for p in live], [p.row() for p in live]
                )
            )
            outcome = ["replayed" if id(p) in replayed else next(stored) for p in batch]
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


def _replays(conn: sqlite3.Connection, batch: list[PendingBallot]) -> set[int]:
    """The `id()`s of signed ballots whose counter is not above every counter their
    member already used on that proposal: stored ones, or earlier ones in this batch."""
    signed = [p for p in batch if p.member_signature is not None]
    if not signed:
        return set()
    last = member_key_store.last_counters(conn, {(p.proposal_id, p.member_id) for p in signed})
    replayed: set[int] = set()
    for pending in signed:
        assert pending.member_signature is not None
        counter, pair = pending.member_signature[0], (pending.proposal_id, pending.member_id)
        before = last.get(pair)
        if before is not None and counter <= before:
            replayed.add(id(pending))
        else:
            last[pair] = counter
    return replayed


def _integrity_refusal(pending: PendingBallot, exc: sqlite3.IntegrityError) -> NodeError:
    return Conflict(
        f"the ballot of member {pending.member_id} on proposal {pending.proposal_id} "
        f"conflicts with one already stored ({exc}); it was not stored"
    )


def _refusal(pending: PendingBallot, why: str) -> NodeError:
    if why == "replayed":
        assert pending.member_signature is not None
        return Conflict(
            f"member {pending.member_id} already sent a signed ballot with counter "
            f"{pending.member_signature[0]} or above on proposal {pending.proposal_id}; "
            "this copy is a replay (use a larger counter)",
            code="replayed_ballot",
        )
    if why == "removed":
        return Unauthorized(
            f"member {pending.member_id} was removed; their ballot on proposal "
            f"{pending.proposal_id} is refused"
        )
    return Conflict(
        f"proposal {pending.proposal_id} is no longer open; "
        "ballots are accepted only while it is open"
    )
