"""Remote actors over real HTTP on loopback: resolve, cache with expiry, pinned keys
that change only through a KeyRotation in the actor's own verified chain."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from fedkit import StaticSource, make_actor

from federation.actors import ActorCache, ActorKeyError
from federation.client import FederationClient, FetchError, Limits
from federation.documents import AssertionKey, DocumentError
from federation.routes import setup_routes
from protocol import chain
from protocol.keys import SigningKey

T0 = "2026-11-26T14:00:00Z"
K0, K1, K2 = (SigningKey.from_seed(bytes([n]) * 32) for n in (1, 2, 3))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def remote(serve) -> tuple[str, StaticSource]:  # type: ignore[no-untyped-def]
    source = StaticSource(make_actor("http://placeholder"), [])
    app = web.Application()
    setup_routes(app, source)
    base: str = await serve(app)
    source.actor = make_actor(base, seed=1)
    source.entries = [msgspec.json.encode(chain.genesis(source.actor.id, "R", "region", K0, T0))]
    return base, source


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[tuple[ActorCache, Clock]]:
    clock = Clock()
    client = FederationClient(
        signer=None, allow_private_network=True, limits=Limits(max_bytes=20_000)
    )
    actors = await ActorCache.open(tmp_path / "node.sqlite3", client, ttl=60, clock=clock)
    yield actors, clock
    await actors.close()
    await client.close()


def _rotate(source: StaticSource, new: SigningKey, *, signer: SigningKey = K0) -> None:
    """Append a KeyRotation to the source's chain and publish the new key."""
    entries = [msgspec.json.decode(e) for e in source.entries]
    actor = source.actor.id
    entry = chain.rotation(
        actor,
        len(entries),
        chain.entry_digest(entries[-1]),
        signer,
        chain.key_id(actor, 0),
        new.verify_key,
        T0,
    )
    source.entries.append(msgspec.json.encode(entry))
    _publish(source, new, chain.key_id(actor, len(entries)))


def _publish(source: StaticSource, key: SigningKey, key_id: str) -> None:
    source.actor = msgspec.structs.replace(
        source.actor, assertion_key=AssertionKey(key_id, key.verify_key.multibase)
    )


async def test_resolve_by_handle_url_and_base_url(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    base, source = remote
    actors, _ = cache
    by_handle = await actors.resolve(f"acct:riverside@{base[7:]}")
    by_base = await actors.resolve(base)
    by_id = await actors.resolve(source.actor.id)
    assert by_handle.id == by_base.id == by_id.id == source.actor.id
    assert by_handle.inbox == base + "/inbox"


@pytest.mark.parametrize(
    ("name", "code"), [("acct:ghost@{host}", "not_found"), ("acct:nobody", "bad_resource")]
)
async def test_resolve_refuses_unknown_and_malformed_handles(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock], name: str, code: str
) -> None:
    base, _ = remote
    actors, _ = cache
    with pytest.raises(DocumentError) as info:
        await actors.resolve(name.format(host=base[7:]))
    assert info.value.code == code


