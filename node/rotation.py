"""Key rotation on a node: a KeyRotation entry signed by the old key names the new one.

Theory of operation (ARCHITECTURE "The signature chain"; docs/protocol.md §5). The
chain alone says which key is valid at every seq, so a rotation *is* one chain entry:
`KeyRotation` at seq n, signed by the current key, whose `assertionKey` is the new key
with id `{actor}#ed25519-n`; from n + 1 on only the new key signs, and an entry signed
by the old one is invalid everywhere (protocol/chain.py says `retired_key`).

One write transaction does it all, so no entry is signed by a key the chain has not
named yet and no rotation commits without the key that it names:

1. append the KeyRotation through the ledger (which refuses if another process rotated
   meanwhile) and queue it to followers when the caller passes `extra`;
2. write the new secrets as `keys/*.new` (node/identity.py), fsynced;
3. swap the keys of the in-memory identity, so the next entry is signed by the new key.

After the commit the `.new` files replace the old ones (a retired secret is not kept:
after a leak it must not be usable again). A crash between commit and rename is
finished by `load_identity` on the next start; a crash before the commit leaves only
an unused `.new` file. `--rsa` also replaces the RSA key that signs HTTP requests; it
is not in the chain (peers refetch the actor document when a signature stops
verifying), so it simply follows the Ed25519 key's fate.

`setup(app)` adds `POST /api/keys/rotate` (admin role) for a running node and keeps
the served actor document and the HTTP signer on the current keys.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from federation import routes
from federation.client import http_signer
from federation.documents import AssertionKey, LocalActor
from node import chain_store
from node.api import SERVICES_KEY, authenticate, json_response, read_body
from node.errors import BadRequest
from node.federation_glue import CLIENT_KEY, publication, wake_delivery
from node.identity import NodeIdentity, finish_rotation, stage_keys
from node.ledger import ExtraWrites, Ledger
from node.members import require_role
from node.storage import Database
from protocol import entries
from protocol.keys import SigningKey

__all__ = ["KeyInfo", "Rotated", "current_keys", "rotate_keys", "setup"]


@dataclass(frozen=True)
class KeyInfo:
    """The node's current keys, as `convene key show` and the API print them."""

    actor: str
    key_id: str
    public_key_multibase: str
    since_seq: int
    rsa_key_id: str
    rsa_public_pem: str

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "key_id": self.key_id,
            "publicKeyMultibase": self.public_key_multibase,
            "since_seq": self.since_seq,
            "rsa_key_id": self.rsa_key_id,
            "rsa_public_pem": self.rsa_public_pem,
        }


@dataclass(frozen=True)
class Rotated:
    """What one rotation did: the entry's seq and digest, the retired and new keys."""

    seq: int
    digest: str
    retired_key_id: str
    rsa_rotated: bool
    current: KeyInfo

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "digest": self.digest,
            "retired_key_id": self.retired_key_id,
            "rsa_rotated": self.rsa_rotated,
            **self.current.to_json(),
        }


def _rsa_public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def current_keys(identity: NodeIdentity) -> KeyInfo:
    return KeyInfo(
        actor=identity.actor,
        key_id=identity.key_id,
        public_key_multibase=identity.signing_key.verify_key.multibase,
        since_seq=identity.key_seq,
        rsa_key_id=identity.rsa_key_id,
        rsa_public_pem=_rsa_public_pem(identity.rsa_key),
    )


