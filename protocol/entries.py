"""Chain entries: their common envelope, how it is read strictly, and how entries are built.

An entry (docs/protocol.md §5) is a JSON object signed with an eddsa-jcs-2022 proof:
``@context`` (exactly the §1 list), ``id`` = ``{actor}/entries/{seq}``, ``type``, ``actor``,
``seq``, ``prev``, ``published``, the type's own fields, and ``proof``. The envelope is read
into frozen msgspec Structs with strict typing (a ``seq`` of ``true`` or ``1.0`` is refused);
fields beyond the envelope belong to the entry type and are left to the modules that own
them (ballots, tallies, roster). Builders take the time as an argument and never read a
clock or draw randomness.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.errors import ChainError, KeyFormatError
from protocol.keys import SigningKey, VerifyKey
from protocol.proofs import create_proof

__all__ = [
    "CONTEXT",
    "ENVELOPE_FIELDS",
    "Envelope",
    "MultikeyDoc",
    "ProofHeader",
    "accept_body",
    "entry_id",
    "genesis",
    "key_id",
    "make_entry",
    "multikey",
    "read_envelope",
    "roster_change_body",
    "rotation",
]

CONTEXT: Final = (
    "https://www.w3.org/ns/activitystreams",
    "https://w3id.org/security/data-integrity/v2",
    "https://w3id.org/convene/v1",
)
_CONTEXT_LIST: Final = list(CONTEXT)
ENVELOPE_FIELDS: Final = frozenset(
    {"@context", "id", "type", "actor", "seq", "prev", "published", "proof"}
)
GENESIS: Final = "Genesis"
KEY_ROTATION: Final = "KeyRotation"
_RFC3339_Z: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
_HEX64: Final = r"^[0-9a-f]{64}$"
_RFC3339_RE: Final = re.compile(_RFC3339_Z)

Digest = Annotated[str, msgspec.Meta(pattern=_HEX64)]
Timestamp = Annotated[str, msgspec.Meta(pattern=_RFC3339_Z)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class ProofHeader(msgspec.Struct, frozen=True):
    """The fields of an entry's proof that the chain reads (proofs.py checks the rest)."""

    verificationMethod: NonEmpty
    type: str = ""
    cryptosuite: str = ""


class MultikeyDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A Multikey as Genesis and KeyRotation carry it in ``assertionKey``."""

    id: NonEmpty
    type: Literal["Multikey"]
    controller: NonEmpty
    publicKeyMultibase: NonEmpty


class Envelope(msgspec.Struct, frozen=True):
    """The common fields of every entry, strictly typed."""

    context: list[str] = msgspec.field(name="@context")
    id: NonEmpty
    type: NonEmpty
    actor: NonEmpty
    seq: Annotated[int, msgspec.Meta(ge=0)]
    prev: Digest | None
    published: Timestamp
    proof: ProofHeader


class _KeyCarrier(msgspec.Struct, frozen=True):
    assertionKey: MultikeyDoc


class _GenesisBody(_KeyCarrier, frozen=True):
    name: NonEmpty
    kind: Literal["chapter", "region"]


def key_id(actor: str, seq: int) -> str:
    """The id of the key introduced by the entry at ``seq`` (§5): ``{actor}#ed25519-{seq}``."""
    return f"{actor}#ed25519-{seq}"


def entry_id(actor: str, seq: int) -> str:
    return f"{actor}/entries/{seq}"


def _where(entry: Mapping[str, Any]) -> tuple[str | None, int | None]:
    actor, seq = entry.get("actor"), entry.get("seq")
    return (
        actor if isinstance(actor, str) else None,
        seq if type(seq) is int else None,
    )


def read_envelope(entry: Mapping[str, Any]) -> Envelope:
    """The entry's envelope, or ChainError(code="malformed") saying which field and why."""
    if not isinstance(entry, dict):
        raise ChainError("an entry must be a JSON object", code="malformed")
    try:
        env = msgspec.convert(entry, Envelope, strict=True)
    except msgspec.ValidationError as exc:
        actor, seq = _where(entry)
        raise ChainError(f"bad envelope: {exc}", actor=actor, seq=seq, code="malformed") from None
    why = ""
    if env.context != _CONTEXT_LIST:
        why = f"@context must be exactly {list(CONTEXT)}"
    elif env.id != entry_id(env.actor, env.seq):
        why = f"id is {env.id!r}, must be {entry_id(env.actor, env.seq)!r}"
    elif (env.seq == 0) != (env.prev is None):
        why = "prev must be null exactly at seq 0"
    if why:
        raise ChainError(why, actor=env.actor, seq=env.seq, code="malformed")
    return env


