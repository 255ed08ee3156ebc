"""The regional background loop: delivering our regional chain entries, settling due
proposals, and catching up on what was missed (docs/protocol.md §8.4, §9.5).

Theory of operation
-------------------
An entry to deliver is queued per target actor id in the transaction that appends it
(`regional_outbox`, node/regional.py `queue`); this loop resolves each target to its
inbox and hands the entry to federation's durable delivery queue, retrying an
unreachable target with backoff. Each pass then lets node/regional.py settle what is
due. A node that was down pulls, on start, the followed regions' and the listed
chapters' outboxes and feeds those entries through the very same checks
(`Regional.receive`); while a proposal is overdue and unsettled it pulls again every
`PULL_EVERY_S`, as when a delivery was lost for good.

Convene nodes take chain entries bare: the entry is the signed object, checked by its
proof. Servers of the wider fediverse (Mastodon and its kin, Mobilizon) act only on
activities: a bare `Question` or `Event` is dropped there. So for a target whose actor
document is not a convene node's (no `kind`), an AS2 object entry is wrapped in a
`Create` activity by the entry's author, addressed as those servers expect (public,
cc the author's followers); the `object` is the entry verbatim, proof included, so
whoever wants can still check it. Other entry types (tallies, decisions, grants...)
mean nothing outside convene and go out bare, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from federation import store as fed_store
from federation.errors import FederationError
from node import regional_store
from node.api import SERVICES_KEY
from node.federation_glue import wake_delivery
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from node.regional import Regional  # which builds this

log = logging.getLogger("convene.regional")

TICK_S = 1.0  # the outbox and the deadlines are looked at this often at least
MAX_BACKOFF_S = 60.0
PULL_EVERY_S = 30.0  # an unsettled, overdue proposal pulls the outboxes this often
# what catch-up pulls from a listed member's chain: a chapter's tallies; a lower
# region's Level and Decision, its input upward (§10.6)
PULLED: Final = ("Tally", "Level", "Decision")

AS2: Final = "https://www.w3.org/ns/activitystreams"
PUBLIC: Final = f"{AS2}#Public"
# Entry types that are AS2 objects a fediverse server shows (as a poll, as an event).
WRAPPED_TYPES: Final = frozenset({"Question", "Event"})


def for_fediverse(entry: dict[str, Any], followers: str) -> dict[str, Any] | None:
    """The `Create` activity carrying `entry` to a fediverse server, or None when the
    entry is not an AS2 object such a server shows (it then goes out bare)."""
    if entry.get("type") not in WRAPPED_TYPES:
        return None
    return {
        "@context": AS2,
        "id": f"{entry['id']}#create",
        "type": "Create",
        "actor": entry["actor"],
        "published": entry["published"],
        "to": [PUBLIC],
        "cc": [followers],
        "object": entry,
    }


class RegionalOutbox:
    """The regional loop of one node, built by node/regional.py's `Regional`."""

    def __init__(self, app: web.Application, regional: Regional) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._regional = regional
        self._db = services.db
        self._ledger = services.ledger
        self._me = services.identity.actor
        self._followers = f"{services.identity.url.rstrip('/')}/followers"
        self.wake = asyncio.Event()

    def _clock(self) -> float:
        return self._regional.clock()

    def wake_soon(self) -> None:
        """Run a pass shortly (after the appending transaction has committed)."""
        asyncio.get_running_loop().call_later(0.05, self.wake.set)

    async def run(self) -> None:
        await asyncio.sleep(0.2)  # let the node's server come up first
        await self.catch_up()
        next_pull = self._clock() + PULL_EVERY_S
        while True:
            self.wake.clear()
            try:
                await self.publish_due()
                await self._regional.settle_due()
                if self._clock() >= next_pull:
                    next_pull = self._clock() + PULL_EVERY_S
                    await self.catch_up(overdue_only=True)
            except Exception:  # keep the loop alive; the next tick retries
                log.exception("regional pass failed")
            await fed_store.nap(self.wake, TICK_S)  # never swallows a cancellation

    async def publish_due(self) -> None:
        """Resolve queued targets to inboxes and hand the entries to the durable queue."""
        now = self._clock()
        by_seq: dict[int, list[tuple[str, int]]] = {}
        for seq, target, attempts in await regional_store.due_targets(self._db, now):
            by_seq.setdefault(seq, []).append((target, attempts))
        for seq, targets in by_seq.items():
            (entry,) = await self._ledger.entries(seq, 1)
            wrapped = for_fediverse(entry, self._followers)
            found: list[fed_store.Recipient] = []
            foreign: list[fed_store.Recipient] = []
            done: list[str] = []
            failed: list[tuple[str, int]] = []
            for target, attempts in targets:
                try:
                    actor = await self._regional.actors.get(target)
                except (FederationError, ProtocolError) as exc:
                    log.info("recipient %s of seq %d not reachable yet: %s", target, seq, exc)
                    failed.append((target, attempts + 1))
                    continue
                recipient = fed_store.Recipient(actor.inbox, actor.shared_inbox)
                # A fediverse server (no convene `kind`) acts on activities only (§9.5).
                (foreign if actor.kind is None and wrapped else found).append(recipient)
                done.append(target)
            async with self._db.write() as tx:
                if found:
                    await fed_store.enqueue(tx.connection, entry, found)
                if foreign and wrapped is not None:
                    await fed_store.enqueue(tx.connection, wrapped, foreign)
                await regional_store.done_targets(tx, seq, done)
                for target, attempts in failed:
                    later = now + min(MAX_BACKOFF_S, 2.0**attempts)
                    await regional_store.retry_target(tx, seq, target, attempts, later)
            if found or foreign:
                wake_delivery(self._app)

    async def catch_up(self, *, overdue_only: bool = False) -> None:
        """Pull what may have been missed while down: the followed regions' Questions and
        Decisions, then the listed chapters' tallies for every unsettled proposal. With
        `overdue_only` (the periodic pass) only when some proposal is past its
        `tallies_due` and still unsettled, as when a delivery was lost for good."""
        wanted: set[str] = set()
        chapters: set[str] = set()
        for q in await regional_store.questions(self._db):
            row = await regional_store.proposal_by_object(self._db, q.object_id)
            if row is not None and row["status"] == "decided" and row["verification"]:
                continue
            if overdue_only and (q.due_ts is None or not 0 <= self._clock() - q.due_ts < 86400):
                continue  # not overdue, or given up on after a day (a region gone for good)
            wanted.add(q.object_id)
            chapters |= set(self._regional.spec(q).chapters)
        chapters.discard(self._me)
        if overdue_only and not wanted:
            return
        pulled = self._regional.pulled_from_regions
        for region in await regional_store.followed_regions(self._db):
            await self._pull(region, lambda e: e.get("type") in pulled)
        for chapter in sorted(chapters):
            await self._pull(  # a listed lower region's Decision is its tally (§10.6)
                chapter,
                lambda e: e.get("type") in PULLED and e.get("proposal") in wanted,
            )

    async def _pull(self, actor_id: str, keep: Callable[[dict[str, Any]], bool]) -> None:
        try:
            chain = await self._regional.actors.chain(await self._regional.actors.get(actor_id))
        except (FederationError, ProtocolError) as exc:
            log.info("catch-up: the chain of %s is out of reach: %s", actor_id, exc)
            return
        for entry in chain:
            if not isinstance(entry, dict) or not keep(entry):
                continue
            try:
                await self._regional.receive(entry)
            except Exception as exc:  # one entry must not stop the rest; the inbox retries
                log.info("catch-up: %s not taken yet: %s", entry.get("id"), exc)
