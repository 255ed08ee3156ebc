"""Remote actors: resolve, fetch (signed GET), cache with expiry, follow key rotations.

Theory of operation. A node needs other actors' documents for three things: their
inboxes (delivery), their RSA key (HTTP signatures, docs/protocol.md §9) and their
current Ed25519 key (object proofs, FEP-521a). Documents are cached in SQLite
(``fed_actor``) for ``ttl`` seconds and refetched after, or at once when a signature
fails with the cached key (the sender may have rotated).

The Ed25519 key is *pinned*: the first key seen for an actor is trusted on first use,
and a later document naming another key is accepted only if the actor's own chain
says so — its outbox, verified with protocol/chain.py, must carry a ``KeyRotation``
entry signed by the pinned key (directly or through a sequence of such entries) that
leads to the new key (ARCHITECTURE "The signature chain"). Otherwise the new document
is refused with ``ActorKeyError`` and the cached, pinned document stays in place: a
server that loses its domain cannot silently swap the key that signs its tallies.

Handles are resolved with WebFinger (RFC 7033 §4): ``acct:USER@HOST`` → the JRD's
``self`` link → the actor. A URL is fetched as is; a node's base URL answers with its
actor document, whose id is then fetched again to be sure the document speaks for it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from yarl import URL

from federation.client import JSON_ACCEPT, FederationClient, FetchError
from federation.documents import DocumentError, RemoteActor, parse_acct, parse_actor, self_link
from federation.errors import FederationError
from federation.inbox import TransportKey
from protocol import chain as chains
from protocol.errors import ProtocolError
from protocol.keys import VerifyKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS fed_actor (
    id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    fetched_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    pinned_key_id TEXT,
    pinned_key TEXT
);
CREATE TABLE IF NOT EXISTS fed_actor_key (
    key_id TEXT PRIMARY KEY,
    actor_id TEXT NOT NULL
);
"""

DEFAULT_TTL = 24 * 3600.0
MAX_CHAIN_PAGES = 1000
_IN_BATCH = 500  # ids per IN (...) query, under SQLite's bound-parameter limit
MAX_ENTRY_GAP = 32  # missing entries fetched one by one; beyond, the outbox is reread


class ActorKeyError(FederationError):
    """A remote actor's document names a key its own chain does not back."""

    code = "unbacked_key"
    status = 401


def _is_private_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


