"""The durable delivery queue against real HTTP servers on 127.0.0.1 and real SQLite files."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosqlite
import msgspec
import pytest
from aiohttp import web

from federation import store
from federation.client import FederationClient
from federation.delivery import (
    MAX_ATTEMPTS,
    TRANSITIONS,
    DeliveryWorker,
    Outcome,
    backoff,
    classify,
    next_state,
)
from federation.errors import FederationError
from federation.store import DEAD, QUEUED, RETRYING, SENT, Recipient

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Starts at the real time (enqueue stamps rows with it) and moves only when told."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


class Recipient_:
    """A real inbox server on loopback that records what it receives."""

    def __init__(self, *, status: int = 202, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.received: list[dict[str, object]] = []
        self.headers: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(msgspec.json.decode(body))
        self.headers.append(dict(request.headers))
        return web.Response(status=self.status)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/inbox", self._inbox)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/inbox"

    def ids(self) -> set[str]:
        return {str(a["id"]) for a in self.received}


def activity(n: int, host: str = "sender.test") -> dict[str, object]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"https://{host}/activities/{n}",
        "type": "Create",
        "actor": f"https://{host}/actor",
        "object": {"type": "Note", "content": f"note {n}"},
    }


async def queue(db: Path, activities: list[dict[str, object]], inboxes: list[str]) -> None:
    async with aiosqlite.connect(db) as conn:
        await store.ensure_schema(conn)
        for a in activities:
            await store.enqueue(conn, a, inboxes)
        await conn.commit()


def states(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        return [(d.inbox, d.state, d.attempts) for d in store.deliveries(conn)]


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time: {cond.__doc__ or ''}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def client() -> AsyncIterator[FederationClient]:
    async with FederationClient(signer=None, allow_private_network=True) as c:
        yield c


def closed_port() -> socket.socket:
    """A loopback port that refuses connections (bound, not listening) and stays ours
    until closed, so no other test's server can take it meanwhile."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


# --- the schedule and the lifecycle table -----------------------------------------


def test_backoff_follows_mastodons_schedule_and_spans_two_days() -> None:
    assert backoff(1, lambda: 0.0) == 16.0
    assert backoff(3, lambda: 0.999) == pytest.approx(81 + 15 + 39.96)
    total = sum(backoff(n, lambda: 0.0) for n in range(1, MAX_ATTEMPTS))
    assert total >= 2 * 24 * 3600
    delays = [backoff(n, lambda: 0.5) for n in range(1, MAX_ATTEMPTS)]
    assert delays == sorted(delays)


