"""Regional votes end to end on one node, region or chapter (ARCHITECTURE "A regional
decision", docs/protocol.md §8.3–8.5, docs/regional.md).

Theory of operation
-------------------
Everything travels as signed chain entries, verbatim, so the region is a convenience
and never an authority:

- A region's organizer opens a `scope: regional` proposal; its `Question` entry lists
  the expected chapters (the accepted followers unless given) and `tallies_due`, the
  close time plus the node's `regional_grace_s`. A chapter's inbox verifies it, and if
  the chapter is listed and follows that region, holds it open for its members
  (`Proposals.adopt_regional`).
- At close the chapter appends its `Tally`; the entry goes to the region *and* to every
  other listed chapter.
- Every node holds the tallies it verified: entry proof by the key valid at that seq in
  the author's chain, author listed in the signed Question (and, on the region, an
  accepted follower), tally adding up (§8.3), `published` no later than `tallies_due`,
  and one tally per chapter. Anything else is rejected with a code (`unsigned`,
  `forged`, `malformed`, `not_follower`, `bad_tally`, `late`, `duplicate`, ...) and a
  reason, kept and shown, never counted. The `published` time is signed, so every node
  judges lateness alike.
- Once every listed chapter reported, or `tallies_due` has passed, the region appends
  its signed `Decision` (protocol/aggregate.py) and each chapter computes the same
  function itself and compares: `verified`, or `disputed` with the first differing
  field. With the region gone, the chapters still show their own computed decision.
- Deliveries go through a small outbox (`regional_outbox`), filled in the transaction
  that appends the entry and drained into federation's durable queue once the targets'
  inboxes are known. A node that was down pulls, on start, the region's and the listed
  chapters' outboxes and feeds those entries through the very same checks. That loop
  lives in node/regional_outbox.py, deciding and comparing in regional_decision.py,
  the read-only view in regional_view.py, and a chapter's check of a partner's
  `requested_by` in regional_citation.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.actors import ActorCache, ActorKeyError
from federation.errors import FederationError
from federation.inbox import EntryRefusal, IncomingActivity
from federation.incoming import entry_subject
from node import regional_store, regional_view
from node.api import SERVICES_KEY, authenticate, json_response
from node.clock import Clock, parse_rfc3339, rfc3339, system_clock
from node.errors import BadRequest, NodeError
from node.federation_glue import ACTORS_KEY, INBOX_HANDLERS_KEY, REFUSAL_LOG_KEY
from node.ledger import Appended
from node.regional_citation import check_citation
from node.regional_decision import RegionalDecision
from node.regional_outbox import RegionalOutbox
from node.regional_store import HeldEntry, Question, Rejection
from node.storage import Database, Tx
from protocol import aggregate, ballots, canonical, deadlines, entries, nesting, proofs
from protocol import tally as protocol_tally
from protocol.errors import ChainError, ProtocolError, TallyError

if TYPE_CHECKING:
    from node.nested import Nested  # which imports this module

log = logging.getLogger("convene.regional")


class RejectedEntry(NodeError):
    """A regional entry that is not counted: what (code), where (actor, seq), why."""

    code = "rejected"
    status = 422

    def __init__(self, code: str, reason: str, *, actor: str | None, seq: int | None) -> None:
        self.actor, self.seq, self.reason = actor, seq, reason
        where = f"actor {actor}, seq {seq}: " if actor is not None else ""
        super().__init__(f"{where}{reason}", code=code)


class Unready(Exception):
    """Not processable yet (its proposal has not arrived); the inbox retries it."""


def _where(entry: dict[str, Any]) -> tuple[str | None, int | None]:
    actor, seq = entry.get("actor"), entry.get("seq")
    return (actor if isinstance(actor, str) else None, seq if type(seq) is int else None)


def _due(question: dict[str, Any], grace: int) -> int | None:
    """The signed deadline for tallies, or the close time plus our own grace (the rule
    is protocol/deadlines.py's, shared with the audit)."""
    due = deadlines.tallies_due(question, grace_s=grace)
    return None if due is None else parse_rfc3339(due, field="tallies_due")


class Regional:
    """The regional side of one node; built at startup by `setup`'s cleanup context."""

    def __init__(self, app: web.Application, clock: Clock = system_clock) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._ledger = services.ledger
        self._proposals = services.proposals
        self._me = services.identity.actor
        self._kind = services.identity.kind
        self._grace = services.config.regional_grace_s
        self._clock = clock
        self.clock = clock
        self.outbox = RegionalOutbox(app, self)
        self.deciding = RegionalDecision(app, self)
        self._dirty: set[str] = set()
        self._ingest: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "Question": self._on_question,
            "Tally": self._on_tally,
            "Decision": self._on_decision,
        }
        self._pulled_from_regions: set[str] = {"Question", "Decision"}
        self.nesting: Nested | None = None  # regions of regions, set by node/nested.py

    @property
    def _actors(self) -> ActorCache:
        # Opened by federation_glue's cleanup context, after this object is built.
        return self._app[ACTORS_KEY]

    @property
    def actors(self) -> ActorCache:
        """The node's actor cache (remote actors, their chains and keys)."""
        return self._actors

    @property
    def db(self) -> Database:
        return self._db

    # -- hooks the node calls (node/proposals.py, node/ledger.py) -------------------

    async def default_chapters(self, kinds: tuple[str, ...] = ("chapter", "region")) -> list[str]:
        """The accepted followers that are chapters or lower regions (§10.6); a
        fediverse account may follow a region too, and would never send a tally."""
        async with self._db.write() as tx:
            followers = await regional_store.accepted_followers(tx)
        chapters = []
        for actor_id in followers:
            try:
                kind = (await self._actors.get(actor_id)).kind
            except FederationError:
                kind = "chapter"  # unreachable now; it followed as a node, so list it
            if kind in kinds:
                chapters.append(actor_id)
        return chapters

    def question_terms(self, closes_at: str | None) -> dict[str, Any]:
        if closes_at is None:
            return {}
        return {"tallies_due": rfc3339(parse_rfc3339(closes_at, field="closes_at") + self._grace)}

    async def on_append(self, tx: Tx, appended: Appended) -> None:
        """In the appending transaction: hold our own regional entries and queue them."""
        entry = appended.entry
        kind = entry.get("type")
        targets: set[str] = set()
        if kind == "Question" and entry.get("scope") == "regional":
            spec = ballots.parse_spec(entry)
            q = Question(
                entry["id"], self._me, appended.digest, entry, _due(entry, self._grace), None
            )
            await regional_store.put_question(tx, q)
            targets = {*spec.chapters, *await regional_store.accepted_followers(tx)}
        elif kind in ("Tally", "Decision"):
            held_q = await regional_store.question_tx(tx, str(entry.get("proposal")))
            if held_q is None:
                return  # a local proposal's entry
            q = held_q
            spec = self.spec(q)
            targets = {q.region, *spec.chapters}
            if kind == "Decision":
                targets |= set(await regional_store.accepted_followers(tx))
                if q.level is not None:  # a lower region's decision goes up (§10.6)
                    upper = ballots.parse_spec(q.entry).chapters
                    targets |= {str(q.entry.get("actor")), *upper}
            else:
                held = HeldEntry(self._me, appended.seq, appended.digest, entry)
                late = self._lateness(q, entry)
                if late is None:
                    await regional_store.put_tally(tx, q.object_id, held, self._clock())
                else:
                    rejection = Rejection(
                        q.object_id, self._me, appended.seq, appended.digest, "Tally", "late", late
                    )
                    await regional_store.put_rejection(tx, rejection, self._clock())
            self._dirty.add(q.object_id)
        else:
            return
        targets.discard(self._me)
        await regional_store.queue_targets(tx, appended.seq, sorted(targets))
        self.outbox.wake_soon()

    # -- extension points for other entry types (node/convenings, ...) ----------------

    def register(
        self,
        kind: str,
        ingest: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        pulled_from_regions: bool = False,
    ) -> None:
        """Take entries of type `kind` the way Question/Tally/Decision are taken: from
        the inbox and, with `pulled_from_regions`, from the followed regions' outboxes
        on catch-up. `ingest` checks with `verified` and raises `RejectedEntry` (kept,
        with its reason) or `Unready` (the inbox retries). Call before the app starts."""
        self._ingest[kind] = ingest
        if pulled_from_regions:
            self._pulled_from_regions.add(kind)
        app_handlers = self._app[INBOX_HANDLERS_KEY]
        app_handlers[kind] = self._handler

    async def verified(self, entry: dict[str, Any]) -> tuple[str, int, str]:
        """(author, seq, digest) of an entry whose proof is by the key valid at its seq
        in its author's chain; `RejectedEntry` (unsigned, malformed, forged) otherwise."""
        return await self._verified(entry)

    async def queue(self, tx: Tx, seq: int, targets: set[str] | list[str]) -> None:
        """In the appending transaction: deliver our entry `seq` to `targets` (actor
        ids, resolved to inboxes later, retried until reachable)."""
        wanted = sorted(set(targets) - {self._me})
        if wanted:
            await regional_store.queue_targets(tx, seq, wanted)
            self.outbox.wake_soon()

    # -- incoming entries (inbox handlers and the catch-up pull share this path) -----

    def handlers(self) -> dict[str, Callable[[IncomingActivity], Awaitable[None]]]:
        return {kind: self._handler for kind in self._ingest}

    async def _handler(self, incoming: IncomingActivity) -> None:
        await self.receive(incoming.activity)

    async def receive(self, entry: dict[str, Any]) -> None:
        """Verify and hold one Question, Tally or Decision entry; a bad one is rejected
        (recorded with its reason, not counted) and `RejectedEntry` is not raised."""
        ingest = self._ingest.get(str(entry.get("type")))
        if ingest is None:
            return
        try:
            await ingest(entry)
        except RejectedEntry as exc:
            await self._reject(entry, exc)

    async def _reject(self, entry: dict[str, Any], exc: RejectedEntry) -> None:
        subject = entry_subject(entry)  # the same subject the inbox's refusal log keeps
        digest = ""
        with contextlib.suppress(ProtocolError):
            digest = canonical.digest(entry)
        rejection = Rejection(
            subject,
            exc.actor or "?",
            exc.seq,
            digest,
            str(entry.get("type")),
            exc.code,
            exc.reason,
        )
        async with self._db.write() as tx:
            await regional_store.put_rejection(tx, rejection, self._clock())
        log.warning("rejected %s %s: %s", rejection.type, exc.code, exc.detail)

    async def _verified(self, entry: dict[str, Any]) -> tuple[str, int, str]:
        """(author, seq, digest) of an entry whose proof is by the key valid at its seq."""
        actor, seq = _where(entry)
        if not isinstance(entry.get("proof"), dict):
            raise RejectedEntry("unsigned", "the entry carries no proof", actor=actor, seq=seq)
        try:
            env = entries.read_envelope(entry)
        except ChainError as exc:
            raise RejectedEntry("malformed", exc.detail, actor=actor, seq=seq) from None
        method = env.proof.verificationMethod
        if not method.startswith(env.actor + "#"):
            why = f"signed by {method}, not a key of {env.actor}"
            raise RejectedEntry("forged", why, actor=env.actor, seq=env.seq)
        try:
            key = await self._actors.entry_key(env.actor, env.seq, method)
            digest = proofs.verified_digest(entry, key)
        except (ActorKeyError, ProtocolError) as exc:
            why = exc.describe() if isinstance(exc, ProtocolError) else exc.detail
            raise RejectedEntry(
                "forged", f"the proof does not verify: {why}", actor=env.actor, seq=env.seq
            ) from None
        return env.actor, env.seq, digest

    async def listed_question(
        self, entry: dict[str, Any]
    ) -> tuple[str, int, str, ballots.ProposalSpec] | None:
        """(region, seq, digest, spec) of a verified regional Question from a region this
        node follows that lists this node; None when it does not list us (not ours to
        hold); `RejectedEntry` for an unverified, unfollowed or malformed one. The same
        gate for a chapter and for a lower region (node/nested.py)."""
        region, seq, digest = await self._verified(entry)
        if region not in await regional_store.followed_regions(self._db):
            why = f"{region} is not a region this {self._kind} follows"
            raise RejectedEntry("not_followed", why, actor=region, seq=seq)
        try:
            spec = ballots.parse_spec(entry)
        except ProtocolError as exc:
            raise RejectedEntry("malformed", exc.describe(), actor=region, seq=seq) from None
        if spec.scope != "regional" or self._me not in spec.chapters:
            log.info("question %s does not list this node; not held", entry.get("id"))
            return None
        return region, seq, digest, spec

    async def _on_question(self, entry: dict[str, Any]) -> None:
        if self._kind != "chapter":
            if self.nesting is not None:
                await self.nesting.on_question(entry)
            return
        listed = await self.listed_question(entry)
        if listed is None:
            return
        region, seq, digest, _ = listed
        held = await regional_store.question(self._db, str(entry.get("id")))
        if held is None or held.digest != digest:  # checked once, not on every catch-up
            await check_citation(self, entry, region, seq)  # a partner's request (§10.7)
        try:
            await self._proposals.adopt_regional(entry, digest=digest)
        except BadRequest as exc:
            raise RejectedEntry("malformed", exc.detail, actor=region, seq=seq) from None
        q = Question(entry["id"], region, digest, entry, _due(entry, self._grace), None)
        async with self._db.write() as tx:
            await regional_store.put_question(tx, q)
        self._mark(q.object_id)

    async def _on_tally(self, entry: dict[str, Any]) -> None:
        chapter, seq, digest = await self._verified(entry)
        if chapter == self._me:
            return  # our own, held when appended
        try:
            tally = protocol_tally.parse_tally(entry)
        except TallyError as exc:
            raise RejectedEntry("malformed", exc.detail, actor=chapter, seq=seq) from None
        q = await self._question_for(tally.proposal, chapter, seq)
        spec = self.spec(q)
        nested = chapter not in spec.chapters and self.nesting is not None
        if nested and self.nesting is not None and await self.nesting.on_tally(entry, q):
            return  # an upper-level chapter's tally, held at a lower region (§10.6)
        if chapter not in spec.chapters:
            why = f"{chapter} is not among the chapters {q.region} listed for {q.object_id}"
            raise RejectedEntry("not_follower", why, actor=chapter, seq=seq)
        if q.region == self._me and not await regional_store.is_follower(self._db, chapter):
            why = f"{chapter} is not an accepted follower of this region"
            raise RejectedEntry("not_follower", why, actor=chapter, seq=seq)
        try:
            aggregate.check_tally(spec, tally, proposal=q.object_id, proposal_digest=q.digest)
        except TallyError as exc:
            raise RejectedEntry("bad_tally", exc.detail, actor=chapter, seq=seq) from None
        late = self._lateness(q, entry)
        if late is not None:
            raise RejectedEntry("late", late, actor=chapter, seq=seq)
        async with self._db.write() as tx:
            held = await regional_store.tally_of(tx, q.object_id, chapter)
            if held is None:
                await regional_store.put_tally(
                    tx, q.object_id, HeldEntry(chapter, seq, digest, entry), self._clock()
                )
        if held is not None and held.digest != digest:
            why = f"{chapter} already reported on {q.object_id} with its entry at seq {held.seq}"
            raise RejectedEntry("duplicate", why, actor=chapter, seq=seq)
        self._mark(q.object_id)

    async def _on_decision(self, entry: dict[str, Any]) -> None:
        region, seq, digest = await self._verified(entry)
        if region == self._me:
            return
        try:
            decision = aggregate.parse_decision(entry)
        except TallyError as exc:
            raise RejectedEntry("malformed", exc.detail, actor=region, seq=seq) from None
        q = await self._question_for(decision.proposal, region, seq)
        if region != q.region and self.nesting is not None:
            await self.nesting.on_decision(entry, q)
            return
        if region != q.region:
            why = f"only {q.region}, which published {q.object_id}, decides it"
            raise RejectedEntry("not_region", why, actor=region, seq=seq)
        async with self._db.write() as tx:
            held = HeldEntry(region, seq, digest, entry)
            await regional_store.put_decision(tx, q.object_id, held, self._clock())
        self._mark(q.object_id)

    async def _question_for(self, proposal: str, actor: str, seq: int) -> Question:
        q = await regional_store.question(self._db, proposal)
        if q is not None:
            return q
        regions = [*await regional_store.followed_regions(self._db), self._me]
        if any(proposal.startswith(r + "/") for r in regions):
            raise Unready(f"proposal {proposal} has not arrived yet")
        why = f"{proposal} is no regional proposal held here"
        raise RejectedEntry("unknown_proposal", why, actor=actor, seq=seq)

    def _lateness(self, q: Question, entry: dict[str, Any]) -> str | None:
        due = None if q.due_ts is None else rfc3339(q.due_ts)
        return deadlines.tally_lateness(due, entry)

    def spec(self, q: Question) -> ballots.ProposalSpec:
        """`q`'s spec as this node applies it: with its level's chapters on a lower
        region and its chapters (§10.6), else the Question's own."""
        spec = ballots.parse_spec(q.entry)
        return spec if q.level is None else nesting.level_spec(spec, q.level)

    def mark(self, object_id: str) -> None:
        """Look at `object_id` again soon (something arrived for it)."""
        self._mark(object_id)

    def _mark(self, object_id: str) -> None:
        self._dirty.add(object_id)
        self.deciding.final.discard(object_id)
        self.outbox.wake.set()

    # -- deciding (node/regional_decision.py) ---------------------------------------

    async def settle(self, q: Question) -> None:
        """Decide (region) or compute and compare (chapter) once tallies are in: every
        listed chapter reported, or `tallies_due` has passed."""
        await self.deciding.settle(q)

    # -- the background loop (node/regional_outbox.py) and reading (regional_view.py) --

    async def settle_due(self) -> None:
        """Settle every proposal something arrived for, or not yet final."""
        for q in await regional_store.questions(self._db):
            if q.object_id in self.deciding.final and q.object_id not in self._dirty:
                continue
            self._dirty.discard(q.object_id)
            await self.settle(q)

    @property
    def pulled_from_regions(self) -> frozenset[str]:
        """Entry types catch-up takes from the followed regions' outboxes."""
        return frozenset(self._pulled_from_regions)

    async def status(self, proposal_id: str) -> dict[str, Any]:
        """What this node holds about a regional proposal, for the API and the demo."""
        return await regional_view.status(self, proposal_id)


