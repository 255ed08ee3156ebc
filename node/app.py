"""The node's aiohttp application: `create_app(config) -> web.Application`.

What other layers (federation/, the web pages) build on — all in typed `web.AppKey`s,
set here before the app starts, nothing in module globals:

- `CONFIG_KEY` → `NodeConfig` (host, port, allow_private_network, limits, ...).
- `DB_KEY` → `node.storage.Database`. It is opened by the first `cleanup_ctx` entry,
  so anything registered later (by `node.federation_glue.setup`) finds it open.
  Another layer adds its own schema steps *before startup* with
  `app[DB_KEY].migrations["federation"] = (step1_sql, step2_sql, ...)`; they run
  numbered and recorded like the node's own. `await db.fetchone/fetchall(sql)` read
  on a reader connection; `async with db.write() as tx:` is the single writer
  (`tx.execute`, `tx.fetchone`, `tx.fetchall`, `tx.executemany`, and
  `tx.connection`, the aiosqlite connection inside the same transaction).
- `IDENTITY_KEY` → `node.identity.NodeIdentity`: `actor` (`{url}/actor`), `url`,
  `name`, `kind`, `signing_key` (protocol.keys.SigningKey), `key_id`
  (`{actor}#ed25519-0`), `rsa_key` (cryptography RSAPrivateKey), `rsa_key_id`
  (`{actor}#main-key`).
- `LEDGER_KEY` → `node.ledger.Ledger`: `await ledger.append(body, extra)` signs `body`
  as the next chain entry and runs `await extra(tx, appended)` in the same
  transaction (appended has `seq`, `digest`, `entry`); `ledger.append_in(tx, body)`
  does the same inside a transaction the caller holds; `await ledger.entries(start,
  limit)` lists signed entries oldest first (the outbox). Hooks appended to
  `ledger.on_append` run as `await hook(tx, appended)` inside the transaction of every
  new entry (seq > 0) this process appends: queue deliveries there and they commit
  with the entry, or fail it.
- `MEMBERS_KEY`, `PROPOSALS_KEY` → the services the JSON API and pages call.
  For federation: `Proposals.adopt_regional(question_entry, digest=...)` holds a
  region's verified Question on a chapter (idempotent; the chapter's Tally then names
  it), `Proposals.record_decision(id, decision, verification)` marks it decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from node import agenda_service, events, facilitation, federation_glue, ops, regional, rotation
from node.api import MAX_JSON_BYTES_KEY, SERVICES_KEY, add_routes, error_middleware
from node.config import NodeConfig
from node.identity import NodeIdentity
from node.ledger import Ledger
from node.members import Members
from node.proposals import Proposals
from node.services import build_services
from node.storage import Database
from node.web import setup_web

log = logging.getLogger("convene.node")

CONFIG_KEY = web.AppKey("convene_config", NodeConfig)
DB_KEY = web.AppKey("convene_db", Database)
IDENTITY_KEY = web.AppKey("convene_identity", NodeIdentity)
LEDGER_KEY = web.AppKey("convene_ledger", Ledger)
MEMBERS_KEY = web.AppKey("convene_members", Members)
PROPOSALS_KEY = web.AppKey("convene_proposals", Proposals)


async def _node_resources(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES_KEY]
    await services.db.open()
    services.ballot_box.start()
    closer = asyncio.create_task(services.proposals.run_auto_close(), name="auto-close")
    log.info("node up actor=%s db=%s", services.identity.actor, services.db.path)
    yield
    closer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closer
    await services.ballot_box.stop()
    await services.db.close()


def create_app(config: NodeConfig) -> web.Application:
    services = build_services(config)
    # aiohttp's own limit is a backstop; read_body answers 413 in our JSON shape first.
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.max_body_bytes + 1024
    )
    app[SERVICES_KEY] = services
    app[MAX_JSON_BYTES_KEY] = config.max_body_bytes
    app[CONFIG_KEY] = config
    app[DB_KEY] = services.db
    app[IDENTITY_KEY] = services.identity
    app[LEDGER_KEY] = services.ledger
    app[MEMBERS_KEY] = services.members
    app[PROPOSALS_KEY] = services.proposals
    app.cleanup_ctx.append(_node_resources)
    add_routes(app)
    federation_glue.setup(app)
    regional.setup(app)  # regional votes: inbox handlers, decisions, GET .../regional
    events.setup(app)  # convenings as Events, RSVPs, attendance (§10.1–10.3)
    agenda_service.setup(app)  # the bottom-up agenda (§10.4)
    facilitation.setup(app)  # partner facilitators' signed requests
    rotation.setup(app)  # POST /api/keys/rotate, GET /api/keys (admin)
    setup_web(app)
    ops.setup(app, config)  # /healthz, /metrics, X-Forwarded-* (trust_forwarded)
    return app
