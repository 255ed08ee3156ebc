"""A sender's delivery worker and a receiver's inbox, both real, over loopback.

The worker signs with the node's client signer (draft-cavage, RSA-2048), the inbox
verifies the signature, the digest and the entry's proof, and a redelivery of the
same activity is answered as a duplicate and handled once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import store
from federation.client import FederationClient, http_signer
from federation.delivery import MAX_ATTEMPTS, DeliveryWorker, backoff
from federation.inbox import Inbox, IncomingActivity, TransportKey
from protocol import entries
from protocol.keys import SigningKey, VerifyKey

SENDER = "https://chapter.test/actor"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ENTRY_KEY = SigningKey.from_seed(b"\x07" * 32)


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def states(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [d.state for d in store.deliveries(conn)]


def processed(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT activity_id, state FROM fed_incoming").fetchall()
    return rows == [("https://chapter.test/activities/tally-0", store.PROCESSED)]


async def test_signed_delivery_into_a_verifying_inbox(tmp_path: Path) -> None:
    handled: list[IncomingActivity] = []

    async def transport_key(key_id: str, refresh: bool) -> TransportKey:
        assert key_id == f"{SENDER}#main-key"
        return TransportKey(SENDER, RSA_KEY.public_key())

    async def entry_key(actor: str, seq: int, method: str) -> VerifyKey:
        assert (actor, method) == (SENDER, entries.key_id(SENDER, 0))
        return ENTRY_KEY.verify_key

    async def on_create(activity: IncomingActivity) -> None:
        handled.append(activity)

    inbox = Inbox(
        tmp_path / "receiver.db",
        transport_keys=transport_key,
        entry_keys=entry_key,
        handlers={"Create": on_create},
        scheme="http",
    )
    await inbox.start()
    app = web.Application()
    app.router.add_post("/inbox", inbox.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/inbox"

    entry = entries.make_entry(
        {"type": "Tally", "summary": "3 agree"},
        actor=SENDER,
        seq=0,
        prev=None,
        key=ENTRY_KEY,
        key_id=entries.key_id(SENDER, 0),
        published="2026-11-26T14:00:00Z",
    )
    activity: dict[str, Any] = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://chapter.test/activities/tally-0",
        "type": "Create",
        "actor": SENDER,
        "object": entry,
    }
    sender_db = tmp_path / "sender.db"
    async with aiosqlite.connect(sender_db) as conn:
        await store.ensure_schema(conn)
        # The same activity queued twice (a retry after an unrecorded answer looks so).
        await store.enqueue(conn, activity, [url])
        await store.enqueue(conn, msgspec.json.encode(activity), [url])
        await conn.commit()

    signer = http_signer(f"{SENDER}#main-key", RSA_KEY)
    async with FederationClient(signer=signer, allow_private_network=True) as client:
        worker = DeliveryWorker(sender_db, client=client, per_host=1, poll_interval=0.05)
        await worker.start()
        try:
            await wait_for(lambda: states(sender_db) == [store.SENT, store.SENT])
            await wait_for(lambda: len(handled) == 1)
            await wait_for(lambda: processed(tmp_path / "receiver.db"))
        finally:
            await worker.stop()
            await inbox.stop()
            await runner.cleanup()
    assert len(handled) == 1
    assert handled[0].entry == entry


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_ATTEMPTS - 1), st.floats(0.0, 1.0, exclude_max=True))
def test_backoff_is_bounded_by_the_schedule_for_any_jitter(attempt: int, r: float) -> None:
    delay = backoff(attempt, lambda: r)
    assert attempt**4 + 15 <= delay <= attempt**4 + 15 + 10 * (attempt + 1)
    assert backoff(attempt + 1, lambda: 0.0) > attempt**4 + 15
