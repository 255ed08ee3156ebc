"""Proposals and ballots on one node: lifecycle, casting, closing and counting.

Theory of operation (ARCHITECTURE "A regional decision", docs/protocol.md §7–8).
A proposal moves draft → open → closed → decided along `TRANSITIONS`, and nothing
else moves it. Opening appends the signed `Question` entry; from then on its
`object_id` (the entry id) names it in receipts and tallies. A ballot is validated
by protocol/ballots.py, gets a 32-byte nonce from the OS, and its receipt commits
the member to it; a member may cast again until close and the last ballot counts.
In a secret vote the nonce is handed back and never stored, so the receipt in the
database and in the tree says nothing about the choice to anyone but the member.
Closing counts and signs in one transaction (node/proposal_tally.py); a regional
proposal then waits for the region's decision (see `record_decision`). The lifecycle
table is node/proposal_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from node import member_key_store, member_keys, proposal_store, proposal_tally
from node.ballot_box import BallotBox, PendingBallot
from node.clock import Clock, parse_rfc3339, rfc3339
from node.errors import BadRequest, Conflict, NotFound
from node.identity import NodeIdentity
from node.ledger import Ledger
from node.members import Member, require_role
from node.proposal_forms import (
    MyBallot,
    NewProposal,
    ProposalView,
    check_question_terms,
    check_terms,
    question_body,
    terms_of_question,
    view_of,
)
from node.proposal_lifecycle import next_status
from node.storage import Database, Row, Tx
from protocol import ballots
from protocol.errors import BallotError

log = logging.getLogger("convene.proposals")

# The proposals' own schema steps, after the node's (append only, never edit a step).
PROPOSAL_MIGRATIONS: tuple[str, ...] = (
    # 1: a proposal's signed terms beyond its spec (seats, agenda_item, ...), JSON
    "ALTER TABLE proposals ADD COLUMN terms TEXT",
)


class RegionalHook(Protocol):
    """What node/regional.py adds to a region's regional proposals (set at app setup)."""

    async def default_chapters(self) -> list[str]: ...

    def question_terms(self, closes_at: str | None) -> dict[str, Any]: ...


