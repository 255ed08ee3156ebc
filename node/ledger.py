"""Appending to the node's signature chain (ARCHITECTURE "The signature chain").

Entries are built and signed by protocol/chain.py; this module only decides *when*:
inside the caller's write transaction, right after reading the head under SQLite's
write lock, so `seq` has no gap even with two processes writing, and the entry
commits or vanishes together with the state change it records.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from node import chain_store, identity_store
from node.clock import Clock, rfc3339
from node.identity import IdentityError, NodeIdentity
from node.storage import Database, Tx
from protocol import chain

log = logging.getLogger("convene.chain")


@dataclass(frozen=True)
class Appended:
    seq: int
    digest: str
    entry: dict[str, Any]


ExtraWrites = Callable[[Tx, Appended], Awaitable[None]]
AppendHook = Callable[[Tx, Appended], Awaitable[None]]


class Ledger:
    def __init__(self, db: Database, identity: NodeIdentity, clock: Clock) -> None:
        self._db = db
        self._identity = identity
        self._clock = clock
        # Called inside the appending transaction for every new entry (seq > 0), so a
        # layer that must act on entries (federation queues deliveries) commits with them.
        self.on_append: list[AppendHook] = []
        self._seen = identity.key_seq  # entries up to here hold no rotation we missed

    async def append_in(self, tx: Tx, body: dict[str, Any]) -> Appended:
        """Sign `body` as the next entry and store it in the open transaction `tx`."""
        last = await chain_store.head(tx)
        if last is None:
            raise chain_store.ChainStoreError("the chain has no genesis; run `convene init`")
        seq, prev = last[0] + 1, last[1]
        # Another process (`convene key rotate` on this folder) may have rotated the key
        # since we loaded it: signing with ours would put a retired key in the chain.
        if last[0] > self._seen:
            rotated = await identity_store.latest_rotation_after(tx, self._seen)
            if rotated is not None and rotated != self._identity.key_seq:
                raise IdentityError(
                    f"{self._identity.actor}'s key was rotated at seq {rotated} by another"
                    " process; restart the node to sign with the new key"
                )
            self._seen = last[0]
        published = rfc3339(self._clock())
        built = chain.make_entry(
            body,
            actor=self._identity.actor,
            seq=seq,
            prev=prev,
            key=self._identity.signing_key,
            key_id=self._identity.key_id,
            published=published,
        )
        appended = await self._store(tx, seq, built, published)
        for hook in self.on_append:
            await hook(tx, appended)
        return appended

    async def _store(self, tx: Tx, seq: int, built: Any, published: str) -> Appended:
        entry: dict[str, Any] = msgspec.to_builtins(built)
        digest = chain.entry_digest(built)
        await chain_store.insert(
            tx,
            seq=seq,
            type_=str(entry["type"]),
            digest=digest,
            published=published,
            blob=msgspec.json.encode(entry),
        )
        log.info("chain append seq=%d type=%s digest=%s", seq, entry["type"], digest)
        return Appended(seq=seq, digest=digest, entry=entry)

    async def append_genesis(self, tx: Tx) -> Appended:
        """Entry 0: names the actor and its first key (only on an empty chain)."""
        if await chain_store.head(tx) is not None:
            raise chain_store.ChainStoreError(f"{self._identity.actor} already has a genesis")
        identity = self._identity
        published = rfc3339(self._clock())
        built = chain.genesis(
            identity.actor, identity.name, identity.kind, identity.signing_key, published
        )
        return await self._store(tx, 0, built, published)

    async def append(self, body: dict[str, Any], extra: ExtraWrites | None = None) -> Appended:
        """Append one entry and run `extra(tx, appended)` in the same transaction."""
        async with self._db.write() as tx:
            appended = await self.append_in(tx, body)
            if extra is not None:
                await extra(tx, appended)
            return appended

    async def entries(self, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored entries, oldest first, as the JSON objects that were signed."""
        blobs = await chain_store.entries(self._db, start, limit)
        return [msgspec.json.decode(blob) for blob in blobs]
