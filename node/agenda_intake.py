"""Other nodes' agenda entries on this node: the inbox's and the catch-up's way in
(docs/protocol.md §10.4 "Delivery").

Every entry goes through node/regional.py's ``Regional.verified`` (proof by the key
valid at its seq in its author's chain) and then protocol/agenda.py's checks before
it is held; a refusal is a ``RejectedEntry`` with a code, kept by node/regional.py
with its actor, seq and reason. A sponsorship whose item, or an entry whose config,
has not arrived yet is ``Unready``: the inbox retries it. Deliveries are retried for
days, but a node back from a stop pulls what it missed from the outboxes of each
held agenda's region and listed chapters (``catch_up``) instead of waiting on
another node's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from federation.errors import FederationError
from node import agenda_store, regional_store
from node.agenda_store import Held
from node.api import SERVICES_KEY
from node.clock import Clock, system_clock
from node.federation_glue import ACTORS_KEY
from node.regional import REGIONAL_KEY, Regional, RejectedEntry, Unready
from protocol import agenda, canonical
from protocol.errors import ProtocolError
from protocol.events import ConveningError

log = logging.getLogger("convene.agenda")

CATCH_UP_AFTER_S = 2.0  # after start: Regional pulls the followed regions' configs first
# Then open agendas are pulled again this often. Deliveries are durable and retried for
# days and a restart pulls at once, so this only mends a delivery lost for good; each
# pass reads the region's and every listed chapter's whole chain, which on a small
# machine with many chapters is not free.
CATCH_UP_EVERY_S = 900.0
ENTRY_TYPES = (agenda.SUBMISSION_TYPE, agenda.SPONSORSHIP_TYPE, agenda.CLOSE_TYPE)


class AgendaIntake:
    """Takes, checks and holds other nodes' agenda entries."""

    def __init__(self, app: web.Application, clock: Clock = system_clock) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._me = services.identity.actor
        self._clock = clock

    @property
    def _regional(self) -> Regional:
        return self._app[REGIONAL_KEY]

    async def ingest(self, entry: dict[str, Any]) -> None:
        actor, seq, digest = await self._regional.verified(entry)
        if actor == self._me:
            return  # our own, held when appended
        kind = str(entry.get("type"))
        try:
            if kind == agenda.CONFIG_TYPE:
                held = await self._take_config(entry, actor, seq, digest)
            else:
                held = await self._take_entry(entry, kind, actor, seq, digest)
        except ConveningError as exc:
            raise RejectedEntry("malformed", exc.detail, actor=actor, seq=seq) from None
        async with self._db.write() as tx:
            await agenda_store.put(tx, held, self._clock())

    async def _take_config(self, entry: dict[str, Any], actor: str, seq: int, digest: str) -> Held:
        if actor not in await regional_store.followed_regions(self._db):
            why = f"{actor} is not a region this node follows"
            raise RejectedEntry("not_followed", why, actor=actor, seq=seq)
        agenda.parse_config(entry)
        return Held(digest, digest, agenda.CONFIG_TYPE, actor, seq, None, entry)

    async def _take_entry(
        self, entry: dict[str, Any], kind: str, actor: str, seq: int, digest: str
    ) -> Held:
        config = entry.get("config")
        cfg = await agenda_store.config(self._db, config) if isinstance(config, str) else None
        if cfg is None:
            region = entry.get("region", actor if kind == agenda.CLOSE_TYPE else None)
            known = [*await regional_store.followed_regions(self._db), self._me]
            if region in known and region != self._me:
                raise Unready(f"agenda config {config!r:.80} has not arrived yet")
            why = f"names agenda config {config!r:.80}, which {self._me} does not hold"
            raise RejectedEntry("unknown_config", why, actor=actor, seq=seq)
        # The two refusals a listed chapter's honest node never causes, named apart from
        # a malformed body: an entry for another agenda, and a chapter not listed.
        if kind == agenda.CLOSE_TYPE and actor != cfg.actor:
            why = f"only {cfg.actor}, which opened agenda {cfg.digest}, closes it"
            raise RejectedEntry("not_region", why, actor=actor, seq=seq)
        if kind != agenda.CLOSE_TYPE and entry.get("region") != cfg.actor:
            why = (
                f"addressed to region {entry.get('region')!r:.200} with agenda {cfg.digest}, "
                f"which {cfg.actor} opened"
            )
            raise RejectedEntry("misaddressed", why, actor=actor, seq=seq)
        if kind != agenda.CLOSE_TYPE and actor not in cfg.entry["chapters"]:
            why = f"{actor} is not among the chapters listed on agenda {cfg.digest}"
            raise RejectedEntry("not_listed", why, actor=actor, seq=seq)
        item = None
        if kind == agenda.SUBMISSION_TYPE:
            agenda.parse_submission(cfg.entry, entry)
        elif kind == agenda.SPONSORSHIP_TYPE:
            sp = agenda.parse_sponsorship(cfg.entry, entry)
            item = sp.item
            sub = await agenda_store.entry(self._db, sp.item)
            if sub is None:
                raise Unready(f"item {sp.item} has not arrived yet")
            if sub.type != agenda.SUBMISSION_TYPE or sub.config != cfg.digest:
                why = f"sponsors {sp.item}, which is no item of agenda {cfg.digest}"
                raise RejectedEntry("misaddressed", why, actor=actor, seq=seq)
        else:
            agenda.parse_close(cfg.entry, entry)
        return Held(digest, cfg.digest, kind, actor, seq, item, entry)

    # -- catch-up: what a node that was down, or a lost delivery, missed --------------

    async def catch_up(self, *, open_only: bool = False) -> int:
        """Pull every held agenda's entries from the outboxes of its region and listed
        chapters and take them through `ingest`, as if they had arrived; how many
        entries were offered. Deliveries are retried for days, but a node back from a
        long stop should not wait on another's backoff to show the same agenda."""
        actors = self._app[ACTORS_KEY]
        waiting: list[dict[str, Any]] = []
        offered = 0
        for cfg in await agenda_store.configs(self._db):
            held = await agenda_store.of_config(self._db, cfg.digest)
            if open_only and any(h.type == agenda.CLOSE_TYPE for h in held):
                continue
            have = {h.digest for h in held}
            for actor_id in sorted({cfg.actor, *cfg.entry["chapters"]} - {self._me}):
                try:
                    chain = await actors.chain(await actors.get(actor_id))
                except (FederationError, ProtocolError) as exc:
                    log.info("agenda catch-up: the chain of %s is out of reach: %s", actor_id, exc)
                    continue
                for entry in chain:
                    if entry.get("type") not in ENTRY_TYPES or entry.get("config") != cfg.digest:
                        continue
                    with contextlib.suppress(ProtocolError):
                        if canonical.digest(entry) in have:
                            continue
                    offered += 1
                    try:
                        await self._regional.receive(entry)
                    except Unready:
                        waiting.append(entry)  # its item comes from a chapter pulled later
        for entry in waiting:
            with contextlib.suppress(Unready):
                await self._regional.receive(entry)
        return offered

    async def run(self) -> None:
        await asyncio.sleep(CATCH_UP_AFTER_S)  # after Regional's own catch-up pulled configs
        open_only = False
        while True:
            try:
                await self.catch_up(open_only=open_only)
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("agenda catch-up failed")
            open_only = True
            await asyncio.sleep(CATCH_UP_EVERY_S)
