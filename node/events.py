"""Convenings as events: Event entries, members' RSVPs and signed attendance counts
(docs/protocol.md §10.1–10.3).

Theory of operation
-------------------
An event is one ``Event`` entry of its host's chain (a region's, or a chapter's own
local convening). It travels exactly as regional proposals do (node/regional.py): the
appending transaction queues it for the listed chapters and every accepted follower,
and a chapter's inbox (or its catch-up pull of the regions it follows) verifies the
proof by the key valid at that seq before holding it. The event's local id is
``e-`` + 16 hex digits of its entry digest, so it is the same on every node.

Members answer on their own node; the last answer counts (protocol.events.count_rsvps).
An invited chapter's organizer signs its ``Attendance`` once, from the answers of the
members on its signed roster; it goes to the host and the other invited chapters.
Every node holds an Attendance entry only after ``sum_attendance`` (the one rule the
auditor runs too) accepts it beside those already held; a refused one is kept with
its code (``not_invited``, ``other_event``, ``bad_count``, ``duplicate_count``,
``forged``, ...) and shown, never counted. A local convening lists no chapters: its
host alone reports.

A time poll (protocol/timepoll.py) is an approval proposal over slots; ``from_poll``
closes a decided one over the tallies this node holds (the region's verified chapter
tallies, or the chapter's own tally) and answers 409 naming the slots on a tie.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from node import chain_store, event_store, proposal_store, regional_store
from node.api import SERVICES_KEY
from node.clock import Clock, parse_rfc3339, rfc3339, system_clock
from node.errors import BadRequest, Conflict, NotFound
from node.event_store import HeldCount, HeldEvent
from node.ledger import Appended
from node.members import Member, require_role
from node.regional import REGIONAL_KEY, RejectedEntry, Unready
from node.storage import Tx
from protocol import ballots, canonical, roster
from protocol import tally as protocol_tally
from protocol.events import (
    ATTENDANCE_TYPE,
    EVENT_TYPE,
    RSVP_ANSWERS,
    ConveningError,
    attendance_body,
    count_rsvps,
    event_body,
    parse_attendance,
    parse_event,
    sum_attendance,
)
from protocol.timepoll import SlotChoice, close_time_poll, event_from_choice


class NewEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """POST /api/events: ``start``/``end`` or ``from_poll`` (a decided time poll)."""

    name: str
    start: str | None = None
    end: str | None = None
    from_poll: str | None = None
    location: str | None = None
    url: str | None = None
    capacity: int | None = None
    chapters: list[str] | None = None


class Events:
    """Convenings on one node, region or chapter; built by `setup`."""

    def __init__(self, app: web.Application, clock: Clock = system_clock) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._ledger = services.ledger
        self._me = services.identity.actor
        self._kind = services.identity.kind
        self._clock = clock

    @property
    def _regional(self) -> Any:
        return self._app[REGIONAL_KEY]

    # -- our own entries --------------------------------------------------------------

    async def on_append(self, tx: Tx, appended: Appended) -> None:
        """In the appending transaction: queue our Event / Attendance for delivery."""
        entry = appended.entry
        if entry.get("type") == EVENT_TYPE:
            listed = entry.get("chapters") or []
            targets = {*listed, *await regional_store.accepted_followers(tx)}
        elif entry.get("type") == ATTENDANCE_TYPE:
            held = await event_store.event_by_object_tx(tx, str(entry.get("event")))
            if held is None:
                return
            targets = {held.host, *(held.entry.get("chapters") or [])}
        else:
            return
        await self._regional.queue(tx, appended.seq, targets)

    async def create(self, author: Member, form: NewEvent) -> dict[str, Any]:
        require_role(author, "organizer", "scheduling an event")
        if form.chapters is not None:
            chapters = form.chapters
        elif self._kind == "region":
            chapters = await self._regional.default_chapters()
        else:
            chapters = []  # a chapter's own local convening
        terms: dict[str, Any] = {
            "location": form.location or None,
            "url": form.url or None,
            "capacity": form.capacity,
            "chapters": chapters,
        }
        if form.from_poll is not None:
            if form.start is not None or form.end is not None:
                raise BadRequest("give either from_poll or start and end, not both")
            body = event_from_choice(await self.poll_choice(form.from_poll), form.name, **terms)
        elif form.start is None or form.end is None:
            raise BadRequest("an event needs start and end (RFC 3339), or from_poll")
        else:
            start = rfc3339(parse_rfc3339(form.start, field="start"))
            end = rfc3339(parse_rfc3339(form.end, field="end"))
            body = event_body(form.name, start, end, **terms)
        async with self._db.write() as tx:
            appended = await self._ledger.append_in(tx, body)
            held = HeldEvent(
                event_store.event_id(appended.digest),
                appended.entry["id"],
                self._me,
                appended.seq,
                appended.digest,
                appended.entry,
                form.from_poll,
            )
            await event_store.put_event(tx, held, self._clock())
        return await self.view(held.id, author)

    async def poll_choice(self, proposal_id: str) -> SlotChoice:
        """Close a decided time poll over the tallies held here; 409 on a tie or failure."""
        row = await proposal_store.get_proposal(self._db, proposal_id)
        if row is None:
            raise NotFound(f"no proposal {proposal_id!r}")
        if row["status"] != "decided":
            why = f"time poll {proposal_id} is {row['status']}; it closes into a date once decided"
            raise Conflict(why)
        spec = msgspec.json.decode(row["spec"], type=ballots.ProposalSpec)
        object_id = str(row["object_id"])
        if spec.scope == "regional":
            q = await regional_store.question(self._db, object_id)
            if q is None:
                raise Conflict(f"the region's question for {proposal_id} is not held here")
            spec, proposal_digest = ballots.parse_spec(q.entry), q.digest
            held = await regional_store.tallies(self._db, object_id)
            pairs = [(t.digest, protocol_tally.parse_tally(t.entry)) for t in held]
        else:
            entry = msgspec.json.decode(row["tally"])
            pairs = [(canonical.digest(entry), protocol_tally.parse_tally(entry))]
            proposal_digest = row["question_digest"]
            if proposal_digest is None:
                async with self._db.write() as tx:
                    proposal_digest = await chain_store.digest_at(tx, row["question_seq"])
        choice = close_time_poll(spec, pairs, proposal=object_id, proposal_digest=proposal_digest)
        if choice.result == "tie":
            slots = ", ".join(choice.tied)
            raise Conflict(
                f"time poll {proposal_id} is a tie between {slots} ({choice.reason});"
                " choose one and give it as start and end",
                code="tie",
            )
        if choice.result == "failed":
            raise Conflict(f"time poll {proposal_id} chose no slot: {choice.reason}", code="failed")
        return choice

    async def rsvp(self, member: Member, local_id: str, answer: str) -> dict[str, Any]:
        if answer not in RSVP_ANSWERS:
            raise BadRequest(f"answer must be one of {', '.join(RSVP_ANSWERS)}, not {answer!r:.40}")
        held = await self._event(local_id)
        if self._me not in (parse_event(held.entry).chapters or (held.host,)):
            why = f"this node does not report attendance for {local_id}; its invited chapters do"
            raise Conflict(why, code="not_invited")
        async with self._db.write() as tx:
            mine = [
                c for c in await event_store.counts_tx(tx, held.object_id) if c.chapter == self._me
            ]
            if mine:
                raise Conflict(
                    f"this chapter signed its attendance for {local_id} at seq {mine[0].seq};"
                    " answers are closed",
                    code="reported",
                )
            await event_store.put_rsvp(tx, held.object_id, member.id, answer, self._clock())
        return await self.view(local_id, member)

    async def sign_attendance(self, author: Member, local_id: str) -> dict[str, Any]:
        require_role(author, "organizer", "signing the attendance count")
        held = await self._event(local_id)
        ev = parse_event(held.entry)
        if self._me not in (ev.chapters or (held.host,)):
            raise Conflict(f"event {local_id} does not invite this chapter", code="not_invited")
        async with self._db.write() as tx:
            mine = [
                c for c in await event_store.counts_tx(tx, held.object_id) if c.chapter == self._me
            ]
            if mine:
                why = f"this chapter already signed its count for {local_id} at seq {mine[0].seq}"
                raise Conflict(why, code="already_reported")
            chain = [
                msgspec.json.decode(blob)
                for blob in await chain_store.entries_in(tx, ("RosterChange",))
            ]
            on_roster = roster.roster_at(chain)
            answers = [
                (m, a) for m, a in await event_store.rsvps_tx(tx, held.object_id) if m in on_roster
            ]
            body = attendance_body(
                held.object_id, held.digest, count_rsvps(answers), members=len(on_roster)
            )
            appended = await self._ledger.append_in(tx, body)
            count = HeldCount(self._me, appended.seq, appended.digest, appended.entry)
            await event_store.put_count(tx, held.object_id, count, self._clock())
        return await self.view(local_id, author)

    # -- entries from elsewhere (Regional.register: inbox and catch-up) ---------------

    async def ingest_event(self, entry: dict[str, Any]) -> None:
        host, seq, digest = await self._regional.verified(entry)
        if host == self._me:
            return  # our own, held when appended
        try:
            parse_event(entry)
        except ConveningError as exc:
            raise RejectedEntry("malformed", exc.detail, actor=host, seq=seq) from None
        if host not in await regional_store.followed_regions(self._db):
            why = f"{host} is not a region this node follows"
            raise RejectedEntry("not_followed", why, actor=host, seq=seq)
        held = HeldEvent(event_store.event_id(digest), entry["id"], host, seq, digest, entry, None)
        async with self._db.write() as tx:
            seen = await event_store.event_by_object_tx(tx, held.object_id)
            if seen is None:
                await event_store.put_event(tx, held, self._clock())
        if seen is not None and seen.digest != digest:
            why = f"{held.object_id} is held here as another entry ({seen.digest[:12]}…)"
            raise RejectedEntry("duplicate", why, actor=host, seq=seq)

    async def ingest_attendance(self, entry: dict[str, Any]) -> None:
        # A refusal is kept by Regional's rejection log, under the count's event.
        chapter, seq, digest = await self._regional.verified(entry)
        if chapter != self._me:
            await self._hold_count(entry, chapter, seq, digest)

    async def _hold_count(self, entry: dict[str, Any], chapter: str, seq: int, digest: str) -> None:
        try:
            att = parse_attendance(entry)
        except ConveningError as exc:
            code = "malformed" if exc.code == ConveningError.code else exc.code
            raise RejectedEntry(code, exc.detail, actor=chapter, seq=seq) from None
        held = await event_store.event_by_object(self._db, att.event)
        if held is None:
            hosts = [*await regional_store.followed_regions(self._db), self._me]
            if any(att.event.startswith(h + "/entries/") for h in hosts):
                raise Unready(f"event {att.event} has not arrived yet")
            why = f"{att.event:.200} is no event held here"
            raise RejectedEntry("unknown_event", why, actor=chapter, seq=seq)
        async with self._db.write() as tx:
            others = [c.entry for c in await event_store.counts_tx(tx, held.object_id)]
            try:
                sum_attendance(held.entry, [*others, entry])
            except ConveningError as exc:
                raise RejectedEntry(exc.code, exc.detail, actor=chapter, seq=seq) from None
            count = HeldCount(chapter, seq, digest, entry)
            await event_store.put_count(tx, held.object_id, count, self._clock())

    # -- reading ----------------------------------------------------------------------

    async def _event(self, local_id: str) -> HeldEvent:
        held = await event_store.event(self._db, local_id)
        if held is None:
            raise NotFound(f"no event {local_id!r}")
        return held

    async def all(self) -> list[dict[str, Any]]:
        return [_summary(h) for h in await event_store.all_events(self._db)]

    async def view(self, local_id: str, member: Member | None) -> dict[str, Any]:
        """The event, this node's own answers, and the held signed attendance counts."""
        held = await self._event(local_id)
        ev = parse_event(held.entry)
        counts = await event_store.counts(self._db, held.object_id)
        total = sum_attendance(held.entry, [c.entry for c in counts])
        invited = list(ev.chapters or (held.host,))
        reported = next((c for c in counts if c.chapter == self._me), None)
        answers = await event_store.rsvps(self._db, held.object_id)
        mine = None
        if member is not None:
            mine = await event_store.answer_of(self._db, held.object_id, member.id)
        rejected = [r.to_json() for r in await regional_store.rejections(self._db, held.object_id)]
        # Counts the inbox refused (bad or missing proof) were never stored; the
        # refusal log's metadata still names them, as forged or unsigned.
        for r in await regional_store.refusals(self._db, held.object_id):
            code = regional_store.shown_code(r.code)
            rejected.append({"actor": r.actor, "seq": r.seq, "code": code, "reason": r.reason})
        return {
            **_summary(held),
            "invited": invited,
            "answers": msgspec.to_builtins(count_rsvps(answers)),
            "my_answer": mine,
            "can_report": self._me in invited,
            "reported": None
            if reported is None
            else {"seq": reported.seq, "digest": reported.digest},
            "attendance": msgspec.to_builtins(total),
            "counts": [
                {"chapter": c.chapter, "seq": c.seq, "id": c.entry.get("id"), "digest": c.digest}
                for c in counts
            ],
            "rejected": rejected,
        }