REGIONAL_KEY = web.AppKey("convene_regional", Regional)


async def _regional_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES_KEY]
    regional = app[REGIONAL_KEY]
    services.proposals.regional = regional
    task = asyncio.create_task(regional.outbox.run(), name="regional")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        services.proposals.regional = None


async def _inbox_handler(app: web.Application, incoming: IncomingActivity) -> None:
    regional = app.get(REGIONAL_KEY)
    if regional is None:
        raise Unready("regional votes are not running yet")
    await regional.receive(incoming.activity)


async def _status_view(request: web.Request) -> web.Response:
    # The same rule as GET /api/proposals/{id} (node/api.py): any signed-in member.
    await authenticate(request)
    return json_response(await request.app[REGIONAL_KEY].status(request.match_info["id"]))


def setup(app: web.Application) -> None:
    """Register the schema, the inbox handlers, the background loop and the read route.
    Call after `node.federation_glue.setup(app)`, before the app starts."""
    services = app[SERVICES_KEY]
    services.db.migrations["regional"] = regional_store.REGIONAL_MIGRATIONS
    regional = Regional(app)
    app[REGIONAL_KEY] = regional
    # Hooked before the app starts: the node's auto-closer runs from the first cleanup
    # context and may sign an overdue tally at once on a restart; that tally must be
    # held and queued for the region like any other, not appended unseen.
    services.ledger.on_append.append(regional.on_append)

    async def handler(incoming: IncomingActivity) -> None:
        await _inbox_handler(app, incoming)

    for kind in ("Question", "Tally", "Decision"):
        app[INBOX_HANDLERS_KEY][kind] = handler

    async def log_refusal(refusal: EntryRefusal) -> None:
        async with services.db.write() as tx:
            await regional_store.log_refusal(tx, refusal)

    app[REFUSAL_LOG_KEY] = log_refusal
    app.cleanup_ctx.append(_regional_ctx)
    app.router.add_get("/api/proposals/{id}/regional", _status_view)
    from node import nested  # regions of regions build on this module (it imports it)

    nested.setup(app)
