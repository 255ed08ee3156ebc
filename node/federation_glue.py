"""Where the node hands its storage and identity to federation/ — the one place.

``setup(app)`` (called by ``node.app.create_app``) adds, on top of the node's app:

- the read-only federation routes (federation/routes.py) over the node's chain,
  identity and followers;
- the verified inbox at ``POST /inbox`` (federation/inbox.py) with the handler
  table: Follow / Accept / Reject / Undo go to federation/follow.py; other layers add theirs
  to ``app[INBOX_HANDLERS_KEY]`` before the app starts;
- the durable delivery worker (federation/delivery.py);
- one FederationClient (signed with the node's RSA key, SSRF guard per config) and
  the remote actor cache, as typed app keys.

Publishing: ``extra = await publication(app)`` before ``ledger.append(body, extra)``
queues the new entry to the node's recipients in the entry's transaction;
``wake_delivery(app)`` afterwards sends it at once. Organizer endpoints under
``/api/federation`` list, join, leave, approve and reject (docs/protocol.md §9.4).

``join_command`` / ``leave_command`` are the ``convene join REGION`` and ``convene
leave REGION`` commands: they queue the Follow (or Undo) in the node's database, and
the running node's delivery worker sends it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import click
import msgspec
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from yarl import URL

from federation import follow_store, store
from federation.actors import SCHEMA as ACTORS_SCHEMA
from federation.actors import ActorCache
from federation.client import FederationClient, http_signer
from federation.delivery import DeliveryWorker, delivery_ctx
from federation.documents import AssertionKey, LocalActor
from federation.follow import FollowService
from federation.inbox import Handler, Inbox, IncomingActivity, RefusalLog, inbox_ctx
from federation.routes import setup_routes
from node import chain_store
from node.api import SERVICES_KEY, authenticate, json_response, read_json
from node.cli_support import common_options, emit, guarded
from node.config import NodeConfig, load_config
from node.errors import BadRequest
from node.ledger import Appended, ExtraWrites
from node.members import require_role
from node.services import NodeServices, build_services
from node.storage import Tx

T = TypeVar("T")

CLIENT_KEY = web.AppKey("federation_client", FederationClient)
ACTORS_KEY = web.AppKey("federation_actors", ActorCache)
FOLLOW_KEY = web.AppKey("federation_follow", FollowService)
INBOX_KEY = web.AppKey("federation_inbox", Inbox)
DELIVERY_KEY = web.AppKey("federation_delivery", DeliveryWorker)
INBOX_HANDLERS_KEY = web.AppKey("federation_handlers", dict[str, Handler])
# Where the inbox reports a refused chain entry (metadata only); set by a later layer
# (node/regional.py keeps the bounded log) before the app starts.
REFUSAL_LOG_KEY: web.AppKey[RefusalLog] = web.AppKey("federation_refusal_log")

# One migration step for federation's tables (all CREATE ... IF NOT EXISTS, so the
# inbox's and delivery worker's own connections may create them first).
FEDERATION_MIGRATIONS = (store.SCHEMA + ACTORS_SCHEMA + follow_store.SCHEMA,)


def preferred_username(name: str) -> str:
    """The WebFinger user part: the node's name folded to ``[a-z0-9_]``."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return slug or "node"