class Proposals:
    def __init__(
        self, db: Database, ledger: Ledger, identity: NodeIdentity, box: BallotBox, clock: Clock
    ) -> None:
        db.migrations["proposals"] = PROPOSAL_MIGRATIONS
        self._db = db
        self._ledger = ledger
        self._identity = identity
        self._box = box
        self._clock = clock
        self._specs: dict[str, ballots.ProposalSpec] = {}
        self._opened: dict[str, tuple[str, ballots.ProposalSpec]] = {}
        self.changed = asyncio.Event()  # wakes the auto-closer when a close time appears
        self.regional: RegionalHook | None = None
        self._stamp: tuple[int, str] = (-1, "")

    # -- reading ------------------------------------------------------------------

    async def get(self, proposal_id: str) -> ProposalView:
        row = await self._row(proposal_id)
        view = await self._view(row)
        if view.status not in ("closed", "decided"):
            return view
        signed, custodial = await member_key_store.signed_counts(self._db, proposal_id)
        demands = await proposal_tally.demands(self._db, row, self._spec(row), view)
        return msgspec.structs.replace(view, signed=signed, custodial=custodial, demands=demands)

    async def all(self) -> list[ProposalView]:
        rows = await proposal_store.list_proposals(self._db)
        cast = await proposal_store.voters_by_proposal(self._db)
        return [
            view_of(row, self._spec(row), self.url_of(row["id"]), cast.get(row["id"], 0))
            for row in rows
        ]

    async def receipt_proof(self, proposal_id: str, receipt: str) -> ballots.ReceiptProof:
        row = await self._row(proposal_id)
        if row["status"] not in ("closed", "decided"):
            raise Conflict(f"proposal {proposal_id} is {row['status']}; its tree is fixed at close")
        found = await proposal_store.ballot_by_receipt(self._db, proposal_id, receipt)
        if found is None:
            raise NotFound(f"no ballot with receipt {receipt[:80]!r} on proposal {proposal_id}")
        if not found["counted"]:
            raise NotFound(f"receipt {receipt[:80]} was superseded by a later ballot")
        receipts = await proposal_store.counted_receipts(self._db, proposal_id)
        return ballots.receipt_proof(receipts, receipt)

    async def my_ballot(self, member: Member, proposal_id: str) -> MyBallot | None:
        """`member`'s last ballot on the proposal (None if they have not voted).

        Only ever the caller's own: the query is keyed by their member id, so no
        argument can reach another member's choice, open or secret vote alike.
        """
        row = await self._row(proposal_id)
        found = await proposal_store.last_ballot_of(self._db, proposal_id, member.id)
        if found is None:
            return None
        spec = self._spec(row)
        return MyBallot(
            proposal=proposal_id,
            receipt=found["receipt"],
            ballot=msgspec.json.decode(found["ballot"]),
            cast_at=found["cast_at"],
            secret=spec.secret,
            nonce=None if spec.secret else found["nonce"],
        )

    # -- writing ------------------------------------------------------------------

    async def create(
        self, author: Member, form: NewProposal, *, terms: Mapping[str, Any] | None = None
    ) -> ProposalView:
        """Store a new proposal (and open it unless a draft).

        `terms`: further signed fields other node code puts on the Question (e.g.
        `requested_by`), merged with the form's own (`seats`, `agenda_item`); a key of
        the Question itself is refused.
        """
        require_role(author, "organizer", "creating a proposal")
        if form.scope == "regional" and not form.chapters and self.regional is not None:
            form = msgspec.structs.replace(form, chapters=await self.regional.default_chapters())
        spec = form.spec(self._identity.kind)
        own = form.terms(spec)
        extra = check_terms(terms or {})
        both = sorted(set(own) & set(extra))
        if both:
            raise BadRequest(f"terms set twice, by the form and the caller: {', '.join(both)}")
        all_terms = check_terms({**own, **extra})
        check_question_terms(spec, all_terms)
        closes_ts = parse_rfc3339(form.closes_at, field="closes_at") if form.closes_at else None
        now = self._clock()
        if closes_ts is not None and closes_ts <= now:
            raise BadRequest(f"closes_at {form.closes_at} is not in the future")
        proposal_id = "p-" + secrets.token_hex(8)
        fields: dict[str, Any] = {
            "id": proposal_id,
            "title": form.title,
            "body": form.body,
            "spec": msgspec.json.encode(spec).decode(),
            "closes_at": None if closes_ts is None else rfc3339(closes_ts),
            "closes_ts": closes_ts,
            "status": "draft",
            "created_by": author.id,
            "created_at": rfc3339(now),
            "terms": msgspec.json.encode(all_terms).decode() if all_terms else None,
        }
        async with self._db.write() as tx:
            await proposal_store.insert_proposal(tx, fields)
            if not form.draft:
                await self._open_in(tx, proposal_id)
        self.changed.set()
        return await self.get(proposal_id)

    async def adopt_regional(
        self, question: Mapping[str, Any], *, digest: str, status: str = "open"
    ) -> ProposalView:
        """Hold a region's (already verified) `Question` entry as a local proposal.

        The chapter's members vote on it here and the chapter's `Tally` names the
        region's entry (`proposal` = its id, `proposal_digest` = `digest`). Nothing is
        appended to this node's chain: the Question is the region's. Idempotent on
        the entry id. `status` is "open" (vote at once) or "draft" (an organizer opens).
        """
        object_id = question.get("id")
        origin = question.get("actor")
        if not isinstance(object_id, str) or not isinstance(origin, str):
            raise BadRequest("a regional Question needs its entry 'id' and 'actor'")
        spec = ballots.parse_spec(question)
        if spec.scope != "regional":
            raise BadRequest(f"{object_id} is not a regional proposal")
        if status not in ("open", "draft"):
            raise BadRequest(f"an adopted proposal starts open or draft, not {status}")
        terms = terms_of_question(question)
        check_question_terms(spec, terms)
        existing = await proposal_store.by_object_id(self._db, object_id)
        if existing is not None:
            return await self.get(existing["id"])
        closes_at = question.get("closesAt") or question.get("endTime")
        closes_ts = (
            parse_rfc3339(closes_at, field="closesAt") if isinstance(closes_at, str) else None
        )
        proposal_id = "p-" + secrets.token_hex(8)
        fields: dict[str, Any] = {
            "id": proposal_id,
            "title": str(question.get("name") or object_id),
            "body": str(question.get("content") or ""),
            "spec": msgspec.json.encode(spec).decode(),
            "closes_at": None if closes_ts is None else rfc3339(closes_ts),
            "closes_ts": closes_ts,
            # a draft keeps its object id aside until an organizer opens it
            "status": status,
            "created_by": None,
            "created_at": rfc3339(self._clock()),
            "object_id": object_id,
            "origin": origin,
            "question_digest": digest,
            "terms": msgspec.json.encode(terms).decode() if terms else None,
        }
        async with self._db.write() as tx:
            await proposal_store.insert_proposal(tx, fields)
        self.changed.set()
        return await self.get(proposal_id)

    async def open(self, actor: Member, proposal_id: str) -> ProposalView:
        require_role(actor, "organizer", "opening a proposal")
        async with self._db.write() as tx:
            await self._open_in(tx, proposal_id)
        self.changed.set()
        return await self.get(proposal_id)

    async def close(self, actor: Member | None, proposal_id: str) -> ProposalView:
        """Close now; `actor` None is the node itself (the close time has come)."""
        if actor is not None:
            require_role(actor, "organizer", "closing a proposal")
        async with self._db.write() as tx:
            await self._close_in(tx, proposal_id)
        return await self.get(proposal_id)

    async def cast(self, voter: Member, proposal_id: str, raw: object) -> dict[str, str]:
        """Validate and durably store a ballot; return its receipt (and, if secret, nonce)."""
        opened = self._opened.get(proposal_id)
        if opened is None:
            row = await self._row(proposal_id)
            if row["status"] != "open":
                raise Conflict(
                    f"proposal {proposal_id} is {row['status']}; "
                    "ballots are accepted only while open"
                )
            # object id and spec never change once open; the status is re-checked
            # inside the ballot's own transaction, so caching them skips a read.
            opened = self._opened[proposal_id] = (row["object_id"], self._spec(row))
        object_id, spec = opened
        signature: tuple[int, str, str] | None = None
        if member_keys.is_signed_form(raw):  # the member's own signature (§7.5)
            if spec.secret:
                raise member_keys.refuse_secret()
            signed = await member_keys.check_signed_ballot(
                self._db, voter, proposal_id, object_id, raw
            )
            raw, signature = signed.ballot, (signed.counter, signed.key, signed.signature)
        ballot = ballots.validate_ballot(spec, raw)
        nonce = secrets.token_bytes(ballots.NONCE_SIZE)
        receipt = ballots.ballot_receipt(object_id, ballot, nonce)
        await self._box.submit(
            PendingBallot(
                proposal_id=proposal_id,
                member_id=voter.id,
                receipt=receipt,
                ballot_json=msgspec.json.encode(ballot).decode(),
                nonce_hex=None if spec.secret else nonce.hex(),
                cast_at=self._cast_at(),
                member_signature=signature,
            )
        )
        return {
            "receipt": receipt,
            "nonce": nonce.hex(),
            "proposal": object_id,
            "custody": "custodial" if signature is None else "member-signed",
        }

    async def close_due(self) -> list[str]:
        """Close every open proposal whose close time has passed (also after a restart)."""
        closed = []
        for proposal_id in await proposal_store.due_to_close(self._db, int(self._clock())):
            try:
                await self.close(None, proposal_id)
                closed.append(proposal_id)
            except Conflict:
                pass  # closed by an organizer meanwhile
        return closed

    async def run_auto_close(self) -> None:
        """Background task: sleep until the next close time, close, repeat."""
        while True:
            self.changed.clear()
            try:
                for proposal_id in await self.close_due():
                    log.info("auto-closed proposal=%s", proposal_id)
            except Exception:  # keep the closer alive; the next pass retries
                log.exception("auto-close pass failed")
            due = await proposal_store.next_close_time(self._db)
            wait = 3600.0 if due is None else max(0.05, min(3600.0, due - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=wait)

    async def record_decision(
        self, proposal_id: str, decision: dict[str, Any], verification: str | None
    ) -> ProposalView:
        """Mark a closed (regional) proposal decided with a decision computed elsewhere."""
        async with self._db.write() as tx:
            row = await self._row_tx(tx, proposal_id)
            status = next_status(proposal_id, row["status"], "decide")
            await proposal_store.update_proposal(
                tx,
                proposal_id,
                {
                    "status": status,
                    "decision": msgspec.json.encode(decision).decode(),
                    "verification": verification,
                },
            )
        return await self.get(proposal_id)

    # -- inside a transaction -----------------------------------------------------

    async def _open_in(self, tx: Tx, proposal_id: str) -> None:
        row = await self._row_tx(tx, proposal_id)
        status = next_status(proposal_id, row["status"], "open")
        if row["origin"] is not None:  # a region's proposal: its Question is theirs
            await proposal_store.update_proposal(tx, proposal_id, {"status": status})
            return
        url = self.url_of(proposal_id)
        body = question_body(row, self._spec(row), url)
        if self.regional is not None and self._spec(row).scope == "regional":
            body |= self.regional.question_terms(row["closes_at"])
        entry = await self._ledger.append_in(tx, body)
        await proposal_store.update_proposal(
            tx,
            proposal_id,
            {"status": status, "object_id": entry.entry["id"], "question_seq": entry.seq},
        )

    async def _close_in(self, tx: Tx, proposal_id: str) -> None:
        row = await self._row_tx(tx, proposal_id)
        await proposal_tally.close_in(tx, self._ledger, self._identity, row, self._spec(row))

    # -- helpers ------------------------------------------------------------------

    def _cast_at(self) -> str:
        # whole seconds (protocol.md §1): formatting once a second, not once a ballot
        second = int(self._clock())
        if second != self._stamp[0]:
            self._stamp = (second, rfc3339(second))
        return self._stamp[1]

    def url_of(self, proposal_id: str) -> str:
        return f"{self._identity.url.rstrip('/')}/proposals/{proposal_id}"

    def _spec(self, row: Row) -> ballots.ProposalSpec:
        spec = self._specs.get(row["id"])
        if spec is None:
            try:
                spec = msgspec.json.decode(row["spec"], type=ballots.ProposalSpec)
            except msgspec.ValidationError as exc:
                raise BallotError(
                    f"stored spec of proposal {row['id']} is unreadable: {exc}"
                ) from None
            self._specs[row["id"]] = spec
        return spec

    async def _row(self, proposal_id: str) -> Row:
        row = await proposal_store.get_proposal(self._db, proposal_id)
        if row is None:
            raise NotFound(f"no proposal {proposal_id!r}")
        return row

    async def _row_tx(self, tx: Tx, proposal_id: str) -> Row:
        row = await proposal_store.get_proposal_tx(tx, proposal_id)
        if row is None:
            raise NotFound(f"no proposal {proposal_id!r}")
        return row

    async def _view(self, row: Row) -> ProposalView:
        cast = await proposal_store.voters(self._db, row["id"])
        return view_of(row, self._spec(row), self.url_of(row["id"]), cast)