def _summary(held: HeldEvent) -> dict[str, Any]:
    e = held.entry
    location = e.get("location")
    return {
        "id": held.id,
        "object_id": held.object_id,
        "host": held.host,
        "seq": held.seq,
        "digest": held.digest,
        "name": e.get("name"),
        "start": e.get("startTime"),
        "end": e.get("endTime"),
        "location": location.get("name") if isinstance(location, dict) else None,
        "url": e.get("url"),
        "capacity": e.get("maximumAttendeeCapacity"),
        "chapters": list(e.get("chapters") or []),
        "poll": held.poll,
    }


EVENTS_KEY = web.AppKey("convene_events", Events)


def setup(app: web.Application) -> None:
    """Register this feature's schema, inbox handlers and routes (before the app starts).
    Called by node.app.create_app after node.regional.setup."""
    from node import event_api  # the handlers and pages read this module's service
    from node.web.event_pages import add_event_routes

    services = app[SERVICES_KEY]
    services.db.migrations["events"] = event_store.EVENTS_MIGRATIONS
    events = Events(app)
    app[EVENTS_KEY] = events
    services.ledger.on_append.append(events.on_append)
    regional = app[REGIONAL_KEY]
    regional.register(EVENT_TYPE, events.ingest_event, pulled_from_regions=True)
    regional.register(ATTENDANCE_TYPE, events.ingest_attendance)
    event_api.add_routes(app)
    add_event_routes(app)