async def rotate_keys(
    db: Database,
    ledger: Ledger,
    identity: NodeIdentity,
    data_dir: Path,
    *,
    rotate_rsa: bool = False,
    extra: ExtraWrites | None = None,
) -> Rotated:
    """Rotate the chain key (and the RSA key with `rotate_rsa`); see the module doc.

    `identity` must be the one `ledger` signs with: it is updated in place."""
    seed = secrets.token_bytes(32)
    new_key = SigningKey.from_seed(seed)
    new_rsa = await asyncio.to_thread(_new_rsa_key) if rotate_rsa else None  # ~0.1 s of CPU
    before = (identity.signing_key, identity.key_id, identity.key_seq, identity.rsa_key)
    try:
        async with db.write() as tx:
            head = await chain_store.head(tx)
            if head is None:
                raise chain_store.ChainStoreError("the chain has no genesis; run `convene init`")
            seq = head[0] + 1
            body = {
                "type": "KeyRotation",
                "assertionKey": entries.multikey(identity.actor, seq, new_key.verify_key),
            }
            appended = await ledger.append_in(tx, body)  # signed by the old key
            if extra is not None:
                await extra(tx, appended)
            await asyncio.to_thread(stage_keys, data_dir, seed, new_rsa)  # fsyncs
            # Swapped while we still hold the writer: no entry can be signed between the
            # commit and the swap; a failed commit puts the old keys back below.
            identity.signing_key = new_key
            identity.key_id = entries.key_id(identity.actor, appended.seq)
            identity.key_seq = appended.seq
            if new_rsa is not None:
                identity.rsa_key = new_rsa
    except BaseException:
        identity.signing_key, identity.key_id, identity.key_seq, identity.rsa_key = before
        raise
    finish_rotation(data_dir, new_key.verify_key.multibase)
    return Rotated(
        seq=appended.seq,
        digest=appended.digest,
        retired_key_id=before[1],
        rsa_rotated=new_rsa is not None,
        current=current_keys(identity),
    )


# --- the running node ---------------------------------------------------------------


class _RotateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rsa: bool = False


_rotate_decoder = msgspec.json.Decoder(_RotateBody)


class _CurrentKeysSource:
    """Wraps the federation routes' source so the actor document always shows the
    identity's current keys (the node's source builds its LocalActor once)."""

    def __init__(self, inner: routes.FederationSource, identity: NodeIdentity) -> None:
        self._inner = inner
        self._identity = identity
        self._pem = (identity.rsa_key, _rsa_public_pem(identity.rsa_key))

    async def local_actor(self) -> LocalActor:
        actor = await self._inner.local_actor()
        identity = self._identity
        if self._pem[0] is not identity.rsa_key:
            self._pem = (identity.rsa_key, _rsa_public_pem(identity.rsa_key))
        return msgspec.structs.replace(
            actor,
            rsa_public_pem=self._pem[1],
            assertion_key=AssertionKey(identity.key_id, identity.signing_key.verify_key.multibase),
        )

    async def chain_length(self) -> int:
        return await self._inner.chain_length()

    async def chain_entries(self, start: int, limit: int) -> list[bytes]:
        return await self._inner.chain_entries(start, limit)

    async def followers(self) -> list[str]:
        return await self._inner.followers()

    async def member_count(self) -> int:
        return await self._inner.member_count()


async def rotate_handler(request: web.Request) -> web.Response:
    """`POST /api/keys/rotate` `{"rsa": bool}` (admin): rotate and publish the entry."""
    member = await authenticate(request)
    require_role(member, "admin", "rotating the node's keys")
    raw = await read_body(request)
    try:
        body = _rotate_decoder.decode(raw) if raw.strip() else _RotateBody()
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"rotating keys: {exc}") from None
    app = request.app
    services = app[SERVICES_KEY]
    rotated = await rotate_keys(
        services.db,
        services.ledger,
        services.identity,
        Path(services.config.data_dir),
        rotate_rsa=body.rsa,
        extra=await publication(app),
    )
    if rotated.rsa_rotated and CLIENT_KEY in app:
        identity = services.identity
        app[CLIENT_KEY].signer = http_signer(identity.rsa_key_id, identity.rsa_key)
    wake_delivery(app)
    return json_response(rotated.to_json())


async def show_handler(request: web.Request) -> web.Response:
    """`GET /api/keys` (admin): the current keys."""
    require_role(await authenticate(request), "admin", "reading the node's keys")
    return json_response(current_keys(request.app[SERVICES_KEY].identity).to_json())


_SET_UP = web.AppKey("convene_key_routes", bool)


def setup(app: web.Application) -> None:
    """Add the key routes; call after `federation_glue.setup` (it wraps its source).
    A second call does nothing."""
    if app.get(_SET_UP):
        return
    app[_SET_UP] = True
    source = app.get(routes.SOURCE)
    if source is not None:
        app[routes.SOURCE] = _CurrentKeysSource(source, app[SERVICES_KEY].identity)
    app.router.add_post("/api/keys/rotate", rotate_handler)
    app.router.add_get("/api/keys", show_handler)
