"""Who this node is: actor id, base URL, kind, and its two keys.

The Ed25519 seed signs chain entries (through protocol/keys.py, which alone touches the
raw key); the RSA-2048 key signs HTTP requests for fediverse servers. Both are files
in `DATA/keys/` with mode 0600, made at `convene init` from the OS random source.

`convene key rotate` (node/rotation.py) replaces both: it writes `*.new` files, commits
the KeyRotation entry, then renames them over the old ones (a retired secret is not
kept). A crash between commit and rename is finished here on the next load: the chain
says which key is current, and a `.new` file holding that key is moved into place.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from node import identity_store
from node.config import DATABASE_FILE
from node.errors import NodeError
from protocol.keys import SigningKey

KEY_DIR = "keys"
ED25519_FILE = "ed25519.seed"
RSA_FILE = "rsa.pem"
NEW_SUFFIX = ".new"  # a rotation's key, in place once its KeyRotation entry commits
KINDS = ("chapter", "region")


class IdentityError(NodeError):
    code = "identity"
    status = 500


@dataclass
class NodeIdentity:
    """Not frozen: a rotation on a running node swaps the keys in place
    (node/rotation.py), so read them at each use instead of copying them."""

    actor: str
    url: str
    name: str
    kind: str
    signing_key: SigningKey
    key_id: str
    rsa_key: rsa.RSAPrivateKey
    rsa_key_id: str
    key_seq: int = 0  # the seq of the Genesis or KeyRotation entry that introduced key_id


def actor_id_for(url: str) -> str:
    return f"{url.rstrip('/')}/actor"


def _write_secret(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite an existing key; 0600 from the first byte on disk.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_keys(data_dir: Path) -> SigningKey:
    key_dir = data_dir / KEY_DIR
    key_dir.mkdir(mode=0o700, exist_ok=True)
    seed = secrets.token_bytes(32)
    _write_secret(key_dir / ED25519_FILE, seed)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_secret(key_dir / RSA_FILE, _pem(rsa_key))
    return SigningKey.from_seed(seed)


def stage_keys(data_dir: Path, seed: bytes, rsa_key: rsa.RSAPrivateKey | None) -> None:
    """Write a rotation's new keys as `*.new` beside the current ones, replacing any
    left by a rotation that never committed."""
    key_dir = data_dir / KEY_DIR
    for name in (ED25519_FILE, RSA_FILE):
        (key_dir / (name + NEW_SUFFIX)).unlink(missing_ok=True)
    if rsa_key is not None:
        _write_secret(key_dir / (RSA_FILE + NEW_SUFFIX), _pem(rsa_key))
    _write_secret(key_dir / (ED25519_FILE + NEW_SUFFIX), seed)


def finish_rotation(data_dir: Path, current: str) -> None:
    """Move a committed rotation's `.new` key files into place (see the docstring);
    `current` is the publicKeyMultibase the chain's latest key entry names.

    A `.new` seed that is not the chain's current key belongs to a rotation that never
    committed (or is still committing in another process): it is left alone."""
    key_dir = data_dir / KEY_DIR
    pending = key_dir / (ED25519_FILE + NEW_SUFFIX)
    try:
        if SigningKey.from_seed(pending.read_bytes()).verify_key.multibase != current:
            return
        for name in (RSA_FILE, ED25519_FILE):  # the seed last: it marks the swap done
            if (key_dir / (name + NEW_SUFFIX)).exists():
                os.replace(key_dir / (name + NEW_SUFFIX), key_dir / name)
    except FileNotFoundError:
        return  # no rotation pending, or another process finished it first
    fd = os.open(key_dir, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames themselves survive a power cut
    finally:
        os.close(fd)


def load_identity(data_dir: Path, *, actor: str, url: str, name: str, kind: str) -> NodeIdentity:
    key_dir = data_dir / KEY_DIR
    current = identity_store.current_key(data_dir / DATABASE_FILE)
    if current is not None:
        finish_rotation(data_dir, current[1])
    try:
        seed = (key_dir / ED25519_FILE).read_bytes()
        pem = (key_dir / RSA_FILE).read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read the node's keys in {key_dir}: {exc}") from exc
    rsa_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(rsa_key, rsa.RSAPrivateKey):
        raise IdentityError(f"{key_dir / RSA_FILE} does not hold an RSA private key")
    signing_key = SigningKey.from_seed(seed)
    key_seq = 0 if current is None else current[0]
    if current is not None and signing_key.verify_key.multibase != current[1]:
        raise IdentityError(
            f"{key_dir / ED25519_FILE} is not the key {actor}'s chain names at seq {key_seq}"
            f" ({current[1]}); restore the key files that belong to this database"
        )
    return NodeIdentity(
        actor=actor,
        url=url,
        name=name,
        kind=kind,
        signing_key=signing_key,
        key_id=f"{actor}#ed25519-{key_seq}",
        rsa_key=rsa_key,
        rsa_key_id=f"{actor}#main-key",
        key_seq=key_seq,
    )
