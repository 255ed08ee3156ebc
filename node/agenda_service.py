"""The bottom-up agenda on a node: config, submissions, sponsorships, the close and the
computed agenda (docs/protocol.md §10.4, docs/api.md "Agenda").

Theory of operation
-------------------
Agenda entries travel the way regional Questions and Tallies do (node/regional.py):
each is one signed entry of its author's chain, delivered verbatim through the
regional outbox, and every node takes others' entries through ``Regional.verified``
(proof by the key valid at that seq) before checking them with protocol/agenda.py.

- The region signs an ``AgendaConfig``; it goes to the listed chapters.
- A listed chapter signs an ``AgendaSubmission`` or an ``AgendaSponsorship``; it goes
  to the region *and* to every other listed chapter, so every node holds the same set.
- The region signs an ``AgendaClose``; from then on a qualified item without a vote
  is ``dropped`` on every node, because every node holds the same signed close.

A node holds an entry only after it checked it (others' entries: node/agenda_intake.py;
its own: ``on_append``), so the agenda it shows is always ``compute_agenda`` over
checked entries plus the region's Questions carrying ``agenda_item`` that it holds
(node/regional_store.py). Refused entries are kept with their reason by
node/regional.py and listed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web

from node import agenda_store, regional_store
from node.agenda_intake import ENTRY_TYPES as _ENTRY_TYPES
from node.agenda_intake import AgendaIntake
from node.agenda_store import Held
from node.api import SERVICES_KEY
from node.clock import Clock, system_clock
from node.errors import BadRequest, Conflict, Forbidden, NotFound
from node.ledger import Appended
from node.members import Member, require_role
from node.regional import REGIONAL_KEY, Regional
from node.storage import Tx
from protocol import agenda
from protocol.events import ConveningError

log = logging.getLogger("convene.agenda")


class NewAgenda(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    convening: str
    chapters: list[str] | None = None
    min_sponsors: int = 1
    min_share: str = "0/1"


class NewItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: str
    summary: str = ""


def _decode(raw: object, shape: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(raw, shape, strict=True)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{what}: {exc}") from None


class AgendaService:
    """The agenda side of one node (region or chapter)."""

    def __init__(self, app: web.Application, clock: Clock = system_clock) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._ledger = services.ledger
        self._me = services.identity.actor
        self._kind = services.identity.kind
        self._clock = clock

    @property
    def actor(self) -> str:
        return self._me

    @property
    def _regional(self) -> Regional:
        return self._app[REGIONAL_KEY]

    # -- writes by this node's organizers -------------------------------------------

    async def create(self, member: Member, raw: object) -> dict[str, Any]:
        require_role(member, "organizer", "opening an agenda")
        if self._kind != "region":
            raise Forbidden("only a region opens a regional agenda")
        new: NewAgenda = _decode(raw, NewAgenda, "a new agenda")
        chapters = new.chapters
        if chapters is None:
            chapters = await self._regional.default_chapters()
            if not chapters:
                raise Conflict("no chapter follows this region yet; list chapters")
        try:
            body = agenda.config_body(
                new.convening, chapters, min_sponsors=new.min_sponsors, min_share=new.min_share
            )
        except ConveningError as exc:
            raise BadRequest(exc.detail, code="bad_agenda") from None
        appended = await self._ledger.append(body)
        return await self.view(appended.digest)

    async def submit(self, member: Member, config: str, raw: object) -> dict[str, Any]:
        require_role(member, "organizer", "submitting an agenda item")
        cfg = await self._listed_config(config)
        new: NewItem = _decode(raw, NewItem, "a new item")
        try:
            body = agenda.submission_body(cfg.actor, cfg.digest, new.title.strip(), new.summary)
        except ConveningError as exc:
            raise BadRequest(exc.detail, code="bad_agenda") from None
        await self._open(cfg)
        appended = await self._ledger.append(body)
        return {"item": appended.digest, "config": cfg.digest, "entry": appended.entry["id"]}

    async def sponsor(self, member: Member, config: str, item: str) -> dict[str, Any]:
        require_role(member, "organizer", "sponsoring an agenda item")
        cfg = await self._listed_config(config)
        held = await agenda_store.entry(self._db, item)
        if held is None or held.type != agenda.SUBMISSION_TYPE or held.config != cfg.digest:
            raise NotFound(f"no item {item!r:.80} on agenda {cfg.digest}")
        current = await self.view(cfg.digest)
        mine = next(i for i in current["items"] if i["item"] == item)
        if self._me in mine["sponsors"]:
            raise Conflict(f"this chapter already sponsors item {item}", code="already_sponsored")
        await self._open(cfg)
        body = agenda.sponsorship_body(cfg.actor, cfg.digest, item)
        appended = await self._ledger.append(body)
        return {"item": item, "config": cfg.digest, "entry": appended.entry["id"]}

    async def close(self, member: Member, config: str) -> dict[str, Any]:
        require_role(member, "organizer", "closing an agenda")
        cfg = await self._config(config)
        if cfg.actor != self._me:
            raise Forbidden(f"only {cfg.actor}, which opened this agenda, closes it")
        await self._open(cfg)
        await self._ledger.append(agenda.close_body(cfg.digest))
        return await self.view(cfg.digest)

    async def _config(self, config: str) -> Held:
        cfg = await agenda_store.config(self._db, config)
        if cfg is None:
            raise NotFound(f"no agenda {config!r:.80} held here")
        return cfg

    async def _listed_config(self, config: str) -> Held:
        cfg = await self._config(config)
        if self._kind != "chapter" or self._me not in cfg.entry.get("chapters", []):
            raise Forbidden(f"this node is not a chapter listed on agenda {cfg.digest}")
        return cfg

    async def _open(self, cfg: Held) -> None:
        closes = [h for h in await agenda_store.of_config(self._db, cfg.digest)]
        if any(h.type == agenda.CLOSE_TYPE for h in closes):
            raise Conflict(f"agenda {cfg.digest} is closed", code="agenda_closed")

    # -- our own entries: held and queued in the appending transaction ---------------

    async def on_append(self, tx: Tx, appended: Appended) -> None:
        entry = appended.entry
        kind = entry.get("type")
        if kind == agenda.CONFIG_TYPE:
            config = appended.digest
            targets = set(entry["chapters"])
        elif kind in _ENTRY_TYPES:
            config = str(entry["config"])
            held_cfg = await agenda_store.config_tx(tx, config)
            if held_cfg is None:  # only an entry our API would refuse; let its region judge
                region = entry.get("region")
                targets = {region} if isinstance(region, str) else set()
            else:
                targets = {held_cfg.actor, *held_cfg.entry["chapters"]}
        else:
            return
        item = entry.get("item") if kind == agenda.SPONSORSHIP_TYPE else None
        held = Held(appended.digest, config, str(kind), self._me, appended.seq, item, entry)
        if await self._own_is_valid(tx, held):
            await agenda_store.put(tx, held, self._clock())
        await self._regional.queue(tx, appended.seq, targets)

    async def _own_is_valid(self, tx: Tx, held: Held) -> bool:
        """Our API signs only valid entries; one signed some other way (by hand, or a
        faulty tool) is delivered for the others to judge but never held here, so
        it cannot reach this node's agenda through the back door."""
        cfg = await agenda_store.config_tx(tx, held.config)
        try:
            if held.type == agenda.CONFIG_TYPE:
                agenda.parse_config(held.entry)
            elif cfg is None:
                return False
            elif held.type == agenda.SUBMISSION_TYPE:
                agenda.parse_submission(cfg.entry, held.entry)
            elif held.type == agenda.SPONSORSHIP_TYPE:
                agenda.parse_sponsorship(cfg.entry, held.entry)
                sub = await agenda_store.entry_tx(tx, str(held.item))
                if sub is None or sub.type != agenda.SUBMISSION_TYPE or sub.config != cfg.digest:
                    raise ConveningError(f"sponsors {held.item}, no item of this agenda")
            else:
                agenda.parse_close(cfg.entry, held.entry)
        except ConveningError as exc:
            log.warning("own %s at seq %d not held: %s", held.type, held.seq, exc.detail)
            return False
        return True

    # -- reading ---------------------------------------------------------------------

    async def view(self, config: str) -> dict[str, Any]:
        """The agenda as this node computes it from the signed entries it holds."""
        cfg = await self._config(config)
        held = await agenda_store.of_config(self._db, cfg.digest)
        by_type: dict[str, list[dict[str, Any]]] = {t: [] for t in _ENTRY_TYPES}
        for h in held:
            by_type[h.type].append(h.entry)
        closes = [h for h in held if h.type == agenda.CLOSE_TYPE]
        questions = [q.entry for q in await regional_store.questions(self._db)]
        voted = agenda.items_voted(cfg.actor, questions)
        subs, sps = agenda.before_close(
            by_type[agenda.SUBMISSION_TYPE],
            by_type[agenda.SPONSORSHIP_TYPE],
            by_type[agenda.CLOSE_TYPE],
        )
        computed = agenda.compute_agenda(
            cfg.entry,
            subs,
            sps,
            voted,
            closed=agenda.closed_by(cfg.entry, by_type[agenda.CLOSE_TYPE]),
        )
        proposals = await self._proposals_for(cfg.actor, questions)
        items = []
        for it in computed.items:
            out = msgspec.to_builtins(it)
            out["proposal"] = proposals.get(it.item)
            items.append(out)
        first_close = min(closes, key=lambda h: h.seq) if closes else None
        return {
            "config": cfg.digest,
            "region": cfg.actor,
            "seq": cfg.seq,
            "convening": cfg.entry["convening"],
            "chapters": list(cfg.entry["chapters"]),
            "min_sponsors": cfg.entry.get("min_sponsors", 1),
            "min_share": cfg.entry.get("min_share", "0/1"),
            "needed": computed.needed,
            "closed": computed.closed,
            "close": None
            if first_close is None
            else {"seq": first_close.seq, "id": first_close.entry.get("id")},
            "items": items,
            "dropped": [i.item for i in computed.dropped],
        }

    async def _proposals_for(
        self, region: str, questions: list[dict[str, Any]]
    ) -> dict[str, str | None]:
        """This node's proposal id of each item's Question, where it holds one."""
        found: dict[str, str | None] = {}
        for q in questions:
            item = q.get("agenda_item")
            if q.get("actor") != region or not isinstance(item, str):
                continue
            row = await regional_store.proposal_by_object(self._db, str(q.get("id")))
            found[item] = None if row is None else str(row["id"])
        return found

    async def all(self) -> list[dict[str, Any]]:
        return [await self.view(c.digest) for c in await agenda_store.configs(self._db)]

    async def refused(self) -> list[dict[str, Any]]:
        """Agenda entries not taken, newest first; the inbox's own codes for a proof
        that does not verify (or by a key not valid at that seq) read as forged."""
        out = []
        for r in await agenda_store.refused(self._db):
            view = r.to_json()
            view["code"] = regional_store.shown_code(r.code)
            out.append(view)
        return out