class ActorCache:
    """Fetches and caches remote actors; one per node, over its own SQLite connection."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        client: FederationClient,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self.client = client
        self.ttl = ttl
        self._clock = clock
        self._rsa: dict[str, rsa.RSAPublicKey] = {}
        # Verified chain states of remote actors, to answer "which key at seq n".
        self._chains: dict[str, chains.ChainState] = {}

    @classmethod
    async def open(
        cls,
        path: str | Path,
        client: FederationClient,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> ActorCache:
        conn = await aiosqlite.connect(str(path))
        try:
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.executescript(SCHEMA)
            await conn.commit()
        except BaseException:
            # The connection owns a thread: a node that cannot set up its cache must
            # not leave it running (the process would then not exit).
            await conn.close()
            raise
        return cls(conn, client, ttl=ttl, clock=clock)

    async def close(self) -> None:
        await self._conn.close()

    # --- lookups ------------------------------------------------------------------

    async def get(self, actor_id: str, *, refresh: bool = False) -> RemoteActor:
        """The actor ``actor_id``: from the cache while fresh, else fetched and checked."""
        row = await self._row(actor_id)
        if row is not None and not refresh and row[2] > self._clock():
            return parse_actor(msgspec.json.decode(row[0]), expected_id=actor_id)
        document = await self.client.get_json(actor_id)
        actor = parse_actor(document, expected_id=actor_id)
        pinned = (row[3], row[4]) if row is not None else None
        await self._check_key_continuity(actor, pinned)
        await self._store(actor)
        return actor

    async def cached(self, actor_ids: Iterable[str]) -> dict[str, RemoteActor]:
        """The actors among ``actor_ids`` as last fetched here, however stale, without
        fetching or checking anything anew: to show a name, never to trust. An id never
        fetched, or whose stored document no longer parses, is left out."""
        ids = list(dict.fromkeys(actor_ids))
        found: dict[str, RemoteActor] = {}
        for start in range(0, len(ids), _IN_BATCH):
            batch = ids[start : start + _IN_BATCH]
            marks = ", ".join("?" * len(batch))
            cur = await self._conn.execute(
                f"SELECT id, document FROM fed_actor WHERE id IN ({marks})", batch
            )
            rows = await cur.fetchall()
            await cur.close()
            for actor_id, document in rows:
                try:
                    found[actor_id] = parse_actor(
                        msgspec.json.decode(document), expected_id=actor_id
                    )
                except (msgspec.DecodeError, FederationError):
                    continue
        return found

    async def by_key_id(self, key_id: str, *, refresh: bool = False) -> RemoteActor:
        """The actor owning ``key_id`` (``{actor}#main-key``, ``{actor}#ed25519-k``, or a
        fragment-less key URL as GoToSocial writes it)."""
        if not refresh:
            cur = await self._conn.execute(
                "SELECT actor_id FROM fed_actor_key WHERE key_id = ?", (key_id,)
            )
            row = await cur.fetchone()
            await cur.close()
            if row is not None:
                actor = await self.get(str(row[0]))
                if _owns(actor, key_id):
                    return actor
        url = str(URL(key_id).with_fragment(None))
        document = await self.client.get_json(url)
        if document.get("type") not in (None, "Key", "CryptographicKey") and "inbox" in document:
            actor_id = str(document.get("id", url))
        elif isinstance(document.get("owner"), str):
            actor_id = str(document["owner"])  # a bare key document names its owner
        else:
            raise DocumentError(f"{key_id} leads to neither an actor nor a key with an owner")
        actor = await self.get(actor_id, refresh=True)
        if not _owns(actor, key_id):
            raise ActorKeyError(f"{actor.id} does not publish the key {key_id}")
        return actor

    async def rsa_public_key(self, key_id: str, *, refresh: bool = False) -> rsa.RSAPublicKey:
        """The RSA key for verifying an HTTP signature by ``key_id``."""
        actor = await self.by_key_id(key_id, refresh=refresh)
        if actor.rsa_public_pem is None or actor.rsa_key_id is None:
            raise ActorKeyError(f"{actor.id} publishes no RSA publicKey")
        cached = self._rsa.get(actor.rsa_public_pem)
        if cached is not None:
            return cached
        try:
            key = serialization.load_pem_public_key(actor.rsa_public_pem.encode())
        except ValueError as exc:
            raise DocumentError(f"{actor.rsa_key_id}: publicKeyPem is not a PEM key") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise DocumentError(f"{actor.rsa_key_id}: publicKeyPem is not an RSA key")
        self._rsa[actor.rsa_public_pem] = key
        return key

    async def transport_key(self, key_id: str, refresh: bool) -> TransportKey:
        """For the inbox: the key an HTTP signature names (RSA ``publicKey`` or an
        Ed25519 ``assertionMethod`` key), refetched when ``refresh``."""
        actor = await self.by_key_id(key_id, refresh=refresh)
        assertion = actor.assertion_key(key_id)
        if assertion is not None:
            raw = bytes(VerifyKey.from_multibase(assertion.public_key_multibase))
            return TransportKey(actor.id, ed25519.Ed25519PublicKey.from_public_bytes(raw))
        return TransportKey(actor.id, await self.rsa_public_key(key_id))

    async def entry_key(self, actor_id: str, seq: int, method: str) -> VerifyKey:
        """For object proofs: the key valid at ``seq`` in ``actor_id``'s chain, which
        must be the proof's ``verificationMethod``.

        The chain is verified with protocol/chain.py and its state kept per actor.
        The key valid at the next seq is known from the entries before it, so the
        common case — the actor's newest entry arriving — costs no fetch; a short gap
        is filled by dereferencing the missing entry ids (``{actor}/entries/{seq}``,
        §5) and a long one by reading the whole outbox again.
        """
        state = self._chains.get(actor_id)
        if state is None or seq - state.next_seq > MAX_ENTRY_GAP:
            state = await self._verified_chain(actor_id)
        try:
            while state.next_seq < seq:
                entry = await self.client.get_json(chains.entry_id(actor_id, state.next_seq))
                state = chains.verify_next(state, entry)
        except ProtocolError as exc:
            raise ActorKeyError(f"{actor_id}'s chain does not verify: {exc}") from exc
        self._chains[actor_id] = state
        key_id, key = (state.key_id, state.key) if seq == state.next_seq else self._span(state, seq)
        if key_id != method:
            raise ActorKeyError(
                f"{actor_id} seq {seq}: signed by {method}, but the key valid there is {key_id}"
            )
        return key

    @staticmethod
    def _span(state: chains.ChainState, seq: int) -> tuple[str, VerifyKey]:
        span = state.key_at(seq)
        return span.key_id, span.key

    async def _verified_chain(self, actor_id: str) -> chains.ChainState:
        """The actor's whole chain from its outbox, verified, and consistent with the
        key pinned for it (a brand-new chain under a known id is refused)."""
        actor = await self.get(actor_id)
        try:
            state = chains.verify_chain(await self.chain(actor))
        except ProtocolError as exc:
            raise ActorKeyError(f"{actor_id}'s chain does not verify: {exc}") from exc
        if state.actor != actor_id:
            raise ActorKeyError(f"{actor_id}'s outbox holds the chain of {state.actor}")
        row = await self._row(actor_id)
        pinned = row[4] if row is not None else None
        if pinned is not None and pinned not in {span.key.multibase for span in state.keys}:
            raise ActorKeyError(f"{actor_id}'s chain never held the key pinned here")
        return state

    async def resolve(self, name: str) -> RemoteActor:
        """An actor named by ``acct:USER@HOST`` / ``@USER@HOST`` / ``USER@HOST``, its id,
        or its node's base URL."""
        text = name.strip()
        if text.startswith(("http://", "https://")):
            document = await self.client.get_json(text)
            actor_id = document.get("id")
            if not isinstance(actor_id, str):
                raise DocumentError(f"{text} answers with a document that has no id")
            if URL(actor_id).origin() != URL(text).origin():
                raise DocumentError(f"{text} answers for {actor_id}, on another host")
            if actor_id.rstrip("/") == text.rstrip("/"):  # asked by id: no second fetch
                actor = parse_actor(document, expected_id=actor_id)
                row = await self._row(actor.id)
                await self._check_key_continuity(actor, (row[3], row[4]) if row else None)
                await self._store(actor)
                return actor
            return await self.get(actor_id, refresh=True)
        user, host = parse_acct(text)
        private = self.client.allow_private_network and _is_private_host(
            URL(f"//{host}").host or ""
        )
        scheme = "http" if private else "https"
        resource = f"acct:{user}@{host}"
        finger = URL(f"{scheme}://{host}/.well-known/webfinger").with_query(resource=resource)
        try:
            jrd = await self.client.get_json(str(finger), accept=JSON_ACCEPT)
        except FetchError as exc:
            if exc.code == "not_found":
                raise DocumentError(
                    f"{host} knows no {resource}", code="not_found", status=404
                ) from exc
            raise
        return await self.get(self_link(jrd, resource), refresh=True)

    # --- key continuity -------------------------------------------------------------

    async def _check_key_continuity(
        self, actor: RemoteActor, pinned: tuple[str | None, str | None] | None
    ) -> None:
        if pinned is None or pinned[1] is None:
            return  # first sight: trust on first use, pinned by _store
        current = actor.assertion_keys[-1] if actor.assertion_keys else None
        if current is not None and current.public_key_multibase == pinned[1]:
            return
        if current is None:
            raise ActorKeyError(
                f"{actor.id} no longer publishes an assertionMethod key (pinned {pinned[0]})"
            )
        await self._verify_rotation(actor, pinned[1], current.id, current.public_key_multibase)

    async def _verify_rotation(
        self, actor: RemoteActor, old_key: str, new_id: str, new_key: str
    ) -> None:
        if actor.outbox is None:
            raise ActorKeyError(f"{actor.id} now names key {new_id} and has no chain to back it")
        entries = await self.chain(actor)
        try:
            state = chains.verify_chain(entries)
        except ProtocolError as exc:  # say which fault, keep the pinned key
            raise ActorKeyError(
                f"{actor.id} names a new key {new_id} but its chain does not verify: {exc}"
            ) from exc
        if state.actor != actor.id:
            raise ActorKeyError(f"{actor.id}'s outbox holds the chain of {state.actor}")
        self._chains[actor.id] = state
        multibases = [span.key.multibase for span in state.keys]
        if not multibases or multibases[-1] != new_key:
            raise ActorKeyError(
                f"{actor.id} names key {new_id} but its chain's latest key is another"
            )
        if old_key not in multibases:
            raise ActorKeyError(
                f"{actor.id} names key {new_id}, but no KeyRotation in its chain leads "
                "from the key pinned here to it"
            )

    async def chain(self, actor: RemoteActor) -> list[dict[str, Any]]:
        """The actor's chain from its outbox, oldest first (bounded page walk)."""
        if actor.outbox is None:
            raise DocumentError(f"{actor.id} has no outbox")
        collection = await self.client.get_json(actor.outbox)
        entries: list[dict[str, Any]] = list(_items(collection))
        page: Any = collection.get("first")
        seen: set[str] = set()
        while page is not None:
            if isinstance(page, dict):
                body, url = page, str(page.get("id"))
            elif isinstance(page, str):
                body, url = await self.client.get_json(page), page
            else:
                raise DocumentError(f"{actor.outbox}: a page link is neither URL nor page")
            if url in seen or len(seen) >= MAX_CHAIN_PAGES:
                raise DocumentError(f"{actor.outbox}: pages loop or exceed {MAX_CHAIN_PAGES}")
            seen.add(url)
            entries += _items(body)
            page = body.get("next")
        return entries

    async def collection_ids(self, url: str, *, limit: int) -> list[str]:
        """The item ids of a (possibly paged) collection such as ``followers``, bounded."""
        collection = await self.client.get_json(url)
        ids = _ids(collection)
        page: Any = collection.get("first")
        seen: set[str] = set()
        while page is not None and len(ids) < limit:
            if isinstance(page, dict):
                body, where = page, str(page.get("id"))
            elif isinstance(page, str):
                body, where = await self.client.get_json(page), page
            else:
                raise DocumentError(f"{url}: a page link is neither URL nor page")
            if where in seen or len(seen) >= MAX_CHAIN_PAGES:
                raise DocumentError(f"{url}: pages loop or exceed {MAX_CHAIN_PAGES}")
            seen.add(where)
            ids += _ids(body)
            page = body.get("next")
        return ids[:limit]

    # --- storage --------------------------------------------------------------------

    async def _row(
        self, actor_id: str
    ) -> tuple[bytes, float, float, str | None, str | None] | None:
        cur = await self._conn.execute(
            "SELECT document, fetched_at, expires_at, pinned_key_id, pinned_key"
            " FROM fed_actor WHERE id = ?",
            (actor_id,),
        )
        row = await cur.fetchone()
        await cur.close()
        if row is None:
            return None
        return (bytes(row[0]), float(row[1]), float(row[2]), row[3], row[4])

    async def _store(self, actor: RemoteActor) -> None:
        now = self._clock()
        current = actor.assertion_keys[-1] if actor.assertion_keys else None
        await self._conn.execute(
            "INSERT INTO fed_actor"
            " (id, document, fetched_at, expires_at, pinned_key_id, pinned_key)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET document = excluded.document,"
            " fetched_at = excluded.fetched_at, expires_at = excluded.expires_at,"
            " pinned_key_id = excluded.pinned_key_id, pinned_key = excluded.pinned_key",
            (
                actor.id,
                msgspec.json.encode(actor.document),
                now,
                now + self.ttl,
                current.id if current else None,
                current.public_key_multibase if current else None,
            ),
        )
        key_ids = [k.id for k in actor.assertion_keys]
        if actor.rsa_key_id is not None:
            key_ids.append(actor.rsa_key_id)
        await self._conn.executemany(
            "INSERT INTO fed_actor_key (key_id, actor_id) VALUES (?, ?)"
            " ON CONFLICT (key_id) DO UPDATE SET actor_id = excluded.actor_id",
            [(key_id, actor.id) for key_id in key_ids],
        )
        await self._conn.commit()


def _owns(actor: RemoteActor, key_id: str) -> bool:
    if key_id == actor.rsa_key_id or actor.assertion_key(key_id) is not None:
        return True
    # GoToSocial: keyId without fragment, the key being the actor's publicKey.
    return actor.rsa_key_id is not None and URL(actor.rsa_key_id).with_fragment(None) == URL(key_id)


def _ids(collection: dict[str, Any]) -> list[str]:
    items = collection.get("orderedItems", collection.get("items", []))
    if not isinstance(items, list):
        raise DocumentError(f"{collection.get('id', 'collection')}: items are not a list")
    out = []
    for item in items:
        ref = item.get("id") if isinstance(item, dict) else item
        if not isinstance(ref, str):
            raise DocumentError(f"{collection.get('id', 'collection')}: an item has no id")
        out.append(ref)
    return out


def _items(collection: dict[str, Any]) -> list[dict[str, Any]]:
    items = collection.get("orderedItems", collection.get("items", []))
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DocumentError(f"{collection.get('id', 'outbox')}: items are not objects")
    return items
