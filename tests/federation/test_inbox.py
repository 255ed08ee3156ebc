"""The verified inbox over real HTTP on 127.0.0.1 with a real SQLite file.

Every rejection path answers a typed JSON error and stores nothing; accepted
activities are stored, then handled once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import msgspec
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from federation import httpsig, store
from federation.errors import FederationError
from federation.inbox import EntryRefusal, Inbox, IncomingActivity, TransportKey, inbox_ctx
from protocol import canonical, entries
from protocol.keys import SigningKey, VerifyKey

RSA_KEYS = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
ED_TRANSPORT = ed25519.Ed25519PrivateKey.generate()
CHAPTER = "https://chapter.test/actor"
OTHER = "https://other.test/actor"
ENTRY_KEY = SigningKey.from_seed(bytes(range(32)))
ROTATED_KEY = SigningKey.from_seed(bytes(range(1, 33)))
INBOX_KEY: web.AppKey[Inbox] = web.AppKey("inbox", Inbox)


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass
class Keys:
    """The caller's side of the key resolvers: who owns which transport key, and
    which entry key is valid for which seqs of which chain (a rotation at seq 5)."""

    transport: dict[str, TransportKey] = field(default_factory=dict)
    lookups: list[tuple[str, bool]] = field(default_factory=list)

    async def transport_key(self, key_id: str, refresh: bool) -> TransportKey:
        self.lookups.append((key_id, refresh))
        if key_id not in self.transport:
            raise FederationError(f"{key_id} is not known", code="not_found", status=404)
        return self.transport[key_id]

    async def entry_key(self, actor: str, seq: int, method: str) -> VerifyKey:
        if actor != CHAPTER:
            raise FederationError(f"no chain known for {actor}", code="not_found")
        valid = entries.key_id(CHAPTER, 0) if seq <= 5 else entries.key_id(CHAPTER, 5)
        if method != valid:
            raise FederationError(f"{method} is not the key valid at seq {seq}")
        return (ENTRY_KEY if seq <= 5 else ROTATED_KEY).verify_key


@dataclass
class Node:
    url: str
    inbox: Inbox
    keys: Keys
    clock: Clock
    db: Path
    handled: list[IncomingActivity]
    fail_next: list[bool]
    refusals: list[EntryRefusal]


def entry(seq: int, text: str = "agree", key: SigningKey = ENTRY_KEY) -> dict[str, Any]:
    signer = 0 if key is ENTRY_KEY else 5
    return entries.make_entry(
        {"type": "Tally", "summary": text},
        actor=CHAPTER,
        seq=seq,
        prev=None if seq == 0 else "0" * 64,
        key=key,
        key_id=entries.key_id(CHAPTER, signer),
        published="2026-11-26T14:00:00Z",
    )


def create(n: int, obj: object, actor: str = CHAPTER, kind: str = "Create") -> dict[str, Any]:
    host = actor.rsplit("/", 1)[0]
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{host}/activities/{n}",
        "type": kind,
        "actor": actor,
        "object": obj,
    }


def signed(
    url: str,
    body: bytes,
    *,
    key: Any = None,
    key_id: str = f"{CHAPTER}#main-key",
    now: datetime | None = None,
    rfc9421: bool = False,
) -> dict[str, str]:
    sign = httpsig.sign_request_rfc9421 if rfc9421 else httpsig.sign_request
    headers = {"Content-Type": "application/activity+json"}
    headers.update(
        sign(
            "POST",
            url,
            headers,
            body,
            key_id=key_id,
            private_key=key if key is not None else RSA_KEYS[0],
            now=now or datetime.now(UTC),
        )
    )
    return headers


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    keys = Keys()
    keys.transport[f"{CHAPTER}#main-key"] = TransportKey(CHAPTER, RSA_KEYS[0].public_key())
    keys.transport[f"{OTHER}#main-key"] = TransportKey(OTHER, RSA_KEYS[1].public_key())
    keys.transport[f"{CHAPTER}#ed"] = TransportKey(CHAPTER, ED_TRANSPORT.public_key())
    clock = Clock()
    handled: list[IncomingActivity] = []
    fail_next: list[bool] = []
    refusals: list[EntryRefusal] = []

    async def on_refusal(refusal: EntryRefusal) -> None:
        refusals.append(refusal)

    async def on_create(activity: IncomingActivity) -> None:
        if fail_next and fail_next.pop():
            raise RuntimeError("handler hiccup")
        handled.append(activity)

    db = tmp_path / "node.db"
    app = web.Application()
    app.cleanup_ctx.append(
        inbox_ctx(
            lambda _app: Inbox(
                db,
                transport_keys=keys.transport_key,
                entry_keys=keys.entry_key,
                handlers={"Create": on_create, "Announce": on_create},
                clock=clock,
                max_body=16 * 1024,
                scheme="http",
                on_refusal=on_refusal,
            ),
            INBOX_KEY,
        )
    )

    async def handle(request: web.Request) -> web.Response:
        return await request.app[INBOX_KEY].handle(request)

    app.router.add_post("/inbox", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Node(
        f"http://127.0.0.1:{port}/inbox",
        app[INBOX_KEY],
        keys,
        clock,
        db,
        handled,
        fail_next,
        refusals,
    )
    await runner.cleanup()


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def incoming(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT activity_id, state FROM fed_incoming").fetchall()


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def enc(value: object) -> bytes:
    return msgspec.json.encode(value)


# --- accepted ---------------------------------------------------------------------


async def test_accepts_a_signed_entry_stores_it_and_handles_it_once(node: Node) -> None:
    body = enc(create(1, entry(0)))
    status, answer = await post(node.url, body, signed(node.url, body))
    assert (status, answer) == (
        202,
        {"id": "https://chapter.test/activities/1", "status": "accepted"},
    )
    await wait_for(lambda: len(node.handled) == 1)
    got = node.handled[0]
    assert got.actor == CHAPTER and got.entry is not None and got.entry["seq"] == 0
    # Redelivery of the same activity (a sender retrying after a lost answer).
    for _ in range(3):
        status, answer = await post(node.url, body, signed(node.url, body))
        assert (status, answer["status"]) == (202, "duplicate")
    await asyncio.sleep(0.2)
    assert len(node.handled) == 1
    await wait_for(
        lambda: incoming(node.db) == [("https://chapter.test/activities/1", store.PROCESSED)]
    )


async def test_concurrent_duplicates_are_processed_once(node: Node) -> None:
    body = enc(create(2, entry(1)))
    results = await asyncio.gather(
        *(post(node.url, body, signed(node.url, body)) for _ in range(20))
    )
    statuses = sorted(a["status"] for _, a in results)
    assert {s for s, _ in results} == {202}
    assert statuses == ["accepted"] + ["duplicate"] * 19
    await wait_for(lambda: len(node.handled) == 1)
    await asyncio.sleep(0.2)
    assert len(node.handled) == 1


async def test_the_same_activity_serialized_differently_is_a_duplicate(node: Node) -> None:
    activity = create(3, entry(2))
    body = enc(activity)
    assert (await post(node.url, body, signed(node.url, body)))[0] == 202
    again = msgspec.json.encode(dict(reversed(list(activity.items()))))
    assert again != body
    status, answer = await post(node.url, again, signed(node.url, again))
    assert (status, answer["status"]) == (202, "duplicate")


async def test_hs2019_ed25519_and_rfc9421_signatures_are_accepted(node: Node) -> None:
    variants: list[dict[str, Any]] = [
        {"key": ED_TRANSPORT, "key_id": f"{CHAPTER}#ed"},
        {"rfc9421": True},
        {"rfc9421": True, "key": ED_TRANSPORT, "key_id": f"{CHAPTER}#ed"},
    ]
    for n, kwargs in enumerate(variants):
        body = enc(create(10 + n, {"type": "Note", "content": "hi"}))
        status, answer = await post(node.url, body, signed(node.url, body, **kwargs))
        assert (status, answer["status"]) == (202, "accepted"), answer


async def test_an_entry_signed_by_a_rotated_key_verifies_at_its_seq(node: Node) -> None:
    body = enc(create(20, entry(7, key=ROTATED_KEY)))
    assert (await post(node.url, body, signed(node.url, body)))[0] == 202
    old = enc(create(21, entry(8, key=ENTRY_KEY)))  # the retired key, after the rotation
    status, answer = await post(node.url, old, signed(node.url, old))
    assert (status, answer["error"]) == (401, "unknown_key")
    assert f"actor {CHAPTER}, seq 8" in answer["detail"]


async def test_unknown_types_are_accepted_and_ignored(node: Node) -> None:
    body = enc(create(30, {"type": "Note"}, kind="Like"))
    status, answer = await post(node.url, body, signed(node.url, body))
    assert (status, answer["status"]) == (202, "ignored")
    await asyncio.sleep(0.2)
    assert node.handled == []
    assert incoming(node.db) == [("https://chapter.test/activities/30", store.IGNORED)]


async def test_a_relayed_entry_is_judged_by_its_own_proof(node: Node) -> None:
    # Another server relays the chapter's entry verbatim inside its own Announce.
    body = enc(create(1, entry(3), actor=OTHER, kind="Announce"))
    key_id = f"{OTHER}#main-key"
    status, _ = await post(node.url, body, signed(node.url, body, key=RSA_KEYS[1], key_id=key_id))
    assert status == 202
    await wait_for(lambda: len(node.handled) == 1)
    assert node.handled[0].entry is not None and node.handled[0].entry["actor"] == CHAPTER


# --- refused, and nothing stored ---------------------------------------------------


async def refused(node: Node, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    status, answer = await post(node.url, body, headers)
    assert set(answer) == {"error", "detail"} and answer["detail"]
    assert incoming(node.db) == []
    return status, answer["error"], answer["detail"]


async def test_unsigned(node: Node) -> None:
    body = enc(create(1, entry(0)))
    status, code, _ = await refused(node, body, {"Content-Type": "application/activity+json"})
    assert (status, code) == (401, "missing_signature")


async def test_wrong_key(node: Node) -> None:
    body = enc(create(1, entry(0)))
    status, code, _ = await refused(node, body, signed(node.url, body, key=RSA_KEYS[1]))
    assert (status, code) == (401, "bad_signature")
    # A failure with the cached key is retried once with a refreshed key.
    assert node.keys.lookups == [(f"{CHAPTER}#main-key", False), (f"{CHAPTER}#main-key", True)]


async def test_bad_digest(node: Node) -> None:
    body = enc(create(1, entry(0)))
    headers = signed(node.url, body)
    tampered = body.replace(b"agree", b"block")
    status, code, _ = await refused(node, tampered, headers)
    assert (status, code) == (401, "bad_digest")


async def test_old_date(node: Node) -> None:
    body = enc(create(1, entry(0)))
    old = datetime.fromtimestamp(node.clock.t - 3601, UTC)
    status, code, detail = await refused(node, body, signed(node.url, body, now=old))
    assert (status, code) == (401, "stale_date")
    assert "3600" in detail


async def test_signer_is_not_the_actor(node: Node) -> None:
    body = enc(create(1, entry(0)))  # actor CHAPTER, signed with OTHER's key
    headers = signed(node.url, body, key=RSA_KEYS[1], key_id=f"{OTHER}#main-key")
    status, code, detail = await refused(node, body, headers)
    assert (status, code) == (401, "signer_mismatch")
    assert OTHER in detail and CHAPTER in detail


async def test_unknown_transport_key(node: Node) -> None:
    body = enc(create(1, entry(0)))
    headers = signed(node.url, body, key_id=f"{CHAPTER}#nope")
    assert (await refused(node, body, headers))[:2] == (401, "unknown_key")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(summary="disagree"),  # content changed after signing
        lambda e: e["proof"].update(
            proofValue=e["proof"]["proofValue"][:-2]
            + ("1" if e["proof"]["proofValue"][-2] != "1" else "2")
            + e["proof"]["proofValue"][-1]
        ),  # one signature character flipped
    ],
)
async def test_bad_object_proof(node: Node, mutate: Callable[[dict[str, Any]], None]) -> None:
    e = entry(4)
    mutate(e)
    body = enc(create(1, e))
    status, code, detail = await refused(node, body, signed(node.url, body))
    assert (status, code) == (400, "bad_proof")
    assert f"actor {CHAPTER}" in detail and "seq 4" in detail
    # The node is told what was refused, metadata only, with the same code and reason.
    assert [(r.actor, r.seq, r.type, r.code) for r in node.refusals] == [
        (CHAPTER, 4, "Tally", "bad_proof")
    ]
    assert node.refusals[0].reason == detail


async def test_malformed_entry_envelope(node: Node) -> None:
    e = entry(4)
    e["seq"] = "4"
    body = enc(create(1, e))
    status, code, _ = await refused(node, body, signed(node.url, body))
    assert (status, code) == (400, "malformed")


@pytest.mark.parametrize(
    "body",
    [b'{"id": "https://chapter.test/a/1", "type": ', b"[1, 2]", b'{"a": 1, "a": 2}', b"\xff\xfe"],
)
async def test_malformed_json(node: Node, body: bytes) -> None:
    status, code, _ = await refused(node, body, signed(node.url, body))
    assert (status, code) == (400, "malformed")


async def test_entries_in_a_list_are_refused(node: Node) -> None:
    body = enc(create(1, [entry(0), entry(1)]))
    status, code, detail = await refused(node, body, signed(node.url, body))
    assert (status, code) == (400, "malformed")
    assert "at most one chain entry" in detail


async def test_missing_fields_and_foreign_ids(node: Node) -> None:
    body = enc({"id": "https://chapter.test/a/1", "type": "Create"})
    assert (await refused(node, body, signed(node.url, body)))[:2] == (400, "malformed")
    body = enc({**create(1, None), "id": "https://other.test/activities/1"})
    assert (await refused(node, body, signed(node.url, body)))[:2] == (400, "foreign_id")


async def test_oversized(node: Node) -> None:
    body = enc(create(1, {"type": "Note", "content": "x" * 20_000}))
    status, code, _ = await refused(node, body, signed(node.url, body))
    assert (status, code) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: stop while reading
        for _ in range(40):
            yield b" " * 1024

    async with aiohttp.ClientSession() as s, s.post(node.url, data=chunks()) as r:
        assert r.status == 413
        assert (await r.json())["error"] == "too_large"
    assert incoming(node.db) == []


async def test_replay_with_the_same_id_and_other_content(node: Node) -> None:
    first = enc(create(1, entry(0)))
    assert (await post(node.url, first, signed(node.url, first)))[0] == 202
    await wait_for(lambda: len(node.handled) == 1)
    # The same entry in an edited wrapper: no new entry, so nothing is kept.
    second = enc({**create(1, entry(0)), "summary": "edited"})
    status, answer = await post(node.url, second, signed(node.url, second))
    assert (status, answer["error"]) == (409, "replayed")
    with sqlite3.connect(node.db) as conn:
        assert conn.execute("SELECT body FROM fed_incoming").fetchall() == [(first,)]
    assert len(node.handled) == 1


# --- equivocation and processing -------------------------------------------------


async def test_equivocation_keeps_both_entries_and_marks_the_actor(node: Node) -> None:
    a, b = entry(4, "agree"), entry(4, "block")
    for n, e in enumerate((a, b)):
        body = enc(create(40 + n, e))
        status, answer = await post(node.url, body, signed(node.url, body))
        assert (status, answer["status"]) == (202, "accepted")
    # The first entry again, in another activity (a relay): not a new equivocation.
    body = enc(create(42, a))
    status, answer = await post(node.url, body, signed(node.url, body))
    assert (status, answer["status"]) == (202, "accepted")
    async with aiosqlite.connect(node.db) as conn:
        found = await store.equivocations(conn)
        assert await store.is_equivocating(conn, CHAPTER)
        assert not await store.is_equivocating(conn, OTHER)
    assert [(q.actor, q.seq) for q in found] == [(CHAPTER, 4)]
    assert {msgspec.json.decode(x)["summary"] for x in found[0].entries} == {"agree", "block"}
    await wait_for(lambda: len(node.handled) == 2)
    await asyncio.sleep(0.2)
    assert [h.entry["summary"] for h in node.handled if h.entry] == ["agree", "agree"]
    await wait_for(
        lambda: (
            sorted(incoming(node.db))
            == [
                ("https://chapter.test/activities/40", store.PROCESSED),
                ("https://chapter.test/activities/41", store.EVIDENCE),
                ("https://chapter.test/activities/42", store.PROCESSED),
            ]
        )
    )
    with sqlite3.connect(node.db) as conn:
        rows = conn.execute("SELECT digest, body FROM fed_entry").fetchall()
    # Each piece of evidence is the signed entry itself, its §5 digest alongside.
    assert sorted(d for d, _ in rows) == sorted(canonical.digest(e) for e in (a, b))
    assert all(canonical.digest(msgspec.json.decode(body)) == d for d, body in rows)


async def test_a_failing_handler_is_retried_after_a_backoff(node: Node) -> None:
    node.fail_next.append(True)
    body = enc(create(50, entry(0)))
    assert (await post(node.url, body, signed(node.url, body)))[0] == 202
    await wait_for(lambda: not node.fail_next)
    await asyncio.sleep(0.2)
    assert node.handled == []  # not due yet
    node.clock.t += 3
    node.inbox.wake()
    await wait_for(lambda: len(node.handled) == 1)
    await wait_for(
        lambda: incoming(node.db) == [("https://chapter.test/activities/50", store.PROCESSED)]
    )


async def test_stored_but_unprocessed_activities_are_handled_after_a_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "node.db"
    keys = Keys()
    keys.transport[f"{CHAPTER}#main-key"] = TransportKey(CHAPTER, RSA_KEYS[0].public_key())
    seen: list[str] = []
    blocked = asyncio.Event()

    async def stuck(activity: IncomingActivity) -> None:
        blocked.set()
        await asyncio.Event().wait()  # the process dies before this returns

    async def works(activity: IncomingActivity) -> None:
        seen.append(activity.activity_id)

    first = Inbox(
        db,
        transport_keys=keys.transport_key,
        entry_keys=keys.entry_key,
        handlers={"Create": stuck},
        scheme="http",
    )
    await first.start()
    body = enc(create(60, entry(0)))
    url = "http://127.0.0.1:1/inbox"
    headers = signed(url, body)
    receipt = await first.receive("POST", "/inbox", headers, body)
    assert receipt.status == "accepted"
    await asyncio.wait_for(blocked.wait(), 5)
    await first.stop()
    assert incoming(db) == [("https://chapter.test/activities/60", store.RECEIVED)]

    second = Inbox(
        db,
        transport_keys=keys.transport_key,
        entry_keys=keys.entry_key,
        handlers={"Create": works},
        scheme="http",
    )
    await second.start()
    try:
        await wait_for(lambda: seen == ["https://chapter.test/activities/60"])
    finally:
        await second.stop()


async def test_a_hanging_handler_times_out_and_does_not_stall_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    keys = Keys()
    keys.transport[f"{CHAPTER}#main-key"] = TransportKey(CHAPTER, RSA_KEYS[0].public_key())
    seen: list[str] = []

    async def on_create(activity: IncomingActivity) -> None:
        if activity.activity_id.endswith("/70"):
            await asyncio.Event().wait()  # never returns
        seen.append(activity.activity_id)

    inbox = Inbox(
        db,
        transport_keys=keys.transport_key,
        entry_keys=keys.entry_key,
        handlers={"Create": on_create},
        scheme="http",
        handler_timeout=0.2,
    )
    await inbox.start()
    try:
        for n in (70, 71):
            body = enc(create(n, {"type": "Note"}))
            headers = signed("http://127.0.0.1:1/inbox", body)
            await inbox.receive("POST", "/inbox", headers, body)
        await wait_for(lambda: seen == ["https://chapter.test/activities/71"])
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT state, attempts, last_error FROM fed_incoming WHERE activity_id = ?",
                ("https://chapter.test/activities/70",),
            ).fetchone()
        assert row[:2] == (store.RECEIVED, 1) and "TimeoutError" in row[2]
    finally:
        await inbox.stop()


async def test_a_type_whose_handler_went_away_is_ignored_not_failed(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    keys = Keys()
    keys.transport[f"{CHAPTER}#main-key"] = TransportKey(CHAPTER, RSA_KEYS[0].public_key())
    blocked = asyncio.Event()

    async def stuck(activity: IncomingActivity) -> None:
        blocked.set()
        await asyncio.Event().wait()

    first = Inbox(
        db,
        transport_keys=keys.transport_key,
        entry_keys=keys.entry_key,
        handlers={"Create": stuck},
        scheme="http",
    )
    await first.start()
    body = enc(create(80, {"type": "Note"}))
    await first.receive("POST", "/inbox", signed("http://127.0.0.1:1/inbox", body), body)
    await asyncio.wait_for(blocked.wait(), 5)
    await first.stop()
    second = Inbox(
        db,
        transport_keys=keys.transport_key,
        entry_keys=keys.entry_key,
        handlers={},
        scheme="http",
    )
    await second.start()
    try:
        await wait_for(
            lambda: incoming(db) == [("https://chapter.test/activities/80", store.IGNORED)]
        )
    finally:
        await second.stop()
