"""Members' own ballot keys: register, revoke, list; and the check of a signed ballot.

Theory of operation (docs/protocol.md §5.5, §7.5). A member's browser (or
`convene ballot keygen`) makes an Ed25519 key whose secret half never reaches the
node. Registering its public half appends a `RosterChange` with `operation: "key"`
and writes the `member_keys` row in the same transaction; revoking appends
`"revoke-key"` and marks the row. The table mirrors the chain so a ballot is checked
without folding the chain; the auditor folds the chain itself
(protocol/roster.py `member_keys_at`). A signed ballot is accepted only if
protocol/member_ballots.py `verify_member_ballot` passes against the member's
current keys and its counter is above every counter the member used on that proposal
before, so an old signed ballot cannot be replayed over a newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from node import member_key_store
from node.errors import BadRequest, Conflict, NotFound
from node.ledger import Ledger
from node.members import Member
from node.storage import Database, Row
from protocol.member_ballots import SignedBallot, decode_signed_ballot, verify_member_ballot
from protocol.roster import key_change_body

MAX_LABEL = 80
SIGNED_FIELDS = frozenset(SignedBallot.__struct_fields__)


@dataclass(frozen=True)
class MemberKey:
    key: str
    label: str
    registered_seq: int
    revoked_seq: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "registered_seq": self.registered_seq,
            "revoked_seq": self.revoked_seq,
        }


def _key(row: Row) -> MemberKey:
    return MemberKey(row["key"], row["label"], row["registered_seq"], row["revoked_seq"])


class MemberKeys:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self._db = db
        self._ledger = ledger

    async def register(self, member: Member, key: str, label: str = "") -> MemberKey:
        """Register ``key`` (Multikey publicKeyMultibase) as ``member``'s ballot key."""
        label = label.strip()[:MAX_LABEL]
        body = key_change_body("key", member.id, key)  # refuses a malformed key
        async with self._db.write() as tx:
            existing = await member_key_store.key_row_tx(tx, key)
            if existing is not None:
                raise Conflict(f"key {key:.60} is already registered; make a new key instead")
            appended = await self._ledger.append_in(tx, body)
            await member_key_store.insert_key(tx, key, member.id, appended.seq, label)
        return MemberKey(key, label, appended.seq, None)

    async def revoke(self, member: Member, key: str) -> MemberKey:
        """Revoke one of ``member``'s own keys; ballots it signed no longer count as signed."""
        async with self._db.write() as tx:
            row = await member_key_store.key_row_tx(tx, key)
            if row is None or row["member_id"] != member.id:
                raise NotFound(f"member {member.id} has no key {key:.60}")
            if row["revoked_seq"] is not None:
                raise Conflict(f"key {key:.60} was already revoked at seq {row['revoked_seq']}")
            appended = await self._ledger.append_in(
                tx, key_change_body("revoke-key", member.id, key)
            )
            await member_key_store.set_revoked(tx, key, appended.seq)
        return MemberKey(key, row["label"], row["registered_seq"], appended.seq)

    async def keys_of(self, member_id: str) -> list[MemberKey]:
        return [_key(row) for row in await member_key_store.keys_of(self._db, member_id)]


def is_signed_form(raw: object) -> bool:
    """A ballot body in the signed form (`convene ballot sign`'s output, the browser's)."""
    return isinstance(raw, Mapping) and "signature" in raw


async def check_signed_ballot(
    db: Database, voter: Member, proposal_id: str, object_id: str, raw: object
) -> SignedBallot:
    """Decode and verify a member-signed ballot for ``voter`` on the proposal whose
    Question entry id is ``object_id``; raise a typed error saying why it is refused."""
    signed = decode_signed_ballot(raw)
    current = frozenset(
        k.key
        for k in map(_key, await member_key_store.keys_of(db, voter.id))
        if k.revoked_seq is None
    )
    verify_member_ballot(signed, proposal=object_id, member=voter.id, member_keys=current)
    last = await member_key_store.last_counter(db, proposal_id, voter.id)
    if last is not None and signed.counter <= last:
        raise Conflict(
            f"member {voter.id} already sent a signed ballot with counter {last} on proposal "
            f"{proposal_id}; counter {signed.counter} is a replay (use a larger counter)",
            code="replayed_ballot",
        )
    return signed


def refuse_secret() -> BadRequest:
    return BadRequest(
        "this is a secret vote: ballots carry no member signature (the receipt is the proof)",
        code="signature_in_secret_vote",
    )