def test_every_live_state_has_a_transition_for_every_outcome() -> None:
    for state in (QUEUED, RETRYING):
        assert set(TRANSITIONS[state]) == set(Outcome)
    assert next_state(QUEUED, Outcome.OK) == SENT
    assert next_state(RETRYING, Outcome.TRANSIENT) == RETRYING
    assert next_state(RETRYING, Outcome.EXHAUSTED) == DEAD
    for terminal in (SENT, DEAD):
        with pytest.raises(FederationError, match="cannot take outcome"):
            next_state(terminal, Outcome.OK)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (202, Outcome.OK),
        (410, Outcome.PERMANENT),
        (400, Outcome.PERMANENT),
        (401, Outcome.TRANSIENT),
        (429, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
    ],
)
def test_status_classification(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


# --- enqueue ------------------------------------------------------------------------


async def test_enqueue_belongs_to_the_callers_transaction(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    async with aiosqlite.connect(db) as conn:
        await store.ensure_schema(conn)
        await store.ensure_schema(conn)  # idempotent
        await store.enqueue(conn, activity(1), ["https://a.test/inbox"])
        await conn.rollback()
        assert states(db) == []
        await store.enqueue(
            conn,
            activity(2),
            [
                "https://a.test/users/x/inbox",
                Recipient("https://b.test/users/y/inbox", "https://b.test/inbox"),
                Recipient("https://b.test/users/z/inbox", "https://b.test/inbox"),
                "https://a.test/users/x/inbox",
            ],
        )
        assert states(db) == []  # not visible before the caller commits
        await conn.commit()
    assert states(db) == [
        ("https://a.test/users/x/inbox", QUEUED, 0),
        ("https://b.test/inbox", QUEUED, 0),  # shared inbox preferred, once per server
    ]


async def test_enqueue_refuses_a_non_http_recipient(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "n.db") as conn:
        await store.ensure_schema(conn)
        with pytest.raises(ValueError, match="not an http"):
            await store.enqueue(conn, activity(1), ["ftp://x.test/inbox"])


# --- the worker ---------------------------------------------------------------------


async def test_delivers_and_marks_sent(tmp_path: Path, client: FederationClient) -> None:
    db = tmp_path / "node.db"
    rcpt = Recipient_()
    await rcpt.start()
    try:
        await queue(db, [activity(n) for n in range(5)], [rcpt.url])
        worker = DeliveryWorker(db, client=client, poll_interval=0.05)
        await worker.start()
        try:
            await wait_for(lambda: all(s == SENT for _, s, _ in states(db)))
        finally:
            await worker.stop()
        assert rcpt.ids() == {f"https://sender.test/activities/{n}" for n in range(5)}
        assert all(h["Content-Type"].startswith("application/ld+json") for h in rcpt.headers)
    finally:
        await rcpt.stop()


async def test_recipient_down_receives_everything_once_back(
    tmp_path: Path, client: FederationClient
) -> None:
    db = tmp_path / "node.db"
    down = closed_port()
    port = down.getsockname()[1]
    inbox = f"http://127.0.0.1:{port}/inbox"
    await queue(db, [activity(n) for n in range(10)], [inbox])
    clock = FakeClock()
    worker = DeliveryWorker(db, client=client, clock=clock, rand=lambda: 1.0, poll_interval=0.05)
    await worker.start()
    rcpt = Recipient_()
    try:
        await wait_for(lambda: all(s == RETRYING for _, s, _ in states(db)))
        with sqlite3.connect(db) as conn:
            due = {d.next_attempt_at for d in store.deliveries(conn)}
        assert due == {clock.t + backoff(1, lambda: 1.0)}  # injected clock and jitter
        down.close()
        await rcpt.start(port)
        clock.t += 5  # not yet due: nothing is sent early
        worker.wake()
        await asyncio.sleep(0.3)
        assert rcpt.received == []
        clock.t += backoff(1, lambda: 1.0)
        worker.wake()
        await wait_for(lambda: all(s == SENT for _, s, _ in states(db)))
        assert rcpt.ids() == {f"https://sender.test/activities/{n}" for n in range(10)}
        assert {a for _, _, a in states(db)} == {2}
    finally:
        down.close()
        await worker.stop()
        await rcpt.stop()


async def test_refused_activities_die_and_retries_end(
    tmp_path: Path, client: FederationClient
) -> None:
    db = tmp_path / "node.db"
    gone, broken = Recipient_(status=410), Recipient_(status=503)
    await gone.start()
    await broken.start()
    await queue(db, [activity(1)], [gone.url, broken.url])
    clock = FakeClock()
    worker = DeliveryWorker(
        db, client=client, clock=clock, rand=lambda: 0.0, max_attempts=3, poll_interval=0.05
    )
    await worker.start()
    try:
        await wait_for(
            lambda: dict((i, s) for i, s, _ in states(db)) == {gone.url: DEAD, broken.url: RETRYING}
        )
        for attempt in (1, 2):
            clock.t += backoff(attempt, lambda: 0.0)
            worker.wake()

            def retried(a: int = attempt) -> bool:
                return (broken.url, RETRYING, a + 1) in states(db) or (
                    broken.url,
                    DEAD,
                    a + 1,
                ) in states(db)

            await wait_for(retried)
        assert sorted(states(db)) == sorted([(gone.url, DEAD, 1), (broken.url, DEAD, 3)])
        assert len(gone.received) == 1 and len(broken.received) == 3
    finally:
        await worker.stop()
        await gone.stop()
        await broken.stop()


async def test_slow_recipient_does_not_delay_the_others(
    tmp_path: Path, client: FederationClient
) -> None:
    db = tmp_path / "node.db"
    slow, fast = Recipient_(delay=30.0), Recipient_()
    await slow.start()
    await fast.start()
    await queue(db, [activity(n) for n in range(20)], [slow.url])
    await queue(db, [activity(n, "other.test") for n in range(20)], [fast.url])
    worker = DeliveryWorker(db, client=client, per_host=2, timeout=20.0, poll_interval=0.05)
    await worker.start()
    try:
        started = time.monotonic()
        await wait_for(lambda: len(fast.received) == 20, timeout=5.0)
        assert time.monotonic() - started < 3.0
        assert slow.received == []  # still hanging on its first two
    finally:
        await worker.stop()
        await slow.stop()
        await fast.stop()


SENDER = """
import asyncio, sys
from federation.client import FederationClient
from federation.delivery import DeliveryWorker

async def main(db: str) -> None:
    async with FederationClient(signer=None, allow_private_network=True) as client:
        worker = DeliveryWorker(db, client=client, per_host=1, poll_interval=0.05)
        await worker.start()
        print("started", flush=True)
        await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


async def test_sender_killed_mid_delivery_resumes_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    rcpt = Recipient_(delay=0.05)
    await rcpt.start()
    await queue(db, [activity(n) for n in range(40)], [rcpt.url])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), str(db)], cwd=ROOT, env=env)

    proc = spawn()
    try:
        await wait_for(lambda: len(rcpt.received) >= 5, timeout=15.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)
        pending = [s for _, s, _ in states(db) if s != SENT]
        assert pending, "the sender finished before it was killed"
        proc = spawn()
        await wait_for(lambda: all(s == SENT for _, s, _ in states(db)), timeout=20.0)
    finally:
        proc.kill()
        proc.wait(timeout=5)
        await rcpt.stop()
    assert rcpt.ids() == {f"https://sender.test/activities/{n}" for n in range(40)}