async def test_cache_serves_until_expiry_then_refetches(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, clock = cache
    assert (await actors.get(source.actor.id)).name == "Riverside chapter"
    source.actor = msgspec.structs.replace(source.actor, name="Renamed")
    clock.now += 59
    assert (await actors.get(source.actor.id)).name == "Riverside chapter"
    clock.now += 2
    assert (await actors.get(source.actor.id)).name == "Renamed"


async def test_key_rotation_backed_by_the_chain_is_followed(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, _ = cache
    first = await actors.get(source.actor.id)
    assert first.assertion_keys[-1].public_key_multibase == K0.verify_key.multibase
    _rotate(source, K1)
    rotated = await actors.get(source.actor.id, refresh=True)
    assert rotated.assertion_keys[-1].public_key_multibase == K1.verify_key.multibase
    # Proof keys by seq come from the verified chain: K0 signed seq 0 and the rotation.
    actor = source.actor.id
    assert await actors.entry_key(actor, 1, chain.key_id(actor, 0)) == K0.verify_key
    with pytest.raises(ActorKeyError):
        await actors.entry_key(actor, 1, chain.key_id(actor, 1))  # not yet valid at seq 1


async def test_key_swap_without_rotation_is_refused_and_pinned_key_stays(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, clock = cache
    await actors.get(source.actor.id)
    _publish(source, K2, source.actor.id + "#ed25519-5")
    with pytest.raises(ActorKeyError) as info:
        await actors.get(source.actor.id, refresh=True)
    assert "no KeyRotation" in info.value.detail or "latest key" in info.value.detail
    clock.now += 1
    kept = await actors.get(source.actor.id)
    assert kept.assertion_keys[-1].public_key_multibase == K0.verify_key.multibase


async def test_rotation_signed_by_another_key_is_refused(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, _ = cache
    await actors.get(source.actor.id)
    _rotate(source, K2, signer=K2)  # forged: not signed by the key valid at that seq
    with pytest.raises(ActorKeyError) as info:
        await actors.get(source.actor.id, refresh=True)
    assert "does not verify" in info.value.detail


async def test_transport_key_is_the_actor_rsa_key(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, _ = cache
    key = await actors.transport_key(source.actor.id + "#main-key", False)
    assert key.owner == source.actor.id and isinstance(key.public_key, rsa.RSAPublicKey)
    with pytest.raises(ActorKeyError):
        await actors.by_key_id(source.actor.id + "#other-key")


async def _serve_doc(serve: Any, document: Any, raw: bytes | None = None) -> str:
    async def handler(request: web.Request) -> web.Response:
        body = raw if raw is not None else msgspec.json.encode(document)
        return web.Response(body=body, content_type="application/activity+json")

    app = web.Application()
    app.router.add_get("/actor", handler)
    base: str = await serve(app)
    return base + "/actor"


async def test_oversized_actor_document_is_refused(serve, cache: tuple[ActorCache, Clock]) -> None:  # type: ignore[no-untyped-def]
    url = await _serve_doc(serve, None, raw=b'{"id": "' + b"x" * 30_000 + b'"}')
    with pytest.raises(FetchError) as info:
        await cache[0].get(url)
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"id": "{url}", "type": "Group"}, "malformed"),
        ({"id": "{url}", "type": "Note", "inbox": "{url}/inbox"}, "not an actor"),
        ({"id": "https://elsewhere.example/actor", "type": "Group", "inbox": "x"}, "claims"),
        (
            {
                "id": "{url}",
                "type": "Group",
                "inbox": "x",
                "publicKey": {
                    "id": "{url}#k",
                    "owner": "https://elsewhere.example/a",
                    "publicKeyPem": "x",
                },
            },
            "owned by",
        ),
    ],
)
async def test_malformed_or_foreign_actor_documents_are_refused(
    serve: Any,
    cache: tuple[ActorCache, Clock],
    document: dict[str, Any],
    fragment: str,
) -> None:
    holder: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        text = msgspec.json.encode(document).decode().replace("{url}", holder["url"])
        return web.Response(text=text, content_type="application/activity+json")

    app = web.Application()
    app.router.add_get("/actor", handler)
    holder["url"] = (await serve(app)) + "/actor"
    with pytest.raises(DocumentError) as info:
        await cache[0].get(holder["url"])
    assert fragment in info.value.detail


async def test_entry_keys_follow_new_entries_and_refuse_retired_keys(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, _ = cache
    actor = source.actor.id
    k0_id, k1_id = chain.key_id(actor, 0), chain.key_id(actor, 1)
    # The next entry (seq 1) is signed by the key the chain so far ends with.
    assert await actors.entry_key(actor, 1, k0_id) == K0.verify_key
    _rotate(source, K1)  # seq 1 rotates to K1: from seq 2 on only K1 is valid
    assert await actors.entry_key(actor, 2, k1_id) == K1.verify_key
    with pytest.raises(ActorKeyError) as retired:
        await actors.entry_key(actor, 2, k0_id)
    assert "seq 2" in retired.value.detail and k1_id in retired.value.detail


async def test_forged_entry_in_a_gap_is_refused(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock]
) -> None:
    _, source = remote
    actors, _ = cache
    actor = source.actor.id
    await actors.entry_key(actor, 1, chain.key_id(actor, 0))
    _rotate(source, K2, signer=K2)  # seq 1 signed by a key that was never valid
    with pytest.raises(ActorKeyError) as info:
        await actors.entry_key(actor, 2, chain.key_id(actor, 1))
    assert "does not verify" in info.value.detail


async def test_a_new_chain_under_a_known_id_is_refused(
    remote: tuple[str, StaticSource], cache: tuple[ActorCache, Clock], tmp_path: Path
) -> None:
    _, source = remote
    actors, _ = cache
    await actors.get(source.actor.id)  # pins K0
    actor = source.actor.id
    source.entries = [msgspec.json.encode(chain.genesis(actor, "R", "region", K2, T0))]
    # A restarted node (a fresh cache over the same file) still knows the pinned key.
    again = await ActorCache.open(tmp_path / "node.sqlite3", actors.client)
    try:
        with pytest.raises(ActorKeyError) as info:
            await again.entry_key(actor, 1, chain.key_id(actor, 0))
        assert "pinned" in info.value.detail
    finally:
        await again.close()


async def test_a_cache_whose_schema_fails_closes_its_connection(tmp_path: Path) -> None:
    db = tmp_path / "node.sqlite3"
    with sqlite3.connect(db) as conn:  # an index holds the name the cache's table needs
        conn.execute("CREATE TABLE t (x)")
        conn.execute("CREATE INDEX fed_actor_key ON t (x)")
    before = set(threading.enumerate())
    async with FederationClient(signer=None) as client:
        with pytest.raises(sqlite3.OperationalError, match="fed_actor_key"):
            await ActorCache.open(db, client)
    # A closed connection's thread ends just after close() returns: give it a moment.
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert leaked == []
