"""Helpers for federation tests: real keys and a LocalActor, a fixed FederationSource."""

from __future__ import annotations

from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from federation.documents import AssertionKey, LocalActor
from protocol.keys import SigningKey

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key() -> rsa.RSAPrivateKey:
    return _RSA


def make_actor(base_url: str, *, username: str = "riverside", seed: int = 1) -> LocalActor:
    actor_id = f"{base_url.rstrip('/')}/actor"
    verify = SigningKey.from_seed(bytes([seed]) * 32).verify_key
    pem = (
        _RSA.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return LocalActor(
        id=actor_id,
        base_url=base_url.rstrip("/"),
        username=username,
        name="Riverside chapter",
        kind="chapter",
        rsa_public_pem=pem,
        assertion_key=AssertionKey(
            id=f"{actor_id}#ed25519-0", public_key_multibase=verify.multibase
        ),
    )


class StaticSource:
    """A FederationSource over fixed data, for the route tests (the node's is tested
    end to end in test_node_federation.py)."""

    def __init__(self, actor: LocalActor, entries: list[dict[str, Any]]) -> None:
        self.actor = actor
        self.entries = [msgspec.json.encode(e) for e in entries]
        self.follower_ids: list[str] = []

    async def local_actor(self) -> LocalActor:
        return self.actor

    async def chain_length(self) -> int:
        return len(self.entries)

    async def chain_entries(self, start: int, limit: int) -> list[bytes]:
        return self.entries[start : start + limit]

    async def followers(self) -> list[str]:
        return list(self.follower_ids)

    async def member_count(self) -> int:
        return 3
