"""Who this node is: actor id, base URL, kind, and its two keys.

The Ed25519 seed signs chain entries (through protocol/keys.py, which alone touches the
raw key); the RSA-2048 key signs HTTP requests for fediverse servers. Both are files
in `DATA/keys/` with mode 0600, made once at `convene init` from the OS random source.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from node.errors import NodeError
from protocol.keys import SigningKey

KEY_DIR = "keys"
ED25519_FILE = "ed25519.seed"
RSA_FILE = "rsa.pem"
KINDS = ("chapter", "region")


class IdentityError(NodeError):
    code = "identity"
    status = 500


@dataclass(frozen=True)
class NodeIdentity:
    actor: str
    url: str
    name: str
    kind: str
    signing_key: SigningKey
    key_id: str
    rsa_key: rsa.RSAPrivateKey
    rsa_key_id: str


def actor_id_for(url: str) -> str:
    return f"{url.rstrip('/')}/actor"


def _write_secret(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite an existing key; 0600 from the first byte on disk.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def create_keys(data_dir: Path) -> SigningKey:
    key_dir = data_dir / KEY_DIR
    key_dir.mkdir(mode=0o700, exist_ok=True)
    seed = secrets.token_bytes(32)
    _write_secret(key_dir / ED25519_FILE, seed)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_secret(key_dir / RSA_FILE, pem)
    return SigningKey.from_seed(seed)


def load_identity(data_dir: Path, *, actor: str, url: str, name: str, kind: str) -> NodeIdentity:
    key_dir = data_dir / KEY_DIR
    try:
        seed = (key_dir / ED25519_FILE).read_bytes()
        pem = (key_dir / RSA_FILE).read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read the node's keys in {key_dir}: {exc}") from exc
    rsa_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise IdentityError(f"{key_dir / RSA_FILE} does not hold an RSA private key")
    return NodeIdentity(
        actor=actor,
        url=url,
        name=name,
        kind=kind,
        signing_key=SigningKey.from_seed(seed),
        key_id=f"{actor}#ed25519-0",
        rsa_key=rsa_key,
        rsa_key_id=f"{actor}#main-key",
    )
