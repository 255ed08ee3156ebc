"""Carrying out facilitators' requests on a region: check each signed request against
the region's own grants, then open or close the proposal it asks for, at most once
(docs/protocol.md §10.7).

Theory of operation
-------------------
A request comes in through node/regional.py's intake like any regional entry
(``Regional.register``): proof by the key valid at its seq, then the shared rule of
protocol/facilitation.py against the region's own grant entries at the seq the region
is about to append, then the action's own validation (a ``propose`` body is checked as
POST /api/proposals checks it). The Question it opens carries ``requested_by`` = the
request's digest, and the request is recorded in the very transaction that appends
that Question (``on_append``), under a primary key on the digest: a request is carried
out at most once, however often it arrives. Anything else is refused with a code and a
reason naming actor and seq (the regional rejection log). The lock is the one the
grants and revocations take (node/facilitation.py), so no revocation slips between the
check and the Question.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from aiohttp import web

from node import chain_store, facilitation_store
from node.api import SERVICES_KEY
from node.errors import BadRequest, Conflict
from node.ledger import Appended
from node.members import Member
from node.proposal_forms import decode_new_proposal
from node.regional import REGIONAL_KEY, Regional, RejectedEntry
from node.storage import Tx
from protocol import facilitation as rule
from protocol.errors import ProtocolError
from protocol.facilitation import FacilitationError

log = logging.getLogger("convene.facilitation")


def refusal(exc: FacilitationError) -> RejectedEntry:
    """The regional rejection a broken facilitation rule becomes."""
    return RejectedEntry(exc.code, exc.detail, actor=exc.actor, seq=exc.seq)


class RequestCarrier:
    """A region's side of facilitation requests; built by node/facilitation.py."""

    def __init__(self, app: web.Application, lock: asyncio.Lock) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._proposals = services.proposals
        self._me = services.identity.actor
        self._lock = lock
        self._carrying: dict[str, tuple[dict[str, Any], rule.Request]] = {}

    @property
    def _regional(self) -> Regional:
        return self._app[REGIONAL_KEY]

    async def ingest_request(self, entry: dict[str, Any]) -> None:
        actor, seq, digest = await self._regional.verified(entry)
        async with self._lock:
            done = await facilitation_store.request(self._db, digest)
            if done is not None and done.outcome == "carried":
                why = f"request {digest} was already carried out ({done.action} {done.object_id})"
                raise RejectedEntry("replayed", why, actor=actor, seq=seq)
            async with self._db.write() as tx:
                own = await facilitation_store.own_entries(tx, self._me)
                head = await chain_store.head(tx)
            at_seq = (head[0] if head is not None else 0) + 1
            try:
                states = rule.grants(own)
                _, req = rule.check_request(states, entry, region=self._me, at_seq=at_seq)
            except FacilitationError as exc:
                raise refusal(exc) from None
            granter = states[req.grant]
            row = await facilitation_store.grant(self._db, granter.grant)
            assert row is not None and row.granted_by is not None
            # The grant is the authority: the proposal is made in the name of the
            # organizer who signed it off, and the Question says who asked.
            author = Member(row.granted_by, "facilitation", "organizer")
            if req.action == "propose":
                await self._propose(author, entry, req, actor, seq, digest)
            else:
                await self._close(author, entry, req, actor, seq, digest)

    async def _propose(
        self,
        author: Member,
        entry: dict[str, Any],
        req: rule.Request,
        actor: str,
        seq: int,
        digest: str,
    ) -> None:
        fields = dict(req.body)
        if fields.setdefault("scope", "regional") != "regional":
            why = "a facilitator proposes regional proposals only (scope 'regional')"
            raise RejectedEntry("malformed", why, actor=actor, seq=seq)
        self._carrying[digest] = (entry, req)
        try:
            form = decode_new_proposal(msgspec.json.encode(fields))
            view = await self._proposals.create(author, form, terms={rule.REQUESTED_BY: digest})
        except (BadRequest, ProtocolError) as exc:  # the form, or the voting rules
            raise RejectedEntry("malformed", exc.detail, actor=actor, seq=seq) from None
        finally:
            self._carrying.pop(digest, None)
        log.info("carried out %s's request seq %d: proposal %s", actor, seq, view.id)

    async def _close(
        self,
        author: Member,
        entry: dict[str, Any],
        req: rule.Request,
        actor: str,
        seq: int,
        digest: str,
    ) -> None:
        object_id = str(req.body["proposal"])
        asked = await facilitation_store.proposal_requested_by(self._db, object_id, actor)
        if asked is None or asked.proposal is None:
            why = f"may close only a proposal it requested; {object_id[:200]} is not one"
            raise RejectedEntry("not_requested", why, actor=actor, seq=seq)
        try:
            await self._proposals.close(author, asked.proposal)
        except Conflict as exc:
            raise RejectedEntry("conflict", exc.detail, actor=actor, seq=seq) from None
        async with self._db.write() as tx:
            await facilitation_store.put_request(
                tx,
                digest=digest,
                entry=entry,
                region=self._me,
                grant=req.grant,
                action="close",
                outcome="carried",
                object_id=object_id,
                now=time.time(),
            )

    async def on_append(self, tx: Tx, appended: Appended) -> None:
        """In the transaction of a Question we append for a request: record the request
        as carried out (its primary key refuses a second one)."""
        cited = appended.entry.get(rule.REQUESTED_BY)
        if appended.entry.get("type") != "Question" or cited is None:
            return
        carrying = self._carrying.get(str(cited))
        if carrying is None:
            raise Conflict(f"a Question cites request {cited!r:.80} that is not being carried out")
        entry, req = carrying
        await facilitation_store.put_request(
            tx,
            digest=str(cited),
            entry=entry,
            region=self._me,
            grant=req.grant,
            action=req.action,
            outcome="carried",
            object_id=str(appended.entry["id"]),
            now=time.time(),
        )