class NodeSource:
    """What federation's routes ask the node (federation.routes.FederationSource)."""

    def __init__(self, services: NodeServices) -> None:
        self._services = services
        identity = services.identity
        pem = (
            identity.rsa_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        self._actor = LocalActor(
            id=identity.actor,
            base_url=identity.url.rstrip("/"),
            username=preferred_username(identity.name),
            name=identity.name,
            kind=identity.kind,
            rsa_public_pem=pem,
            assertion_key=AssertionKey(identity.key_id, identity.signing_key.verify_key.multibase),
            manually_approves_followers=approves_manually(services.config),
        )

    async def local_actor(self) -> LocalActor:
        return self._actor

    async def chain_length(self) -> int:
        return await chain_store.count(self._services.db)

    async def chain_entries(self, start: int, limit: int) -> list[bytes]:
        return await chain_store.entries(self._services.db, start, limit)

    async def followers(self) -> list[str]:
        rows = await self._services.db.fetchall(follow_store.ACCEPTED_FOLLOWERS_SQL)
        return [str(row[0]) for row in rows]

    async def member_count(self) -> int:
        return len(await self._services.members.all())


MAX_SHOWN_NAME = 80  # a remote actor's name is its own text: shown, but kept short


def host_label(actor_id: str) -> str:
    """What a page calls an actor whose name it does not know: its host (and port)."""
    try:
        url = URL(actor_id)
    except ValueError:
        return actor_id[:MAX_SHOWN_NAME]
    if not url.host:
        return actor_id[:MAX_SHOWN_NAME]
    return url.host if url.is_default_port() else f"{url.host}:{url.port}"


async def actor_names(app: web.Application, actor_ids: Iterable[str]) -> dict[str, str]:
    """Each actor's ``name`` for pages: this node's own, else the one in the actor cache
    (`ActorCache.cached`, filled when the node fetched the actor, e.g. to check its
    tally's signature), else its host. Only the cache is read: a page never fetches from other
    servers, so it shows the same names when they are down. A stale document is fine
    here, as a name is shown, never trusted."""
    services = app[SERVICES_KEY]
    ids = list(dict.fromkeys(actor_ids))
    names = {actor_id: host_label(actor_id) for actor_id in ids}
    actors = app.get(ACTORS_KEY)
    if ids and actors is not None:  # none while the node is not serving: hosts will do
        for actor_id, actor in (await actors.cached(ids)).items():
            name = " ".join((actor.name or "").split())[:MAX_SHOWN_NAME]
            names[actor_id] = name or names[actor_id]
    if services.identity.actor in names:
        names[services.identity.actor] = services.identity.name
    return names


class NodeHost:
    """What federation/follow.py needs from the node (federation.follow.Host)."""

    def __init__(self, services: NodeServices) -> None:
        self._services = services
        self.actor_id = services.identity.actor
        self.manually_approves_followers = approves_manually(services.config)

    async def append_entry(
        self,
        body: dict[str, Any],
        extra: Callable[[aiosqlite.Connection, dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        appended = await self._services.ledger.append(
            body, lambda tx, done: extra(tx.connection, done.entry)
        )
        return appended.entry

    async def write(self, job: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._services.db.write() as tx:
            return await job(tx.connection)

    async def entry(self, seq: int) -> dict[str, Any]:
        (raw,) = await chain_store.entries(self._services.db, seq, 1)
        decoded: dict[str, Any] = msgspec.json.decode(raw)
        return decoded


def approves_manually(config: NodeConfig) -> bool:
    """Whether an organizer approves followers (config ``approve_followers``, default
    off: a region accepts every chapter that follows it)."""
    return bool(getattr(config, "approve_followers", False))


def _client(services: NodeServices) -> FederationClient:
    identity = services.identity
    return FederationClient(
        signer=http_signer(identity.rsa_key_id, identity.rsa_key),
        allow_private_network=services.config.allow_private_network,
    )


def follow_handlers(service: FollowService) -> dict[str, Handler]:
    """The inbox handler table for following (one place maps type → handler)."""

    async def on_follow(incoming: IncomingActivity) -> None:
        await service.on_follow(incoming.activity, incoming.actor)

    async def on_accept(incoming: IncomingActivity) -> None:
        await service.on_accept(incoming.activity, incoming.actor)

    async def on_reject(incoming: IncomingActivity) -> None:
        await service.on_reject(incoming.activity, incoming.actor)

    async def on_undo(incoming: IncomingActivity) -> None:
        await service.on_undo(incoming.activity, incoming.actor)

    return {"Follow": on_follow, "Accept": on_accept, "Reject": on_reject, "Undo": on_undo}


async def _federation(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES_KEY]
    client = _client(services)
    actors = await ActorCache.open(services.config.database_path, client)
    service = FollowService(NodeHost(services), actors)

    # The worker starts after this context; until then its start reads the queue anyway.
    service.on_queued = lambda: wake_delivery(app)
    app[CLIENT_KEY] = client
    app[ACTORS_KEY] = actors
    app[FOLLOW_KEY] = service
    app[INBOX_HANDLERS_KEY].update(
        {k: v for k, v in follow_handlers(service).items() if k not in app[INBOX_HANDLERS_KEY]}
    )
    try:
        yield
    finally:
        await actors.close()
        await client.close()


def setup(app: web.Application) -> None:
    """Add the federation routes, inbox and delivery worker to the node's app."""
    services = app[SERVICES_KEY]
    services.db.migrations["federation"] = FEDERATION_MIGRATIONS
    app[INBOX_HANDLERS_KEY] = {}
    setup_routes(app, NodeSource(services))
    scheme = URL(services.identity.url).scheme or "https"

    def make_inbox(app: web.Application) -> Inbox:
        actors = app[ACTORS_KEY]
        handlers: dict[str, Handler] = app[INBOX_HANDLERS_KEY]
        return Inbox(
            services.config.database_path,
            transport_keys=actors.transport_key,
            entry_keys=actors.entry_key,
            handlers=handlers,
            scheme=scheme,
            on_refusal=app.get(REFUSAL_LOG_KEY),
        )

    def make_worker(app: web.Application) -> DeliveryWorker:
        return DeliveryWorker(services.config.database_path, client=app[CLIENT_KEY])

    # Order matters: the node's database is opened by an earlier cleanup_ctx entry.
    app.cleanup_ctx.append(_federation)
    app.cleanup_ctx.append(inbox_ctx(make_inbox, INBOX_KEY))
    app.cleanup_ctx.append(delivery_ctx(make_worker, DELIVERY_KEY))

    async def inbox(request: web.Request) -> web.StreamResponse:
        return await request.app[INBOX_KEY].handle(request)

    app.router.add_post("/inbox", inbox)
    app.router.add_get("/api/federation", _federation_status)
    app.router.add_post("/api/federation/join", _join_region)
    app.router.add_post("/api/federation/leave", _leave_region)
    app.router.add_post("/api/federation/followers/approve", _approve_follower)
    app.router.add_post("/api/federation/followers/reject", _reject_follower)


# --- publishing: queue a new chain entry to everyone who should hear it -------------


async def publication(app: web.Application) -> ExtraWrites:
    """An ``extra`` for ``Ledger.append`` that queues the appended entry, verbatim, to
    this node's recipients (a region's followers; a chapter's region and its other
    chapters) in the entry's own transaction. Recipients are looked up first, because
    that may fetch remote documents, which must not happen inside a write transaction.
    Call ``wake_delivery(app)`` after the append returns."""
    recipients = await app[FOLLOW_KEY].recipients()

    async def extra(tx: Tx, appended: Appended) -> None:
        if recipients:
            await store.enqueue(tx.connection, appended.entry, recipients)

    return extra


def wake_delivery(app: web.Application) -> None:
    """Have the delivery worker look at the queue now (after a commit that queued)."""
    worker = app.get(DELIVERY_KEY)
    if worker is not None:
        worker.wake()


# --- organizer API: who we follow, who follows us, approvals -------------------------


class _RegionBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    region: str


class _ActorBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    actor: str


async def _organizer_body(request: web.Request, shape: type[T], action: str) -> T:
    require_role(await authenticate(request), "organizer", action)
    try:
        return msgspec.convert(await read_json(request), shape)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{action}: {exc}") from exc


def _follower_json(row: follow_store.Follower) -> dict[str, Any]:
    return {"actor": row.actor_id, "state": row.state, "follow": row.follow_id}


def _following_json(row: follow_store.Following) -> dict[str, Any]:
    return {"region": row.target, "state": row.state, "follow": row.follow_id}


async def _federation_status(request: web.Request) -> web.Response:
    require_role(await authenticate(request), "organizer", "reading federation status")
    service = request.app[FOLLOW_KEY]

    async def read(conn: aiosqlite.Connection) -> dict[str, Any]:
        rows = [
            r
            for state in ("pending", "accepted")
            for r in await follow_store.followers(conn, state)
        ]
        return {
            "following": [_following_json(r) for r in await follow_store.following(conn)],
            "followers": [_follower_json(r) for r in rows],
        }

    return json_response(await service.host.write(read))


async def _join_region(request: web.Request) -> web.Response:
    body = await _organizer_body(request, _RegionBody, "joining a region")
    row = await request.app[FOLLOW_KEY].join(body.region, nonce=secrets.token_hex(16))
    return json_response(_following_json(row), status=202)


async def _leave_region(request: web.Request) -> web.Response:
    body = await _organizer_body(request, _RegionBody, "leaving a region")
    row = await request.app[FOLLOW_KEY].leave(body.region, nonce=secrets.token_hex(16))
    return json_response(_following_json(row), status=202)


async def _approve_follower(request: web.Request) -> web.Response:
    body = await _organizer_body(request, _ActorBody, "approving a follower")
    return json_response(_follower_json(await request.app[FOLLOW_KEY].approve(body.actor)))


async def _reject_follower(request: web.Request) -> web.Response:
    body = await _organizer_body(request, _ActorBody, "rejecting a follower")
    row = await request.app[FOLLOW_KEY].reject(body.actor, nonce=secrets.token_hex(16))
    return json_response(_follower_json(row))


# --- convene join / leave -----------------------------------------------------------


async def with_follow_service(
    data: Path, allow_private_network: bool, job: Callable[[FollowService], Awaitable[T]]
) -> T:
    """Run ``job`` with a FollowService over the node in ``data`` (not serving)."""
    overrides = {"allow_private_network": True} if allow_private_network else None
    services = build_services(load_config(data, overrides))
    services.db.migrations["federation"] = FEDERATION_MIGRATIONS
    await services.db.open()
    try:
        async with _client(services) as client:
            actors = await ActorCache.open(services.config.database_path, client)
            try:
                return await job(FollowService(NodeHost(services), actors))
            finally:
                await actors.close()
    finally:
        await services.db.close()


async def join(
    data: Path, region: str, *, allow_private_network: bool = False
) -> follow_store.Following:
    """Queue a Follow of ``region`` (base URL, actor id or ``acct:`` handle)."""
    return await with_follow_service(
        data,
        allow_private_network,
        lambda service: service.join(region, nonce=secrets.token_hex(16)),
    )


async def leave(
    data: Path, region: str, *, allow_private_network: bool = False
) -> follow_store.Following:
    """Queue an Undo of this node's Follow of ``region``."""
    return await with_follow_service(
        data,
        allow_private_network,
        lambda service: service.leave(region, nonce=secrets.token_hex(16)),
    )


def _follow_options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option(
        "--allow-private-network",
        is_flag=True,
        default=False,
        help="allow a region on a private or loopback address (tests, the demo)",
    )(fn)
    return click.argument("region")(common_options(fn))


def _print_following(as_json: bool, row: follow_store.Following) -> None:
    emit(
        as_json,
        {"region": row.target, "follow": row.follow_id, "state": row.state},
        f"{row.state}: follow {row.follow_id} of {row.target} (the node delivers it)",
    )


@click.command("join")
@_follow_options
@guarded
def join_command(region: str, data: Path, as_json: bool, allow_private_network: bool) -> None:
    """Follow a region, named by its URL (base URL or actor id) or its acct: handle."""
    row = asyncio.run(join(data, region, allow_private_network=allow_private_network))
    _print_following(as_json, row)


@click.command("leave")
@_follow_options
@guarded
def leave_command(region: str, data: Path, as_json: bool, allow_private_network: bool) -> None:
    """Stop following a region (Undo Follow)."""
    row = asyncio.run(leave(data, region, allow_private_network=allow_private_network))
    _print_following(as_json, row)