def read_new_key(entry: Mapping[str, Any], env: Envelope) -> tuple[str, VerifyKey]:
    """The key a Genesis or KeyRotation entry introduces, as (key id, key); for a Genesis
    also checks its ``name`` and ``kind``."""
    code = "bad_genesis" if env.type == GENESIS else "malformed"
    shape: type[_KeyCarrier] = _GenesisBody if env.type == GENESIS else _KeyCarrier
    try:
        doc = msgspec.convert(entry, shape, strict=True).assertionKey
    except msgspec.ValidationError as exc:
        raise ChainError(
            f"bad {env.type} body: {exc}", actor=env.actor, seq=env.seq, code=code
        ) from None
    want = key_id(env.actor, env.seq)
    if doc.id != want or doc.controller != env.actor:
        raise ChainError(
            f"assertionKey must have id {want!r} and controller {env.actor!r}",
            actor=env.actor,
            seq=env.seq,
            code=code,
        )
    try:
        return doc.id, VerifyKey.from_multibase(doc.publicKeyMultibase)
    except KeyFormatError as exc:
        raise ChainError(
            f"bad assertionKey: {exc}", actor=env.actor, seq=env.seq, code=code
        ) from None


def multikey(actor: str, seq: int, key: VerifyKey) -> dict[str, object]:
    """The Multikey document for the key introduced at ``seq`` (also for actor documents)."""
    return {
        "id": key_id(actor, seq),
        "type": "Multikey",
        "controller": actor,
        "publicKeyMultibase": key.multibase,
    }


def make_entry(
    body: Mapping[str, Any],
    *,
    actor: str,
    seq: int,
    prev: str | None,
    key: SigningKey,
    key_id: str,
    published: str,
) -> dict[str, Any]:
    """Sign ``body`` (which names its ``type``) as the entry at ``seq`` of ``actor``'s chain.

    ``prev`` is the previous entry's digest (None at seq 0); ``published`` (RFC 3339, Z) is
    also the proof's ``created``. Raises ChainError if the body sets an envelope field.
    """
    clash = sorted(ENVELOPE_FIELDS.intersection(body) - {"type"})
    if clash:
        raise ChainError(f"an entry body may not set {', '.join(clash)}", actor=actor, seq=seq)
    if not isinstance(body.get("type"), str) or not body["type"]:
        raise ChainError("an entry body must name its type", actor=actor, seq=seq)
    if not _RFC3339_RE.match(published):
        raise ChainError(f"published {published!r} is not RFC 3339 UTC with whole seconds")
    entry: dict[str, Any] = {
        "@context": list(CONTEXT),
        "id": entry_id(actor, seq),
        "type": body["type"],
        "actor": actor,
        "seq": seq,
        "prev": prev,
        "published": published,
    }
    entry.update((k, v) for k, v in body.items() if k != "type")
    read_envelope({**entry, "proof": {"verificationMethod": key_id}})  # refuse a bad envelope
    return create_proof(entry, key, verification_method=key_id, created=published)


def genesis(actor: str, name: str, kind: str, key: SigningKey, published: str) -> dict[str, Any]:
    """Entry 0 of ``actor``'s chain, naming it and its first key, signed by that key."""
    if kind not in ("chapter", "region"):
        raise ChainError(f"kind {kind!r} is not chapter or region", actor=actor, seq=0)
    body = {
        "type": GENESIS,
        "name": name,
        "kind": kind,
        "assertionKey": multikey(actor, 0, key.verify_key),
    }
    return make_entry(
        body, actor=actor, seq=0, prev=None, key=key, key_id=key_id(actor, 0), published=published
    )


def rotation(
    actor: str,
    seq: int,
    prev: str,
    old_key: SigningKey,
    old_key_id: str,
    new_key: VerifyKey,
    published: str,
) -> dict[str, Any]:
    """A KeyRotation at ``seq``, signed by the old key; ``new_key`` is valid from seq + 1."""
    body = {"type": KEY_ROTATION, "assertionKey": multikey(actor, seq, new_key)}
    return make_entry(
        body, actor=actor, seq=seq, prev=prev, key=old_key, key_id=old_key_id, published=published
    )


def roster_change_body(
    operation: Literal["add", "remove", "role"], member: str, role: str
) -> dict[str, Any]:
    """Body of a RosterChange entry (§5)."""
    if operation not in ("add", "remove", "role"):
        raise ChainError(f"roster operation {operation!r} is not add, remove or role")
    return {"type": "RosterChange", "operation": operation, "member": member, "role": role}


def accept_body(follow_id: str, follower: str) -> dict[str, Any]:
    """Body of an Accept entry (§5): ``follower`` was accepted for the Follow ``follow_id``."""
    return {"type": "Accept", "object": follow_id, "follower": follower}
