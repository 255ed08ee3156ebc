"""Partner facilitation: a region grants a facilitator on another node, whose signed requests it
carries out (docs/protocol.md §10.7).

Theory of operation
-------------------
The region stays the only author of its chain. Its organizer grants the role with a
``FacilitatorGrant`` entry and takes it back with a ``FacilitatorRevoke``; both go to
the facilitator and the region's accepted followers. The facilitator, an organizer on
its own node, signs a ``FacilitationRequest`` in its own chain, delivered to the region.

On the region, node/facilitation_requests.py carries a request out (checked against
the region's own grants, at most once) or refuses it with a code and a reason naming
actor and seq, listed by ``GET /api/facilitation``. Grants, revocations and requests
are serialized by one lock, so no revocation slips between the check and the Question.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from aiohttp import web

from node import facilitation_store, regional_store
from node.api import SERVICES_KEY, authenticate, json_response, read_body
from node.errors import BadRequest, Conflict, NotFound
from node.facilitation_requests import RequestCarrier, refusal
from node.ledger import Appended
from node.members import Member, require_role
from node.proposal_forms import decode_new_proposal
from node.regional import REGIONAL_KEY, Regional, RejectedEntry
from node.storage import Tx
from node.web.facilitation_pages import add_facilitation_routes
from protocol import facilitation as rule
from protocol.facilitation import FacilitationError

log = logging.getLogger("convene.facilitation")


class GrantForm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    actor: str
    convening: str | None = None


class RequestForm(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    region: str
    action: str
    body: dict[str, Any]
    grant: str | None = None


def _decode(data: bytes, shape: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(data, type=shape)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


class Facilitation:
    """Partner facilitation on one node, region or facilitator alike."""

    def __init__(self, app: web.Application) -> None:
        services = app[SERVICES_KEY]
        self._app = app
        self._db = services.db
        self._ledger = services.ledger
        self._me = services.identity.actor
        self._kind = services.identity.kind
        # one lock for grants, revocations and carrying out requests (see the carrier)
        self._lock = asyncio.Lock()
        self.carrier = RequestCarrier(app, self._lock)

    # -- the region's organizer -----------------------------------------------------

    async def grant(self, member: Member, actor: str, convening: str | None) -> dict[str, Any]:
        require_role(member, "organizer", "granting the facilitator role")
        if self._kind != "region":
            raise BadRequest("only a region grants the facilitator role")
        if actor == self._me:
            raise BadRequest("a region cannot grant the facilitator role to itself")
        try:
            body = rule.grant_body(actor, convening)
        except FacilitationError as exc:
            raise BadRequest(exc.detail) from None
        async with self._lock:
            if await facilitation_store.grants_for(self._db, self._me, actor):
                raise Conflict(f"{actor} already holds a grant in force; revoke it first")

            async def extra(tx: Tx, appended: Appended) -> None:
                await facilitation_store.put_grant(
                    tx,
                    digest=appended.digest,
                    region=self._me,
                    seq=appended.seq,
                    facilitator=actor,
                    convening=convening,
                    granted_by=member.id,
                    entry=appended.entry,
                )
                targets = {actor, *await regional_store.accepted_followers(tx)}
                await self._regional.queue(tx, appended.seq, targets)

            appended = await self._ledger.append(body, extra)
        log.info("granted %s the facilitator role at seq %d", actor, appended.seq)
        found = await facilitation_store.grant(self._db, appended.digest)
        assert found is not None
        return found.to_json()

    async def revoke(self, member: Member, grant: str) -> dict[str, Any]:
        require_role(member, "organizer", "revoking the facilitator role")
        async with self._lock:
            held = await facilitation_store.grant(self._db, grant)
            if held is None or held.region != self._me:
                raise NotFound(f"no grant {grant[:80]!r} of this region")
            if held.revoked_seq is not None:
                raise Conflict(f"grant {grant} was already revoked at seq {held.revoked_seq}")

            async def extra(tx: Tx, appended: Appended) -> None:
                await facilitation_store.put_revoke(
                    tx, region=self._me, grant=grant, seq=appended.seq, entry=appended.entry
                )
                targets = {held.facilitator, *await regional_store.accepted_followers(tx)}
                await self._regional.queue(tx, appended.seq, targets)

            await self._ledger.append(rule.revoke_body(grant), extra)
        found = await facilitation_store.grant(self._db, grant)
        assert found is not None
        return found.to_json()

    # -- the facilitator's organizer ------------------------------------------------

    async def request(
        self,
        member: Member,
        region: str,
        action: str,
        fields: dict[str, Any],
        grant: str | None = None,
    ) -> dict[str, Any]:
        """Sign a request of `region` (with our newest grant in force from it unless
        `grant` names one; the region judges either way) and queue it for the region."""
        require_role(member, "organizer", "making a facilitation request")
        if grant is None:
            held = await facilitation_store.grants_for(self._db, region, self._me)
            if not held:
                raise Conflict(f"this node holds no grant in force from {region}")
            grant = held[0].digest
        try:
            body = rule.request_body(region, grant, action, fields)
        except FacilitationError as exc:
            raise BadRequest(exc.detail) from None
        if action == "propose":
            decode_new_proposal(msgspec.json.encode(fields))  # the region's own first check

        async def extra(tx: Tx, appended: Appended) -> None:
            await facilitation_store.put_request(
                tx,
                digest=appended.digest,
                entry=appended.entry,
                region=region,
                grant=grant,
                action=action,
                outcome="sent",
                object_id=None,
                now=time.time(),
            )
            await self._regional.queue(tx, appended.seq, {region})

        appended = await self._ledger.append(body, extra)
        found = await facilitation_store.request(self._db, appended.digest)
        assert found is not None
        return found.to_json()

    # -- incoming grants and revocations (node/regional.py's intake) ----------------

    @property
    def _regional(self) -> Regional:
        return self._app[REGIONAL_KEY]

    async def ingest_grant(self, entry: dict[str, Any]) -> None:
        actor, seq, digest = await self._regional.verified(entry)
        if actor == self._me:
            return  # our own, pulled back
        try:
            _, grant = rule.parse_grant(entry)
        except FacilitationError as exc:
            raise refusal(exc) from None
        if grant.facilitator != self._me and actor not in await self._followed():
            why = f"grants {grant.facilitator}, from a region this node does not follow"
            raise RejectedEntry("misaddressed", why, actor=actor, seq=seq)
        async with self._db.write() as tx:
            await facilitation_store.put_grant(
                tx,
                digest=digest,
                region=actor,
                seq=seq,
                facilitator=grant.facilitator,
                convening=grant.convening,
                granted_by=None,
                entry=entry,
            )

    async def ingest_revoke(self, entry: dict[str, Any]) -> None:
        actor, seq, _ = await self._regional.verified(entry)
        if actor == self._me:
            return
        try:
            _, revoke = rule.parse_revoke(entry)
        except FacilitationError as exc:
            raise refusal(exc) from None
        held = await facilitation_store.grant(self._db, revoke.grant)
        if (held is None or held.region != actor) and actor not in await self._followed():
            why = f"revokes grant {revoke.grant}, which this node does not hold from {actor}"
            raise RejectedEntry("misaddressed", why, actor=actor, seq=seq)
        async with self._db.write() as tx:
            await facilitation_store.put_revoke(
                tx, region=actor, grant=revoke.grant, seq=seq, entry=entry
            )

    async def _followed(self) -> list[str]:
        return await regional_store.followed_regions(self._db)

    # -- reading --------------------------------------------------------------------

    async def view(self) -> dict[str, Any]:
        grants = await facilitation_store.grants(self._db)
        refusals = await facilitation_store.refusals(self._db)
        for r in refusals:
            r["code"] = regional_store.shown_code(r["code"])
        return {
            "actor": self._me,
            "kind": self._kind,
            "granted": [g.to_json() for g in grants if g.region == self._me],
            "held": [g.to_json() for g in grants if g.facilitator == self._me],
            "known": [g.to_json() for g in grants if self._me not in (g.region, g.facilitator)],
            "requests": [r.to_json() for r in await facilitation_store.requests(self._db)],
            "rejected": refusals,
        }


FACILITATION_KEY = web.AppKey("convene_facilitation", Facilitation)


async def _grant_view(request: web.Request) -> web.Response:
    member = await authenticate(request)
    form: GrantForm = _decode(await read_body(request), GrantForm, "grant")
    grant = await request.app[FACILITATION_KEY].grant(member, form.actor, form.convening)
    return json_response(grant, status=201)


async def _revoke_view(request: web.Request) -> web.Response:
    member = await authenticate(request)
    grant = request.match_info["grant"]
    return json_response(await request.app[FACILITATION_KEY].revoke(member, grant))


async def _request_view(request: web.Request) -> web.Response:
    member = await authenticate(request)
    form: RequestForm = _decode(await read_body(request), RequestForm, "request")
    service = request.app[FACILITATION_KEY]
    sent = await service.request(member, form.region, form.action, form.body, form.grant)
    return json_response(sent, status=201)


async def _status_view(request: web.Request) -> web.Response:
    await authenticate(request)  # any signed-in member, as the regional view
    return json_response(await request.app[FACILITATION_KEY].view())


def setup(app: web.Application) -> None:
    """Register this feature's schema, inbox handlers and routes (before the app starts).
    Called by node.app.create_app after node.regional.setup."""
    services = app[SERVICES_KEY]
    services.db.migrations["facilitation"] = facilitation_store.FACILITATION_MIGRATIONS
    service = Facilitation(app)
    app[FACILITATION_KEY] = service
    services.ledger.on_append.append(service.carrier.on_append)
    regional = app[REGIONAL_KEY]
    regional.register(rule.GRANT_TYPE, service.ingest_grant, pulled_from_regions=True)
    regional.register(rule.REVOKE_TYPE, service.ingest_revoke, pulled_from_regions=True)
    regional.register(rule.REQUEST_TYPE, service.carrier.ingest_request)
    app.router.add_post("/api/facilitators", _grant_view)
    app.router.add_delete("/api/facilitators/{grant}", _revoke_view)
    app.router.add_post("/api/facilitation/requests", _request_view)
    app.router.add_get("/api/facilitation", _status_view)
    add_facilitation_routes(app, lambda request: request.app[FACILITATION_KEY])
