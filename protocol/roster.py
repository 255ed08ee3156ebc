"""The member roster: a fold of RosterChange chain entries, and its Merkle root.

Theory of operation (docs/protocol.md §5 and §6.3). A chapter never publishes its
member list; it publishes `RosterChange` entries naming members by opaque id, and a
tally carries the size and Merkle root of the roster at the tally's seq. Anyone holding
the chain recomputes both: fold the changes in seq order (``roster_at``), then hash
the sorted roster (``roster_root``). A member can be shown their own leaf with an
RFC 9162 inclusion proof from ``roster_tree``.

The same fold says which Ed25519 keys each member holds (``member_keys_at``, §5.5):
``operation: "key"`` registers ``memberKey`` (a Multikey ``publicKeyMultibase``) for a
member on the roster, ``"revoke-key"`` withdraws it, and a member's removal drops all
their keys. A key belongs to one member at a time. Member-signed ballots
(protocol/member_ballots.py) are checked against these keys.

The fold is strict: each change must be possible in the roster it applies to. An
impossible change (adding a present member, removing or re-roling an absent one,
removing with a role the member does not hold, a "role" change to the role already
held, a key registered twice or revoked when not held) means the chain was not written
by an honest node, so it is an error naming the actor and seq, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocol.canonical import canonicalize
from protocol.errors import KeyFormatError, ProtocolError
from protocol.keys import VerifyKey
from protocol.merkle import MerkleTree

__all__ = [
    "KEY_OPERATIONS",
    "OPERATIONS",
    "ROLES",
    "RosterError",
    "key_change_body",
    "member_keys_at",
    "roster_at",
    "roster_leaf",
    "roster_root",
    "roster_tree",
]

ROLES = ("member", "organizer", "admin")
OPERATIONS = ("add", "remove", "role", "key", "revoke-key")
KEY_OPERATIONS = ("key", "revoke-key")
MAX_MEMBER_ID = 256


class RosterError(ProtocolError):
    """A RosterChange entry is malformed or impossible for the roster it applies to."""

    code = "bad_roster"


def _field(entry: Mapping[str, object], name: str, actor: str | None, seq: int | None) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise RosterError(
            f"RosterChange field {name!r} must be a non-empty string, got {value!r:.80}",
            actor=actor,
            seq=seq,
            code="malformed_roster_change",
        )
    return value


def _seq(entry: Mapping[str, object], actor: str | None) -> int:
    seq = entry.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise RosterError(
            f"entry seq must be a non-negative integer, got {seq!r:.80}",
            actor=actor,
            code="malformed_roster_change",
        )
    return seq


def roster_at(
    entries: Iterable[Mapping[str, object]], upto_seq: int | None = None
) -> dict[str, str]:
    """The roster (member id → role) after every RosterChange with seq <= ``upto_seq``.

    ``entries`` are one actor's chain entries in any order and of any types; entries
    of other types are ignored (they still count for the seq order). ``upto_seq`` None
    means the whole chain. Raises RosterError for mixed actors, duplicate seqs, and
    malformed or impossible changes.
    """
    return _fold(entries, upto_seq)[0]


def member_keys_at(
    entries: Iterable[Mapping[str, object]], upto_seq: int | None = None
) -> dict[str, frozenset[str]]:
    """Each member's registered, unrevoked keys (member id → set of Multikey
    ``publicKeyMultibase``) after every RosterChange with seq <= ``upto_seq``; members
    without a key are left out. Same input and errors as ``roster_at``."""
    keys = _fold(entries, upto_seq)[1]
    owners: dict[str, set[str]] = {}
    for key, member in keys.items():
        owners.setdefault(member, set()).add(key)
    return {member: frozenset(held) for member, held in owners.items()}


def _fold(
    entries: Iterable[Mapping[str, object]], upto_seq: int | None
) -> tuple[dict[str, str], dict[str, str]]:
    changes: list[tuple[int, Mapping[str, object]]] = []
    seen: set[int] = set()
    actor: str | None = None
    for entry in entries:
        entry_actor = entry.get("actor")
        if not isinstance(entry_actor, str):
            raise RosterError(
                f"entry has no actor string, got {entry_actor!r:.80}",
                code="malformed_roster_change",
            )
        seq = _seq(entry, entry_actor)
        if actor is None:
            actor = entry_actor
        elif entry_actor != actor:
            raise RosterError(
                f"entries of two actors mixed in one roster: {actor} and {entry_actor}",
                actor=entry_actor,
                seq=seq,
                code="mixed_actors",
            )
        if seq in seen:
            raise RosterError(
                "two entries share this seq (equivocation); the roster is ambiguous",
                actor=actor,
                seq=seq,
                code="duplicate_seq",
            )
        seen.add(seq)
        if entry.get("type") == "RosterChange" and (upto_seq is None or seq <= upto_seq):
            changes.append((seq, entry))

    roster: dict[str, str] = {}
    keys: dict[str, str] = {}  # key multibase → member holding it
    for seq, entry in sorted(changes, key=lambda c: c[0]):
        operation = _field(entry, "operation", actor, seq)
        if operation in KEY_OPERATIONS:
            _apply_key(roster, keys, entry, operation, actor, seq)
        else:
            _apply(roster, entry, operation, actor, seq)
            if operation == "remove":  # keys die with the membership
                gone = entry.get("member")
                for key in [k for k, m in keys.items() if m == gone]:
                    del keys[key]
    return roster, keys


def _apply_key(
    roster: dict[str, str],
    keys: dict[str, str],
    entry: Mapping[str, object],
    operation: str,
    actor: str | None,
    seq: int,
) -> None:
    member = _field(entry, "member", actor, seq)
    key = _field(entry, "memberKey", actor, seq)
    try:
        VerifyKey.from_multibase(key)
    except KeyFormatError as exc:
        raise RosterError(
            f"memberKey is not an Ed25519 Multikey: {exc.detail}",
            actor=actor,
            seq=seq,
            code="malformed_roster_change",
        ) from None
    holder = keys.get(key)
    problem: str | None = None
    if member not in roster:
        problem = f"{operation} for member {member:.100}, who is not on the roster"
    elif operation == "key":
        if holder is not None:
            problem = f"key {key:.60} is already registered (to member {holder:.100})"
        else:
            keys[key] = member
    elif holder != member:
        problem = f"revoke-key of key {key:.60}, which member {member:.100} does not hold"
    else:
        del keys[key]
    if problem is not None:
        raise RosterError(problem, actor=actor, seq=seq, code="impossible_roster_change")


def _apply(
    roster: dict[str, str],
    entry: Mapping[str, object],
    operation: str,
    actor: str | None,
    seq: int,
) -> None:
    member = _field(entry, "member", actor, seq)
    role = _field(entry, "role", actor, seq)
    if operation not in OPERATIONS:
        raise RosterError(
            f"operation {operation!r:.80} is not one of {', '.join(OPERATIONS)}",
            actor=actor,
            seq=seq,
            code="malformed_roster_change",
        )
    if role not in ROLES:
        raise RosterError(
            f"role {role!r:.80} is not one of {', '.join(ROLES)}",
            actor=actor,
            seq=seq,
            code="malformed_roster_change",
        )
    if len(member) > MAX_MEMBER_ID:
        raise RosterError(
            f"member id is {len(member)} characters, at most {MAX_MEMBER_ID} allowed",
            actor=actor,
            seq=seq,
            code="malformed_roster_change",
        )

    current = roster.get(member)
    problem: str | None = None
    if operation == "add":
        if current is not None:
            problem = f"add of member {member}, who is already on the roster as {current}"
        else:
            roster[member] = role
    elif current is None:
        problem = f"{operation} of member {member}, who is not on the roster"
    elif operation == "remove":
        if current != role:
            problem = f"remove of member {member} as {role}, but they hold the role {current}"
        else:
            del roster[member]
    elif current == role:
        problem = f"role change of member {member} to {role}, the role they already hold"
    else:
        roster[member] = role
    if problem is not None:
        raise RosterError(problem, actor=actor, seq=seq, code="impossible_roster_change")


def roster_leaf(member: str, role: str) -> bytes:
    """The Merkle leaf of one roster line: canonical JSON of {"member", "role"}."""
    return canonicalize({"member": member, "role": role})


def roster_tree(roster: Mapping[str, str]) -> tuple[list[str], MerkleTree]:
    """The member ids in leaf order (sorted by code point) and the tree over them."""
    members = sorted(roster)
    return members, MerkleTree([roster_leaf(m, roster[m]) for m in members])


def roster_root(roster: Mapping[str, str]) -> tuple[int, str]:
    """(size, lowercase hex RFC 9162 root) of a roster, as a tally carries them."""
    members, tree = roster_tree(roster)
    return len(members), tree.root.hex()


def key_change_body(operation: str, member: str, key: str) -> dict[str, str]:
    """Body of a RosterChange that registers (``"key"``) or revokes (``"revoke-key"``)
    a member's Ed25519 key, given as a Multikey ``publicKeyMultibase`` (§5.5)."""
    if operation not in KEY_OPERATIONS:
        raise RosterError(f"key operation {operation!r:.40} is not key or revoke-key")
    VerifyKey.from_multibase(key)  # KeyFormatError names what is wrong with it
    return {"type": "RosterChange", "operation": operation, "member": member, "memberKey": key}
