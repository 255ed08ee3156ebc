"""Deciding a regional proposal on one node (docs/protocol.md §8.4–8.5, §10.6,
docs/regional.md): the region signs its `Decision`; a chapter computes the same
function itself and compares.

Theory of operation
-------------------
Once every listed chapter (or lower region, §10.6) reported, or `tallies_due` has
passed (plus a second, as `published` has whole seconds, and on the region a margin
for tallies in transit), the held on-time tallies and the lower regions' inputs are
aggregated by protocol/aggregate.py. The region appends its signed `Decision` and
marks its proposal decided and verified in the same transaction. A chapter stores its
own computed decision and checks every decision the region signed against its tallies:
`verified`, or `disputed` with the first differing field (or the region's several
decisions), or still waiting for tally entries a decision names. A proposal whose
outcome is final here is not looked at again until something new arrives for it
(`Regional.mark`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from node import proposal_store, regional_store
from node.api import SERVICES_KEY
from node.errors import Conflict
from node.ledger import Appended
from node.proposal_lifecycle import next_status
from node.regional_store import Question
from node.storage import Tx
from protocol import aggregate, ballots
from protocol import tally as protocol_tally
from protocol.errors import TallyError

if TYPE_CHECKING:
    from node.regional import Regional  # which builds this

log = logging.getLogger("convene.regional")

DECIDE_MARGIN_S = 2  # the region waits this long past tallies_due for tallies in transit


class RegionalDecision:
    """The deciding side of one node's regional votes, built by `Regional`."""

    def __init__(self, app: web.Application, regional: Regional) -> None:
        services = app[SERVICES_KEY]
        self._regional = regional
        self._db = services.db
        self._ledger = services.ledger
        self._proposals = services.proposals
        self._me = services.identity.actor
        # proposals whose outcome is settled here; looked at again once marked
        self.final: set[str] = set()

    async def settle(self, q: Question) -> None:
        """Decide (region) or compute and compare (chapter) once tallies are in: every
        listed chapter reported, or `tallies_due` has passed."""
        row = await regional_store.proposal_by_object(self._db, q.object_id)
        if row is None:
            return
        spec = self._regional.spec(q)
        held = await regional_store.tallies(self._db, q.object_id)
        inputs = [] if self._regional.nesting is None else await self._regional.nesting.inputs(q)
        everyone = set(spec.chapters) <= {t.actor for t in held} | {t.chapter for _, t in inputs}
        # `published` has whole seconds, so a tally of the due second itself is on
        # time: wait until that second is over. The region, which decides once, also
        # leaves an on-time tally a moment to arrive; a chapter recomputes if one does.
        wait = 1 + (DECIDE_MARGIN_S if q.region == self._me else 0)
        wait += 0 if self._regional.nesting is None else await self._regional.nesting.extra_wait(q)
        if not everyone and (q.due_ts is None or self._regional.clock() < q.due_ts + wait):
            return
        pairs = [(t.digest, protocol_tally.parse_tally(t.entry)) for t in held] + inputs
        ours = aggregate.aggregate(spec, pairs, proposal=q.object_id, proposal_digest=q.digest)
        if q.region == self._me:
            await self._decide(q, row["id"], row["status"], ours)
        elif row["status"] in ("closed", "decided"):
            await self._compare(q, row, spec, pairs, ours, everyone)

    async def _decide(
        self, q: Question, proposal_id: str, status: str, decision: aggregate.Decision
    ) -> None:
        if status == "decided":
            self.final.add(q.object_id)
            return
        if status == "open":
            with contextlib.suppress(Conflict):
                await self._proposals.close(None, proposal_id)
        elif status != "closed":
            return  # a draft is not decided
        body: dict[str, Any] = {"type": "Decision", **aggregate.decision_body(decision)}

        async def extra(tx: Tx, appended: Appended) -> None:
            current = await proposal_store.get_proposal_tx(tx, proposal_id)
            assert current is not None
            view = {**body, "computed_by": self._me, "region_decision": appended.entry["id"]}
            del view["type"]
            fields = {
                "status": next_status(proposal_id, current["status"], "decide"),
                "decision": msgspec.json.encode(view).decode(),
                "verification": "verified",
            }
            await proposal_store.update_proposal(tx, proposal_id, fields)
            await regional_store.set_decision_seq(tx, q.object_id, appended.seq)

        appended = await self._ledger.append(body, extra)
        self.final.add(q.object_id)
        log.info("decided %s at seq %d: %s", q.object_id, appended.seq, decision.outcome.result)

    async def _compare(
        self,
        q: Question,
        row: Any,
        spec: ballots.ProposalSpec,
        pairs: list[tuple[str, protocol_tally.Tally]],
        ours: aggregate.Decision,
        everyone: bool,
    ) -> None:
        verification: str | None = None
        dispute: str | None = None
        region_entry: str | None = None
        theirs = await regional_store.decisions(self._db, q.object_id)
        if theirs:
            region_entry = str(theirs[-1].entry.get("id"))
            problems: list[str] = []
            for d in theirs:
                try:
                    aggregate.verify_decision(
                        spec, pairs, d.entry, proposal=q.object_id, proposal_digest=q.digest
                    )
                except TallyError as exc:
                    named = set(aggregate.parse_decision(d.entry).tallies)
                    if named - {digest for digest, _ in pairs} and not everyone:
                        dispute = f"waiting for tally entries the decision at seq {d.seq} names"
                    else:
                        problems.append(f"decision at seq {d.seq}: {exc.detail}")
            if problems:
                verification = "disputed"
                many = f"{q.region} signed {len(theirs)} different decisions; " * (len(theirs) > 1)
                dispute = many + "; ".join(problems)
            elif dispute is None:
                verification = "verified"
        view = {
            **aggregate.decision_body(ours),
            "computed_by": self._me,
            "region_decision": region_entry,
            "dispute": dispute,
        }
        encoded = msgspec.json.encode(view).decode()
        if verification is not None:
            self.final.add(q.object_id)
        if (row["status"], row["decision"], row["verification"]) == (
            "decided",
            encoded,
            verification,
        ):
            return
        async with self._db.write() as tx:
            current = await proposal_store.get_proposal_tx(tx, row["id"])
            assert current is not None
            fields: dict[str, Any] = {"decision": encoded, "verification": verification}
            if current["status"] == "closed":
                fields["status"] = next_status(row["id"], "closed", "decide")
            await proposal_store.update_proposal(tx, row["id"], fields)
        if verification == "disputed":
            log.warning("disputed %s: %s", q.object_id, dispute)
