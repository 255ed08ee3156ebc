"""Durable outgoing delivery (docs/protocol.md §9.3).

Theory of operation. :func:`federation.store.enqueue` writes one row per
(activity, recipient inbox) inside the caller's transaction, so an activity is
queued exactly when the chain entry that caused it commits. The
:class:`DeliveryWorker` is the only thing that reads the queue: it picks rows that
are due, POSTs each body with an HTTP signature (draft-cavage as Mastodon speaks
it, through ``federation.client``), and records the outcome. The queue is the
source of truth: a row leaves ``queued``/``retrying`` only after its recipient
answered 2xx (``sent``) or after the last attempt failed (``dead``). A crash or a
kill -9 between the POST and that update only means the activity is sent again
after restart (at least once); receivers dedupe by activity id (at most once).

Retries follow Mastodon's schedule: attempt n (1-based) waits (n⁴ + 15) s plus a
jitter of up to 10·(n + 1) s, 16 retries, about 2.8 days in all. The clock and the
random source are parameters so that the schedule is testable without waiting.

Isolation: every recipient host has its own concurrency limit and each POST has a
timeout, and due rows of saturated hosts are not even fetched, so a dead or slow
server never holds up deliveries to live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from aiohttp import web

from federation import store
from federation.client import FederationClient, FetchError
from federation.errors import FederationError
from federation.store import DEAD, QUEUED, RETRYING, SENT, Database, Delivery

log = logging.getLogger(__name__)

CONTENT_TYPE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
MAX_ATTEMPTS = 17  # the first try and 16 retries, as Mastodon does


class Outcome(enum.Enum):
    OK = "ok"  # 2xx
    TRANSIENT = "transient"  # network error, timeout, 5xx, 429, 401/408: try again
    PERMANENT = "permanent"  # the recipient refused the activity itself: never again
    EXHAUSTED = "exhausted"  # transient, but that was the last attempt


# The delivery lifecycle as data: (state, outcome) -> next state. sent and dead are
# terminal and have no row here.
TRANSITIONS: Mapping[str, Mapping[Outcome, str]] = {
    QUEUED: {
        Outcome.OK: SENT,
        Outcome.TRANSIENT: RETRYING,
        Outcome.PERMANENT: DEAD,
        Outcome.EXHAUSTED: DEAD,
    },
    RETRYING: {
        Outcome.OK: SENT,
        Outcome.TRANSIENT: RETRYING,
        Outcome.PERMANENT: DEAD,
        Outcome.EXHAUSTED: DEAD,
    },
}

# 4xx answers that will not change on retry. 401 is absent on purpose: it often
# means the recipient's copy of our key is stale, which fixes itself.
PERMANENT_STATUSES = frozenset({400, 403, 404, 405, 410, 413, 415, 422})


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.OK
    if status in PERMANENT_STATUSES:
        return Outcome.PERMANENT
    return Outcome.TRANSIENT


def backoff(attempt: int, rand: Callable[[], float]) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return float(attempt**4 + 15) + rand() * 10 * (attempt + 1)


def next_state(state: str, outcome: Outcome) -> str:
    try:
        return TRANSITIONS[state][outcome]
    except KeyError:
        raise FederationError(
            f"delivery in state {state!r} cannot take outcome {outcome.value!r}",
            code="bad_transition",
            status=500,
        ) from None


class DeliveryWorker:
    """Delivers queued activities until stopped; see the module comment."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        client: FederationClient,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        per_host: int = 4,
        concurrency: int = 64,
        timeout: float = 30.0,
        max_attempts: int = MAX_ATTEMPTS,
        poll_interval: float = 1.0,
    ) -> None:
        # NORMAL (WAL) survives a kill -9 but may lose the last updates to a power
        # cut; losing a "sent" mark only means sending again, which at-least-once
        # allows, and spares one fsync per delivery. Enqueues are the caller's
        # transactions and keep the caller's durability.
        self.db = Database(db_path, synchronous="NORMAL")
        self._client = client
        self._clock = clock
        self._rand = rand
        self._per_host = per_host
        self._concurrency = concurrency
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._per_host_inflight: dict[str, int] = {}
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        await self.db.open()
        self._loop_task = asyncio.create_task(self._run(), name="convene-delivery")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.db.close()

    def wake(self) -> None:
        """Look at the queue now (call after committing an enqueue)."""
        self._wake.set()

    # -- the loop ----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._dispatch_due()
                delay = self._poll
                nxt = await self.db.run(store.next_due_at)
                if nxt is not None:
                    delay = max(0.0, min(delay, nxt - self._clock()))
            except Exception:  # a broken DB must not kill the worker for good
                log.exception("delivery loop failed; retrying")
                delay = self._poll
            await store.nap(self._wake, delay or self._poll)

    async def _dispatch_due(self) -> None:
        free = self._concurrency - len(self._inflight)
        if free <= 0:
            return
        saturated = {h for h, n in self._per_host_inflight.items() if n >= self._per_host}
        rows: list[Delivery] = await self.db.run(
            store.due_deliveries, self._clock(), list(self._inflight), sorted(saturated), free * 4
        )
        for row in rows:
            if len(self._inflight) >= self._concurrency:
                break
            if row.host in saturated:
                continue
            n = self._per_host_inflight.get(row.host, 0)
            if n >= self._per_host:
                saturated.add(row.host)
                continue
            self._per_host_inflight[row.host] = n + 1
            task = asyncio.create_task(self._deliver(row))
            self._inflight[row.id] = task

    async def _deliver(self, row: Delivery) -> None:
        error: str | None = None
        try:
            outcome, error = await self._post(row)
            attempts = row.attempts + 1
            if outcome is Outcome.TRANSIENT and attempts >= self._max_attempts:
                outcome = Outcome.EXHAUSTED
            state = next_state(row.state, outcome)
            now = self._clock()
            due = now + backoff(attempts, self._rand) if state == RETRYING else now
            await self.db.run(
                lambda c: store.record_attempt(
                    c,
                    row.id,
                    state=state,
                    attempts=attempts,
                    next_attempt_at=due,
                    error=error,
                    now=now,
                )
            )
            if state == DEAD:
                log.warning("delivery %d to %s is dead: %s", row.id, row.inbox, error)
        except Exception:
            log.exception("delivery %d to %s failed to record", row.id, row.inbox)
        finally:
            self._inflight.pop(row.id, None)
            left = self._per_host_inflight.get(row.host, 1) - 1
            if left:
                self._per_host_inflight[row.host] = left
            else:
                self._per_host_inflight.pop(row.host, None)
            self._wake.set()

    async def _post(self, row: Delivery) -> tuple[Outcome, str | None]:
        # The client signs, applies the SSRF guard and bounds the answer.
        try:
            async with asyncio.timeout(self._timeout):
                resp = await self._client.post(row.inbox, row.body, content_type=CONTENT_TYPE)
        except FetchError as e:  # unreachable, timed out, reset: the server may come back
            return Outcome.TRANSIENT, str(e)
        except TimeoutError:
            return Outcome.TRANSIENT, f"no answer within {self._timeout:g} s"
        except FederationError as e:  # refused URL (SSRF guard, bad scheme): never
            return Outcome.PERMANENT, str(e)
        outcome = classify(resp.status)
        if outcome is Outcome.OK:
            return outcome, None
        return outcome, f"HTTP {resp.status}: {resp.body[:300].decode('utf-8', 'replace')}"


def delivery_ctx(
    worker_factory: Callable[[web.Application], DeliveryWorker],
    key: web.AppKey[DeliveryWorker],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry that runs a worker for the app's lifetime."""
    return store.service_ctx(worker_factory, key)
