"""The member roster: a fold of RosterChange chain entries, and its Merkle root.

Theory of operation (docs/protocol.md §5 and §6.3). A chapter never publishes its
member list; it publishes `RosterChange` entries naming members by opaque id, and a
tally carries the size and Merkle root of the roster at the tally's seq. Anyone holding
the chain recomputes both: fold the changes in seq order (``roster_at``), then hash
the sorted roster (``roster_root``). A member can be shown their own leaf with an
RFC 9162 inclusion proof from ``roster_tree``.

The fold is strict: each change must be possible in the roster it applies to. An
impossible change (adding a present member, removing or re-roling an absent one,
removing with a role the member does not hold, a "role" change to the role already
held) means the chain was not written by an honest node, so it is an error naming the
actor and seq, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from protocol.canonical import canonicalize
from protocol.errors import ProtocolError
from protocol.merkle import MerkleTree

__all__ = [
    "OPERATIONS",
    "ROLES",
    "RosterError",
    "roster_at",
    "roster_leaf",
    "roster_root",
    "roster_tree",
]

ROLES = ("member", "organizer", "admin")
OPERATIONS = ("add", "remove", "role")
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
    for seq, entry in sorted(changes, key=lambda c: c[0]):
        _apply(roster, entry, actor, seq)
    return roster


def _apply(
    roster: dict[str, str], entry: Mapping[str, object], actor: str | None, seq: int
) -> None:
    operation = _field(entry, "operation", actor, seq)
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
