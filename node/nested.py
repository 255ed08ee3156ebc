"""Regions of regions on one node: a city region under a state region (docs/protocol.md
§10.6, docs/regional.md "Regions of regions").

Theory of operation
-------------------
Nesting adds one signed entry, ``Level``, and otherwise reuses node/regional.py's
path (verify → check with protocol/ → hold → decide or compare) at every level:

- A state's regional Question lists its members: chapters and the regions that
  follow it. A listed city that follows the state appends a ``Level`` entry naming its
  own chapters for that proposal and carrying the Question verbatim, and holds the
  Question with ``level`` set: at this node the proposal is decided by the city, from
  those chapters (``Regional.spec``). The Level goes to the city's chapters and to the
  state.
- A chapter that receives a Level from the region it follows checks it against the
  Question it carries (proof by the state's key, ``protocol.audit_nesting.check_level``)
  and holds the proposal open, with the city as its region; its tally goes to the city
  and the city's other chapters, which verify the city's Decision as usual.
- The city's Decision goes up to the state and the state's other members. There it is
  a *lower* decision: checked by ``protocol.nesting.upward_input`` — recomputed from
  the city's chapters' signed tallies where the state can fetch them all, its chapter
  list equal to the city's Level — and its upward input joins the state's aggregation
  like a tally. The state's Decision names the city Decision's digest.
- The city verifies the state's Decision in turn from the state's other chapters'
  tallies and the other cities' decisions it received, and shows ``upper_verification``.

Everything refused is a ``RejectedEntry`` naming actor and seq, kept with its reason.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import msgspec
from aiohttp import web

from federation.errors import FederationError
from node import nested_store, proposal_store, regional_store
from node.api import SERVICES_KEY
from node.clock import parse_rfc3339, rfc3339
from node.errors import BadRequest
from node.federation_glue import ACTORS_KEY
from node.ledger import Appended
from node.proposal_forms import terms_of_question
from node.regional import REGIONAL_KEY, RejectedEntry, Unready, _due
from node.regional_store import HeldEntry, Question
from node.storage import Tx
from protocol import aggregate, ballots, deadlines
from protocol import tally as protocol_tally
from protocol.audit_nesting import (
    check_level,
    decision_lateness,
    decisions_due,
    level_body,
    parse_level,
)
from protocol.errors import ProtocolError
from protocol.nesting import upward_input
from protocol.tally import parse_tally

log = logging.getLogger("convene.nested")

LEVEL_MARGIN_S = 3  # past decisions_due, for a lower decision published on time to arrive


class Nested:
    """The nesting side of one node (``Regional.nesting``)."""

    def __init__(self, app: web.Application) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._ledger = services.ledger
        self._proposals = services.proposals
        self._me = services.identity.actor
        self._kind = services.identity.kind
        self._grace = services.config.regional_grace_s
        self._regional = app[REGIONAL_KEY]
        self._clock = self._regional.clock

    # -- a city: an upper region's Question --------------------------------------------

    async def on_question(self, entry: dict[str, Any]) -> None:
        regional = self._regional
        listed = await regional.listed_question(entry)
        if listed is None:
            return  # not listed: not a level of this proposal
        upper, seq, digest, spec = listed
        object_id = str(entry["id"])
        if await regional_store.question(self._db, object_id) is not None:
            return  # already our level's
        try:
            closes_ts = _closes_ts(entry)
        except BadRequest as exc:
            raise RejectedEntry("malformed", exc.detail, actor=upper, seq=seq) from None
        if closes_ts is not None and closes_ts <= self._clock():
            # Back after the close (down when it came, or a delivery that lagged): our
            # chapters can cast no ballot any more, so we sign no Level and hold nothing;
            # the upper decision names us `missing` (docs/regional.md, Limits).
            log.info("%s closed before it arrived: this level sits it out", object_id)
            return
        # a chapter that follows both stands at the upper level only: it counts once
        chapters = [
            c for c in await regional.default_chapters(("chapter",)) if c not in spec.chapters
        ]
        if not chapters:
            log.info("no chapters of ours for %s: the level is left empty", object_id)
            return
        body = level_body(entry, digest, chapters)
        level = tuple(body["chapters"])

        async def extra(tx: Tx, appended: Appended) -> None:
            q = Question(object_id, self._me, digest, entry, _due(entry, self._grace), None, level)
            await regional_store.put_question(tx, q)
            held = HeldEntry(self._me, appended.seq, appended.digest, appended.entry)
            await nested_store.put(tx, object_id, "level", held, self._clock())
            await self._hold_proposal(tx, entry, digest, regional.spec(q))
            # to the level's chapters, and to the upper level, which checks our
            # decision by it
            await regional.queue(tx, appended.seq, {*level, upper, *spec.chapters})

        appended = await self._ledger.append(body, extra)
        log.info("level of %s at seq %d: %d chapters", object_id, appended.seq, len(level))
        self._proposals.changed.set()  # the auto-closer learns the close time
        regional.mark(object_id)

    async def _hold_proposal(
        self, tx: Tx, question: dict[str, Any], digest: str, spec: ballots.ProposalSpec
    ) -> None:
        """A proposals row for the level: closed at the Question's close time and decided
        by node/regional.py from the level's tallies (origin None: no ballots here)."""
        terms = terms_of_question(question)
        closes_ts = _closes_ts(question)
        fields: dict[str, Any] = {
            "id": "p-" + secrets.token_hex(8),
            "title": str(question.get("name") or question["id"]),
            "body": str(question.get("content") or ""),
            "spec": msgspec.json.encode(spec).decode(),
            "closes_at": None if closes_ts is None else rfc3339(closes_ts),
            "closes_ts": closes_ts,
            "status": "open",
            "created_by": None,
            "created_at": rfc3339(self._clock()),
            "object_id": question["id"],
            "origin": None,
            "question_digest": digest,
            # its terms verbatim (`seats`, ...), as a chapter adopting it keeps them
            "terms": msgspec.json.encode(terms).decode() if terms else None,
        }
        await proposal_store.insert_proposal(tx, fields)

    # -- a Level entry -------------------------------------------------------------------

    async def on_level(self, entry: dict[str, Any]) -> None:
        regional = self._regional
        region, seq, digest = await regional.verified(entry)
        if region == self._me:
            return
        try:
            level = parse_level(entry)
        except ProtocolError as exc:
            raise RejectedEntry("malformed", exc.detail, actor=region, seq=seq) from None
        question = level.question
        try:
            _, _, qdigest = await regional.verified(question)
        except RejectedEntry as exc:
            why = f"the question it carries ({exc.actor}, seq {exc.seq}): {exc.reason}"
            raise RejectedEntry(exc.code, why, actor=region, seq=seq) from None
        try:
            _, spec = check_level(entry, qdigest)
        except ProtocolError as exc:
            raise RejectedEntry("bad_level", exc.detail, actor=region, seq=seq) from None
        object_id = level.proposal
        upper = ballots.parse_spec(question)
        if self._me == question.get("actor") or self._me in upper.chapters:
            # we stand at the upper level: the Level is what a lower decision is checked by
            if await regional_store.question(self._db, object_id) is None:
                raise Unready(f"proposal {object_id} has not arrived yet")
            await self._keep(object_id, "level", HeldEntry(region, seq, digest, entry), "level")
        elif self._kind == "chapter" and self._me in spec.chapters:
            await self._adopt(entry, region, seq, qdigest)

    async def _adopt(self, entry: dict[str, Any], region: str, seq: int, qdigest: str) -> None:
        level = parse_level(entry)
        if region not in await regional_store.followed_regions(self._db):
            why = f"{region} is not a region this chapter follows"
            raise RejectedEntry("not_followed", why, actor=region, seq=seq)
        try:
            await self._proposals.adopt_regional(level.question, digest=qdigest)
        except BadRequest as exc:
            raise RejectedEntry("malformed", exc.detail, actor=region, seq=seq) from None
        q = Question(
            level.proposal,
            region,
            qdigest,
            level.question,
            _due(level.question, self._grace),
            None,
            level.chapters,
        )
        async with self._db.write() as tx:
            await regional_store.put_question(tx, q)
        self._regional.mark(level.proposal)

    # -- decisions of another level ------------------------------------------------------

    async def on_decision(self, entry: dict[str, Any], q: Question) -> None:
        """A Decision of `q` by a region other than `q.region`: a lower region's (at the
        upper level) or the upper region's (at a lower region)."""
        region, seq, digest = await self._regional.verified(entry)
        upper = ballots.parse_spec(q.entry)
        author = str(q.entry.get("actor"))
        held = HeldEntry(region, seq, digest, entry)
        if q.level is not None and q.region == self._me and region == author:
            await self._keep(q.object_id, "upper", held, "decision")
            return
        upper_level = q.level is None or q.region == self._me  # not a lower level's chapter
        levels = {h.actor: h for h in await nested_store.held(self._db, q.object_id, "level")}
        if not upper_level or region not in upper.chapters or region not in levels:
            if upper_level and region in upper.chapters and await self._is_region(region):
                raise Unready(f"the Level of {region} for {q.object_id} has not arrived yet")
            why = (
                f"only {q.region}, which published {q.object_id}, or a lower region with a "
                "Level of it decides it"
            )
            raise RejectedEntry("not_region", why, actor=region, seq=seq)
        deciding = q.region == self._me and q.level is None
        if deciding and not await regional_store.is_follower(self._db, region):
            why = f"{region} is not an accepted follower of this region"
            raise RejectedEntry("not_follower", why, actor=region, seq=seq)
        late = decision_lateness(q.entry, entry)
        if late is not None:
            raise RejectedEntry("late", late, actor=region, seq=seq)
        behind = await self._lower_tallies(q, entry)
        lower = None if behind is None else [(h.digest, parse_tally(h.entry)) for h in behind]
        try:
            upward_input(upper, entry, lower)
            decision = aggregate.parse_decision(entry)
        except ProtocolError as exc:
            raise RejectedEntry("bad_decision", exc.detail, actor=region, seq=seq) from None
        listed = list(parse_level(levels[region].entry).chapters)
        counted = [c.chapter for c in decision.chapters]
        if counted != listed:
            at = levels[region].seq
            why = f"the decision lists chapters {counted}, its Level at seq {at} {listed}"
            raise RejectedEntry("bad_decision", why, actor=region, seq=seq)
        await self._keep(q.object_id, "lower", held, "decision")
        if behind:  # the evidence, held like any tally, so this node's export re-checks it
            async with self._db.write() as tx:
                for tally in behind:
                    await regional_store.put_tally(tx, q.object_id, tally, self._clock())

    async def _is_region(self, actor_id: str) -> bool:
        try:
            return (await self._app[ACTORS_KEY].get(actor_id)).kind == "region"
        except FederationError:
            return False

    async def _lower_tallies(self, q: Question, entry: dict[str, Any]) -> list[HeldEntry] | None:
        """The on-time signed tallies of the lower decision's chapters (each one's first),
        fetched from their chains; None (the decision is taken on its signature) unless
        every tally it names is among them. One it left out is then found out too."""
        if q.region != self._me or q.level is not None:
            return None
        try:
            decision = aggregate.parse_decision(entry)
        except ProtocolError:
            return None  # upward_input names it
        due = deadlines.tallies_due(q.entry, grace_s=self._grace)
        named = set(decision.tallies)
        found: list[HeldEntry] = []
        actors = self._app[ACTORS_KEY]
        for chapter in (c.chapter for c in decision.chapters):
            try:
                chain = await actors.chain(await actors.get(chapter))
            except (FederationError, ProtocolError) as exc:
                log.info("tallies of %s out of reach: %s", chapter, exc)
                if any(c.chapter == chapter and c.tally for c in decision.chapters):
                    return None
                continue
            for tally in chain:
                if tally.get("type") != "Tally" or tally.get("proposal") != q.object_id:
                    continue
                try:
                    author, seq, digest = await self._regional.verified(tally)
                    parse_tally(tally)
                except (RejectedEntry, ProtocolError):
                    continue
                if author == chapter and deadlines.tally_lateness(due, tally) is None:
                    found.append(HeldEntry(chapter, seq, digest, tally))
                    break  # a chapter's first tally of the proposal is the one (§8.4)
        return found if {h.digest for h in found} >= named else None

    async def on_tally(self, entry: dict[str, Any], q: Question) -> bool:
        """At a lower region, a tally of an upper-level chapter: held to verify the upper
        decision. False when it is no such tally."""
        chapter = entry.get("actor")
        if q.level is None or chapter not in ballots.parse_spec(q.entry).chapters:
            return False
        _, seq, digest = await self._regional.verified(entry)
        await self._keep(q.object_id, "tally", HeldEntry(str(chapter), seq, digest, entry), "tally")
        return True

    async def _keep(
        self, proposal: str, kind: nested_store.Kind, held: HeldEntry, what: str
    ) -> None:
        async with self._db.write() as tx:
            kept = await nested_store.put(tx, proposal, kind, held, self._clock())
        if kept.digest != held.digest:
            why = f"{held.actor} already sent a {what} of {proposal} (its entry at seq {kept.seq})"
            raise RejectedEntry("duplicate", why, actor=held.actor, seq=held.seq)
        self._regional.mark(proposal)

    # -- what node/regional.py asks ------------------------------------------------------

    async def inputs(self, q: Question) -> list[tuple[str, protocol_tally.Tally]]:
        if q.level is not None:
            return []
        spec = ballots.parse_spec(q.entry)
        return [
            upward_input(spec, held.entry)
            for held in await nested_store.held(self._db, q.object_id, "lower")
        ]

    async def extra_wait(self, q: Question) -> int:
        """At the upper level of a proposal with lower regions: until lower decisions
        are due (protocol/audit_nesting.py ``decisions_due``), and a margin for transit."""
        if q.level is not None or not await nested_store.held(self._db, q.object_id, "level"):
            return 0
        due, tallies = decisions_due(q.entry), q.due_ts
        if due is None or tallies is None:
            return LEVEL_MARGIN_S
        return max(0, int(due.timestamp()) - tallies) + LEVEL_MARGIN_S

    async def view(self, q: Question) -> dict[str, Any]:
        lower = await nested_store.held(self._db, q.object_id, "lower")
        out: dict[str, Any] = {
            "level": None if q.level is None else list(q.level),
            "lower_decisions": [
                {"region": h.actor, "seq": h.seq, "id": h.entry.get("id"), "digest": h.digest}
                for h in lower
            ],
        }
        if q.level is not None and q.region == self._me:
            out |= await self._upper_view(q)
        return out

    async def _upper_view(self, q: Question) -> dict[str, Any]:
        """At a lower region: the upper region's decision, recomputed from what reached
        this node — the upper chapters' tallies, the other lower regions' decisions and
        our own."""
        uppers = await nested_store.held(self._db, q.object_id, "upper")
        if not uppers:
            return {"upper_decision": None, "upper_verification": None}
        spec = ballots.parse_spec(q.entry)
        due = deadlines.tallies_due(q.entry, grace_s=self._grace)
        pairs = [
            (h.digest, protocol_tally.parse_tally(h.entry))
            for h in await nested_store.held(self._db, q.object_id, "tally")
            if deadlines.tally_lateness(due, h.entry) is None
        ]
        pairs += [
            upward_input(spec, h.entry)
            for h in await nested_store.held(self._db, q.object_id, "lower")
        ]
        if q.decision_seq is not None:
            (own,) = await self._ledger.entries(q.decision_seq, 1)
            if decision_lateness(q.entry, own) is None:
                pairs.append(upward_input(spec, own))
        upper = uppers[0]
        try:
            aggregate.verify_decision(
                spec, pairs, upper.entry, proposal=q.object_id, proposal_digest=q.digest
            )
            verification, dispute = "verified", None
        except ProtocolError as exc:
            verification, dispute = "disputed", exc.detail
        return {
            "upper_decision": {
                "id": upper.entry.get("id"),
                "seq": upper.seq,
                "digest": upper.digest,
            },
            "upper_verification": verification,
            "upper_dispute": dispute,
        }


def _closes_ts(question: dict[str, Any]) -> int | None:
    """The Question's close time (`closesAt`, or AS2 `endTime`), None when open-ended."""
    closes_at = question.get("closesAt") or question.get("endTime")
    return parse_rfc3339(closes_at, field="closesAt") if isinstance(closes_at, str) else None


def setup(app: web.Application) -> None:
    """Nesting on top of node/regional.py (called from its setup)."""
    services = app[SERVICES_KEY]
    services.db.migrations["nested"] = nested_store.NESTED_MIGRATIONS
    nested = Nested(app)
    regional = app[REGIONAL_KEY]
    regional.nesting = nested
    regional.register("Level", nested.on_level, pulled_from_regions=True)
