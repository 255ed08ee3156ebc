"""Member-signed ballots: the one implementation of the signed-ballot rule (§7.5).

Theory of operation. In an open (roll-call) vote a member may sign their own ballot
with an Ed25519 key only they hold (made in their browser by WebCrypto, or by
``convene ballot keygen``). The node registers the key's public half on its chain as a
``RosterChange`` with ``operation: "key"`` (protocol/roster.py folds these), so the
chain says which keys belong to which member at every seq. The signature covers the
RFC 8785 form of

    {"ballot": B, "counter": N, "member": M, "proposal": P, "type": "MemberBallot"}

where P is the proposal's Question entry id, M the member's opaque id, B the ballot in
the JSON API's shape for the method (§7.2) and N a whole number that grows with every
change of vote, so an old signed ballot cannot be replayed over a newer one. ``type``
keeps a ballot signature from ever meaning anything else. The signature and the key
travel as multibase base58btc (``z`` …), the key as a Multikey ``publicKeyMultibase``.

The node checks a signed ballot with ``verify_member_ballot`` before it accepts it; an
auditor checks every disclosed ballot with the same function against the keys the
roster held at the tally's seq, so a ballot whose key was revoked before the count, or
whose signature does not cover what was counted, is named. A node can record a ballot
without a signature (``custodial``); it cannot make one that carries a member's
signature. Secret votes use receipts only (§7.3) and never member signatures.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

import msgspec

from protocol.canonical import canonicalize
from protocol.errors import BallotError, KeyFormatError, ProofError
from protocol.keys import SigningKey, VerifyKey, b58decode, b58encode

__all__ = [
    "MAX_COUNTER",
    "PAYLOAD_TYPE",
    "MemberBallotError",
    "SignedBallot",
    "decode_signed_ballot",
    "sign_member_ballot",
    "signed_ballot_payload",
    "verify_member_ballot",
]

PAYLOAD_TYPE: Final = "MemberBallot"
MAX_COUNTER: Final = 2**53 - 1  # exact in every JSON implementation (RFC 8785 §3.2.2.3)
MAX_SIGNED_BALLOT_BYTES: Final = 64 * 1024


class MemberBallotError(BallotError):
    """A member-signed ballot is malformed, forged, replayed or signed by a wrong key."""

    code = "bad_member_signature"


class SignedBallot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A ballot with its member's signature, as POSTed and as kept for the audit."""

    proposal: str
    member: str
    counter: int
    ballot: dict[str, Any]
    key: str
    signature: str


_decoder: Final = msgspec.json.Decoder(SignedBallot, strict=True)


def decode_signed_ballot(raw: object) -> SignedBallot:
    """Read a signed ballot from JSON bytes or an already decoded object (strictly)."""
    try:
        if isinstance(raw, bytes | str):
            if len(raw) > MAX_SIGNED_BALLOT_BYTES:
                raise MemberBallotError(
                    f"a signed ballot is at most {MAX_SIGNED_BALLOT_BYTES} bytes",
                    code="malformed_member_ballot",
                )
            return _decoder.decode(raw)
        return msgspec.convert(raw, SignedBallot, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise MemberBallotError(
            f"not a signed ballot ({exc}); expected {{proposal, member, counter, ballot, "
            "key, signature}",
            code="malformed_member_ballot",
        ) from None


def _counter(counter: object) -> int:
    if not isinstance(counter, int) or isinstance(counter, bool) or not 0 <= counter <= MAX_COUNTER:
        raise MemberBallotError(
            f"counter must be a whole number from 0 to {MAX_COUNTER}, got {counter!r:.40}",
            code="malformed_member_ballot",
        )
    return counter


def signed_ballot_payload(
    proposal: str, member: str, counter: int, ballot: Mapping[str, Any]
) -> bytes:
    """The exact bytes a member signs: RFC 8785 form of the ballot statement."""
    if not proposal or not member:
        raise MemberBallotError(
            "a signed ballot names its proposal and member", code="malformed_member_ballot"
        )
    return canonicalize(
        {
            "ballot": dict(ballot),
            "counter": _counter(counter),
            "member": member,
            "proposal": proposal,
            "type": PAYLOAD_TYPE,
        }
    )


def sign_member_ballot(
    key: SigningKey, proposal: str, member: str, counter: int, ballot: Mapping[str, Any]
) -> SignedBallot:
    """Sign a ballot with a member's key (the command line's `convene ballot sign`)."""
    signature = key.sign(signed_ballot_payload(proposal, member, counter, ballot))
    return SignedBallot(
        proposal=proposal,
        member=member,
        counter=counter,
        ballot=dict(ballot),
        key=key.verify_key.multibase,
        signature="z" + b58encode(signature),
    )


def verify_member_ballot(
    signed: SignedBallot,
    *,
    proposal: str,
    member: str,
    member_keys: Collection[str],
) -> None:
    """Raise MemberBallotError unless ``signed`` is ``member``'s own signed ballot on
    ``proposal``, by one of ``member_keys`` (the member's keys on the roster, as
    ``publicKeyMultibase`` strings). Nothing is returned: failure is the exception."""
    if signed.proposal != proposal:
        raise MemberBallotError(
            f"the ballot is signed for proposal {signed.proposal!r:.120}, not {proposal}",
            code="wrong_proposal",
        )
    if signed.member != member:
        raise MemberBallotError(
            f"the ballot is signed for member {signed.member!r:.100}, not {member}",
            code="wrong_member",
        )
    if signed.key not in member_keys:
        raise MemberBallotError(
            f"key {signed.key:.80} is not a registered key of member {member} "
            "(never registered, or revoked)",
            code="unknown_member_key",
        )
    payload = signed_ballot_payload(signed.proposal, signed.member, signed.counter, signed.ballot)
    try:
        if not signed.signature.startswith("z"):
            raise KeyFormatError("the signature must be multibase base58btc (starting 'z')")
        VerifyKey.from_multibase(signed.key).verify(payload, b58decode(signed.signature[1:]))
    except (KeyFormatError, ProofError) as exc:
        raise MemberBallotError(
            f"member {member}'s signature on counter {signed.counter} does not verify: "
            f"{exc.detail}",
            code="bad_member_signature",
        ) from None