AGENDA_KEY = web.AppKey("convene_agenda", AgendaService)
INTAKE_KEY = web.AppKey("convene_agenda_intake", AgendaIntake)


async def _catch_up_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[INTAKE_KEY].run(), name="agenda-catch-up")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(app: web.Application) -> None:
    """Register this feature's schema, inbox handlers and routes (before the app starts).
    Called by node.app.create_app after node.regional.setup."""
    from node import agenda_api  # the handlers read this module's service
    from node.web import agenda_pages

    services = app[SERVICES_KEY]
    services.db.migrations["agenda"] = agenda_store.AGENDA_MIGRATIONS
    svc = AgendaService(app)
    app[AGENDA_KEY] = svc
    intake = AgendaIntake(app)
    app[INTAKE_KEY] = intake
    services.ledger.on_append.append(svc.on_append)
    regional = app[REGIONAL_KEY]
    regional.register(agenda.CONFIG_TYPE, intake.ingest, pulled_from_regions=True)
    regional.register(agenda.CLOSE_TYPE, intake.ingest, pulled_from_regions=True)
    regional.register(agenda.SUBMISSION_TYPE, intake.ingest)
    regional.register(agenda.SPONSORSHIP_TYPE, intake.ingest)
    app.cleanup_ctx.append(_catch_up_ctx)
    agenda_api.add_routes(app)
    agenda_pages.add_routes(app)
