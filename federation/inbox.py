"""The verified inbox: accept nothing unverifiable, store first, then act (§9.3).

Theory of operation. One POST goes through these gates in order; the first that
fails answers ``{"error", "detail"}`` with its status and nothing is stored:

1. size: ``Content-Length`` above the bound is refused before reading, and reading
   stops one byte past it (413);
2. transport signature, cheap part: the ``Signature`` (draft-cavage-12) or
   ``Signature-Input`` (RFC 9421) header parses, covers the request target, host,
   date and digest, and ``Digest`` / ``Content-Digest`` matches the body
   (federation/httpsig.py; 401);
3. the body is one strict JSON object (protocol/canonical.py) with string ``id``,
   ``type`` and ``actor``, and the id lives on the actor's host, so no server can
   claim ids, and thereby dedupe slots, of another (400);
4. transport signature, costly part: the key named by ``keyId`` belongs to the
   activity's actor and verifies, with Date within one hour (401). A failure with a
   cached key is retried once with a refreshed one, as a rotation would need;
5. object proof: an embedded object carrying ``seq`` is a chain entry (§5). Objects
   are relayed verbatim, so authorship rests on its eddsa-jcs-2022 proof alone:
   the proof's key must be the one valid at that seq in its author's chain, which
   the caller's entry-key resolver answers (400 ``bad_proof``, 400 ``unsigned``
   without a proof, 401 ``unknown_key``). An activity that carries ``seq`` itself is
   a bare entry, checked the same way. A refused entry, bare or wrapped, is stored
   nowhere; only its metadata goes to the node's bounded rejection log through the
   ``on_refusal`` callback (:class:`EntryRefusal`), so a node can still name it;
6. dedupe and store, in one group-committed SQLite transaction per batch of
   concurrent requests: a known id with the same content is a duplicate (202, not
   processed again); with other content it is a replay (409). A second, different
   entry for an (actor, seq) already held is stored as equivocation evidence,
   also when it comes under a known id, as a bare entry's second version does.

Then 202. Processing is asynchronous, as Takahē does it: federation/inbox_processor.py
reads stored activities in arrival order and calls the handler registered for their
type; types without a handler are stored as ignored. Redelivered duplicates never
reach a handler. ``IncomingActivity``, ``Handler`` and ``PROCESS_TRANSITIONS`` stay
importable from here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from federation import httpsig, store
from federation.errors import FederationError, SignatureError
from federation.inbox_processor import (
    PROCESS_TRANSITIONS,
    Handler,
    InboxProcessor,
    IncomingActivity,
    actor_id,
)
from federation.incoming import EntryRefusal, entry_refusal
from federation.store import (
    IGNORED,
    RECEIVED,
    Database,
    EntryRecord,
    IncomingRecord,
)
from protocol import canonical, entries, proofs
from protocol.errors import ProofError, ProtocolError
from protocol.keys import VerifyKey

__all__ = [
    "MAX_BODY",
    "PROCESS_TRANSITIONS",
    "EntryRefusal",
    "Handler",
    "Inbox",
    "InboxError",
    "IncomingActivity",
    "PayloadTooLarge",
    "Receipt",
    "RefusalLog",
    "ReplayedActivity",
    "SignerMismatch",
    "TransportKey",
    "UnknownKey",
    "inbox_ctx",
]

MAX_BODY = 256 * 1024

log = logging.getLogger(__name__)


class InboxError(FederationError):
    """An incoming activity was refused; ``code`` says which gate refused it."""

    code = "bad_activity"
    status = 400


class PayloadTooLarge(InboxError):
    code = "too_large"
    status = 413


class SignerMismatch(InboxError):
    code = "signer_mismatch"
    status = 401


class UnknownKey(InboxError):
    code = "unknown_key"
    status = 401


class ReplayedActivity(InboxError):
    code = "replayed"
    status = 409


@dataclass(frozen=True, slots=True)
class TransportKey:
    """The public key a ``keyId`` names, and the actor that owns it."""

    owner: str
    public_key: httpsig.PublicKey


# key_id, refresh -> key; raises FederationError when it cannot be had.
TransportKeyResolver = Callable[[str, bool], Awaitable[TransportKey]]
# (entry actor, seq, proof verificationMethod) -> the key valid at that seq in
# that actor's chain; raises FederationError or ProtocolError when there is none.
EntryKeyResolver = Callable[[str, int, str], Awaitable[VerifyKey]]
# Told of every refused chain entry (metadata only); the node keeps a bounded log.
RefusalLog = Callable[[EntryRefusal], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Receipt:
    activity_id: str
    status: str  # "accepted", "duplicate" or "ignored"
    equivocation: bool = False


def _json(value: dict[str, str], status: int) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


def _host(url: str) -> str:
    return urlsplit(url).netloc.lower()


# An inbox hears from a few hundred actors, each many times: their hosts are cached.
_actor_host = functools.lru_cache(maxsize=4096)(_host)


@dataclass
class _Pending:
    record: IncomingRecord
    done: asyncio.Future[store.StoreOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _fail(batch: list[_Pending], why: str) -> None:
    for p in batch:
        if not p.done.done():
            p.done.set_exception(FederationError(why, code="unavailable", status=503))


class Inbox:
    """A node's inbox: an aiohttp handler (:meth:`handle`) and its processor."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        transport_keys: TransportKeyResolver,
        entry_keys: EntryKeyResolver,
        handlers: Mapping[str, Handler],
        clock: Callable[[], float] = time.time,
        max_body: int = MAX_BODY,
        scheme: str = "https",
        max_attempts: int = 8,
        batch_size: int = 512,
        handler_timeout: float = 60.0,
        on_refusal: RefusalLog | None = None,
    ) -> None:
        self.db = Database(db_path)
        self.processor = InboxProcessor(
            self.db,
            handlers,
            clock=clock,
            max_attempts=max_attempts,
            handler_timeout=handler_timeout,
        )
        self._transport_keys = transport_keys
        self._entry_keys = entry_keys
        self._on_refusal = on_refusal
        self._clock = clock
        self.max_body = max_body
        self._scheme = scheme
        self._batch_size = batch_size
        self._pending: list[_Pending] = []
        self._committing: concurrent.futures.Future[Any] | None = None
        self._kicked = False
        self._closing = False

    async def start(self) -> None:
        await self.db.open()
        self.processor.start()

    async def stop(self) -> None:
        await self.processor.stop()
        self._closing = True
        # The batch being committed is answered as its commit ends; nobody else waits
        # forever: the sender gets a 503 and sends again later.
        job = self._committing
        if job is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(job)
            await asyncio.sleep(0)  # let _committed answer that batch
        _fail(self._pending, "the inbox is shutting down")
        self._pending.clear()
        await self.db.close()

    def wake(self) -> None:
        """Look for due activities now (after a handler's dependency changed, in tests)."""
        self.processor.wake()

    # -- HTTP --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """The aiohttp handler for ``POST /inbox`` (and the shared inbox)."""
        try:
            body = await self._read_bounded(request)
            receipt = await self.receive(request.method, request.raw_path, request.headers, body)
        except (FederationError, ProtocolError) as exc:
            detail = exc.describe() if isinstance(exc, ProtocolError) else exc.detail
            return _json({"error": exc.code, "detail": detail}, exc.status)
        return _json({"id": receipt.activity_id, "status": receipt.status}, 202)

    async def _read_bounded(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise PayloadTooLarge(f"body of {length} bytes exceeds the limit of {self.max_body}")
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"body exceeds the limit of {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- the gates ---------------------------------------------------------------

    async def receive(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Receipt:
        """Verify, dedupe and store one activity; raise the error of the failing gate."""
        if len(body) > self.max_body:
            raise PayloadTooLarge(f"body of {len(body)} bytes exceeds the limit of {self.max_body}")
        parsed = httpsig.parse_signature_headers(method, path, headers, body, scheme=self._scheme)
        activity = canonical.decode_object(body, max_bytes=self.max_body)
        activity_id, kind, actor = activity.get("id"), activity.get("type"), activity.get("actor")
        actor = actor_id(actor)
        if not isinstance(activity_id, str) or not isinstance(kind, str) or actor is None:
            raise InboxError("an activity needs string 'id', 'type' and 'actor'", code="malformed")
        actor_host = _actor_host(actor)
        if not actor_host or _host(activity_id) != actor_host:
            raise InboxError(
                f"activity {activity_id} is not on the host of its actor {actor}",
                code="foreign_id",
            )
        await self._verify_transport(parsed, actor)
        entry = await self._checked_entry(activity)
        state = RECEIVED if self.processor.handles(kind) else IGNORED
        record = IncomingRecord(
            activity_id=activity_id,
            body_digest=hashlib.sha256(body).hexdigest(),
            actor=actor,
            type=kind,
            body=body,
            state=state,
            entry=entry,
        )
        outcome = await self._store(record)
        if outcome.status == "conflict" and outcome.equivocation:
            return Receipt(activity_id, "accepted", True)  # kept as evidence only
        if outcome.status == "conflict":
            assert outcome.stored_body is not None
            # The same activity serialized differently is still the same activity.
            stored = canonical.decode_object(
                outcome.stored_body, max_bytes=len(outcome.stored_body)
            )
            if canonical.digest(stored) != canonical.digest(activity):
                raise ReplayedActivity(
                    f"activity {activity_id} from {actor} was already received"
                    " with different content"
                )
            return Receipt(activity_id, "duplicate")
        if outcome.status == "duplicate":
            return Receipt(activity_id, "duplicate")
        if state == RECEIVED and not outcome.equivocation:
            self.processor.wake()
        return Receipt(
            activity_id, "accepted" if state == RECEIVED else "ignored", outcome.equivocation
        )

    async def _verify_transport(self, parsed: httpsig.ParsedSignature, actor: str) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        for refresh in (False, True):
            try:
                key = await self._transport_keys(parsed.key_id, refresh)
            except (FederationError, ProtocolError) as exc:
                why = exc.describe() if isinstance(exc, ProtocolError) else exc.detail
                raise UnknownKey(f"key {parsed.key_id} could not be had: {why}") from exc
            if key.owner != actor:
                raise SignerMismatch(
                    f"signed by {parsed.key_id} of {key.owner}, but the activity's actor is {actor}"
                )
            try:
                httpsig.verify_request(parsed, key.public_key, now=now)
                return
            except SignatureError as exc:
                if exc.code != "bad_signature" or refresh:
                    raise

    async def _verify_entry(self, obj: object) -> EntryRecord | None:
        if isinstance(obj, list) and any(isinstance(o, dict) and "seq" in o for o in obj):
            # Handlers see one verified entry per activity, never a list to re-check.
            raise InboxError("an activity carries at most one chain entry", code="malformed")
        if not isinstance(obj, dict) or "seq" not in obj:
            return None
        if not isinstance(obj.get("proof"), dict):
            actor, seq = obj.get("actor"), obj.get("seq")
            raise InboxError(
                f"actor {actor}, seq {seq}: the entry carries no proof", code="unsigned"
            )
        env = entries.read_envelope(obj)  # strict §5 envelope; ChainError names actor, seq
        method = env.proof.verificationMethod
        if not method.startswith(env.actor + "#"):
            raise ProofError(
                f"proof key {method} is not one of the author's keys",
                actor=env.actor,
                seq=env.seq,
            )
        try:
            key = await self._entry_keys(env.actor, env.seq, method)
        except (FederationError, ProtocolError) as exc:
            why = exc.describe() if isinstance(exc, ProtocolError) else exc.detail
            raise UnknownKey(
                f"actor {env.actor}, seq {env.seq}: no key {method} valid at this seq: {why}"
            ) from exc
        try:
            # One canonicalization serves the proof and the entry's digest (§5).
            digest = proofs.verified_digest(obj, key)
        except ProtocolError as exc:
            exc.actor, exc.seq = env.actor, env.seq  # say where
            raise
        return EntryRecord(env.actor, env.seq, digest, msgspec.json.encode(obj))

    async def _checked_entry(self, activity: dict[str, object]) -> EntryRecord | None:
        """The chain entry the activity carries (as its object, or itself when sent
        bare, as nodes relay entries), verified; a refused one is logged, not kept."""
        obj = activity.get("object")
        candidate = obj if isinstance(obj, dict) and "seq" in obj else None
        if candidate is None and "seq" in activity:
            candidate = activity
        try:
            if candidate is None:
                return await self._verify_entry(obj)  # None, or the one-entry rule
            return await self._verify_entry(candidate)
        except (FederationError, ProtocolError) as exc:
            if candidate is not None:
                await self._log_refusal(candidate, exc)
            raise

    async def _log_refusal(
        self, entry: dict[str, object], exc: FederationError | ProtocolError
    ) -> None:
        if self._on_refusal is None:
            return
        reason = exc.describe() if isinstance(exc, ProtocolError) else exc.detail
        refusal = entry_refusal(entry, at=self._clock(), code=exc.code, reason=reason)
        try:
            await self._on_refusal(refusal)
        except Exception:
            # The sender gets its error either way; a log that cannot be written
            # must not turn a refusal into a 500.
            log.exception("could not log the refusal of %s seq %s", refusal.actor, refusal.seq)

    # -- group commit --------------------------------------------------------------

    def _store(self, record: IncomingRecord) -> asyncio.Future[store.StoreOutcome]:
        if self._closing:
            raise FederationError("the inbox is shutting down", code="unavailable", status=503)
        pending = _Pending(record)
        self._pending.append(pending)
        if self._committing is None and not self._kicked:
            # From the next turn of the loop, so that every request this turn has
            # verified joins the batch.
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._commit_next)
        return pending.done

    def _commit_next(self) -> None:
        # Requests that arrive while one batch commits form the next batch: one
        # fsync serves many activities, and each waits for the commit of its own.
        self._kicked = False
        if self._committing is not None or not self._pending or self._closing:
            return
        batch = self._pending[: self._batch_size]
        del self._pending[: len(batch)]
        loop = asyncio.get_running_loop()
        try:
            job = self.db.submit(store.store_incoming, [p.record for p in batch], self._clock())
        except RuntimeError as exc:  # the database is closed: nobody may wait forever
            _fail(batch, f"could not store: {exc}")
            return
        self._committing = job
        # Straight from the database thread to a callback on the loop, not through an
        # awaiting task: one turn of the loop fewer between the commit and the 202s,
        # and a turn is long when the loop is busy (every request ready in it runs).
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._committed, batch, job))

    def _committed(self, batch: list[_Pending], job: concurrent.futures.Future[Any]) -> None:
        self._committing = None
        try:
            outcomes: list[store.StoreOutcome] = job.result()
        except Exception as exc:
            _fail(batch, f"could not store: {exc}")
        else:
            for p, outcome in zip(batch, outcomes, strict=True):
                if not p.done.done():
                    p.done.set_result(outcome)
        self._commit_next()


def inbox_ctx(
    factory: Callable[[web.Application], Inbox], key: web.AppKey[Inbox]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry that runs an inbox for the app's lifetime."""
    return store.service_ctx(factory, key)
