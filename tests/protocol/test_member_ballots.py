"""Member-signed ballots (protocol/member_ballots.py) and the key part of the roster fold."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.audit import AuditReport, audit_bundle
from protocol.ballots import ProposalSpec, ballot_receipt, spec_fields, validate_ballot
from protocol.bundle import (
    ActorRecord,
    BallotRecord,
    EntryRecord,
    encode_bundle,
    header,
    parse_bundle,
)
from protocol.canonical import canonicalize
from protocol.chain import entry_digest, genesis
from protocol.counting import make_tally
from protocol.entries import key_id, make_entry, multikey, roster_change_body
from protocol.keys import SigningKey, b58decode, b58encode
from protocol.member_ballots import (
    MemberBallotError,
    SignedBallot,
    decode_signed_ballot,
    sign_member_ballot,
    signed_ballot_payload,
    verify_member_ballot,
)
from protocol.roster import RosterError, key_change_body, member_keys_at, roster_at, roster_root
from protocol.tally import tally_body

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "w3c-vc-di-eddsa"
ACTOR = "https://chapter.example/actor"
PROPOSAL = "https://chapter.example/entries/7"


def vector_key() -> tuple[SigningKey, str]:
    pair = json.loads((VECTORS / "keyPair.json").read_text())
    key = SigningKey.from_multibase(pair["privateKeyMultibase"])
    return key, pair["publicKeyMultibase"]


def flip(text: str, at: int = 10) -> str:
    """The multibase string with one byte of its decoded content flipped."""
    raw = bytearray(b58decode(text[1:]))
    raw[at] ^= 0x01
    return "z" + b58encode(bytes(raw))


def test_payload_is_the_rfc8785_statement() -> None:
    payload = signed_ballot_payload(PROPOSAL, "m-1", 3, {"choice": "agree"})
    assert payload == (
        b'{"ballot":{"choice":"agree"},"counter":3,"member":"m-1",'
        b'"proposal":"https://chapter.example/entries/7","type":"MemberBallot"}'
    )
    assert payload == canonicalize(json.loads(payload))


def test_vector_key_signs_and_verifies() -> None:
    key, public = vector_key()
    assert key.verify_key.multibase == public  # the vector's pair really is one
    signed = sign_member_ballot(key, PROPOSAL, "m-1", 1, {"choice": "agree"})
    assert signed.key == public
    verify_member_ballot(signed, proposal=PROPOSAL, member="m-1", member_keys={public})
    # Ed25519 is deterministic: the same statement always gives the same signature
    again = sign_member_ballot(key, PROPOSAL, "m-1", 1, {"choice": "agree"})
    assert again.signature == signed.signature


def test_vector_key_flipped_signature_byte_fails() -> None:
    key, public = vector_key()
    signed = sign_member_ballot(key, PROPOSAL, "m-1", 1, {"choice": "agree"})
    tampered = msgspec.structs.replace(signed, signature=flip(signed.signature))
    with pytest.raises(MemberBallotError, match="does not verify") as err:
        verify_member_ballot(tampered, proposal=PROPOSAL, member="m-1", member_keys={public})
    assert err.value.code == "bad_member_signature"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ballot": {"choice": "block"}}, "bad_member_signature"),
        ({"counter": 2}, "bad_member_signature"),
        ({"member": "m-2"}, "wrong_member"),
        ({"proposal": "https://chapter.example/entries/8"}, "wrong_proposal"),
        ({"signature": "not-multibase"}, "bad_member_signature"),
        ({"signature": "z1111"}, "bad_member_signature"),
    ],
)
def test_altered_ballot_is_refused(change: dict[str, Any], code: str) -> None:
    key, public = vector_key()
    signed = sign_member_ballot(key, PROPOSAL, "m-1", 1, {"choice": "agree"})
    altered = msgspec.structs.replace(signed, **change)
    with pytest.raises(MemberBallotError) as err:
        verify_member_ballot(altered, proposal=PROPOSAL, member="m-1", member_keys={public})
    assert err.value.code == code


def test_key_not_held_by_member_is_refused() -> None:
    key, _ = vector_key()
    other = SigningKey(bytes(range(32)))
    signed = sign_member_ballot(other, PROPOSAL, "m-1", 1, {"choice": "agree"})
    with pytest.raises(MemberBallotError, match="not a registered key") as err:
        verify_member_ballot(
            signed, proposal=PROPOSAL, member="m-1", member_keys={key.verify_key.multibase}
        )
    assert err.value.code == "unknown_member_key"


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b"{",
        {"proposal": PROPOSAL},
        {
            "proposal": PROPOSAL,
            "member": "m",
            "counter": "1",
            "ballot": {},
            "key": "z",
            "signature": "z",
        },
        {
            "proposal": PROPOSAL,
            "member": "m",
            "counter": 1,
            "ballot": {},
            "key": "z",
            "signature": "z",
            "x": 1,
        },
        b"{" + b" " * 70_000 + b"}",
    ],
)
def test_malformed_signed_ballot_is_a_typed_error(raw: object) -> None:
    with pytest.raises(MemberBallotError) as err:
        decode_signed_ballot(raw)
    assert err.value.code == "malformed_member_ballot"
    assert err.value.status == 400


def test_negative_or_huge_counter_refused() -> None:
    with pytest.raises(MemberBallotError, match="counter"):
        signed_ballot_payload(PROPOSAL, "m", -1, {})
    with pytest.raises(MemberBallotError, match="counter"):
        signed_ballot_payload(PROPOSAL, "m", 2**53, {})


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    counter=st.integers(min_value=0, max_value=2**53 - 1),
    choice=st.text(min_size=1, max_size=30),
)
def test_sign_verify_round_trip_through_json(seed: bytes, counter: int, choice: str) -> None:
    key = SigningKey(seed)
    signed = sign_member_ballot(key, PROPOSAL, "m-9", counter, {"choice": choice})
    back = decode_signed_ballot(msgspec.json.encode(signed))
    assert back == signed and isinstance(back, SignedBallot)
    verify_member_ballot(back, proposal=PROPOSAL, member="m-9", member_keys={signed.key})


# -- the roster fold's key operations (§5.5) ------------------------------------------


def entry(seq: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"actor": ACTOR, "seq": seq, **body}


def add(seq: int, member: str) -> dict[str, Any]:
    return entry(
        seq, {"type": "RosterChange", "operation": "add", "member": member, "role": "member"}
    )


K1 = SigningKey(b"\x01" * 32).verify_key.multibase
K2 = SigningKey(b"\x02" * 32).verify_key.multibase


def test_keys_registered_revoked_and_dropped_on_removal() -> None:
    chain = [
        add(1, "m-a"),
        add(2, "m-b"),
        entry(3, key_change_body("key", "m-a", K1)),
        entry(4, key_change_body("key", "m-a", K2)),
        entry(5, key_change_body("revoke-key", "m-a", K1)),
        entry(
            6, {"type": "RosterChange", "operation": "remove", "member": "m-a", "role": "member"}
        ),
    ]
    assert member_keys_at(chain, 2) == {}
    assert member_keys_at(chain, 3) == {"m-a": frozenset({K1})}
    assert member_keys_at(chain, 4) == {"m-a": frozenset({K1, K2})}
    assert member_keys_at(chain, 5) == {"m-a": frozenset({K2})}
    assert member_keys_at(chain) == {}
    assert roster_at(chain, 5) == {"m-a": "member", "m-b": "member"}  # keys leave roles alone


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (key_change_body("key", "m-z", K1), "not on the roster"),
        (key_change_body("key", "m-b", K1), "already registered"),
        (key_change_body("revoke-key", "m-b", K1), "does not hold"),
        (key_change_body("revoke-key", "m-a", K2), "does not hold"),
        (
            {"type": "RosterChange", "operation": "key", "member": "m-a", "memberKey": "zBad"},
            "Multikey",
        ),
        ({"type": "RosterChange", "operation": "key", "member": "m-a"}, "memberKey"),
    ],
)
def test_impossible_key_changes_name_actor_and_seq(bad: dict[str, Any], reason: str) -> None:
    chain = [
        add(1, "m-a"),
        add(2, "m-b"),
        entry(3, key_change_body("key", "m-a", K1)),
        entry(4, bad),
    ]
    with pytest.raises(RosterError, match=reason) as err:
        member_keys_at(chain)
    assert (err.value.actor, err.value.seq) == (ACTOR, 4)


def test_key_change_body_refuses_a_bad_key_or_operation() -> None:
    with pytest.raises(RosterError):
        key_change_body("add", "m-a", K1)
    with pytest.raises(Exception, match="publicKeyMultibase"):
        key_change_body("key", "m-a", flip(K1, 0))


# -- the audit of member-signed ballots (protocol/audit.py) ---------------------------

CHAPTER = "https://a.example/actor"
T0 = "2026-11-26T14:00:00Z"
MEMBER_KEYS = {"a1": SigningKey(b"\x11" * 32), "a2": SigningKey(b"\x12" * 32)}


def audit_world(
    *, forge: bool = False, revoke: bool = False, drop_signature: bool = False
) -> AuditReport:
    """One chapter: a1 and a2 register keys and sign, a3 votes custodially; the node
    tallies. ``forge``: the node turns a1's "parks" into "transit" before counting,
    recomputing the receipt and the tally consistently, keeping a1's signature.
    ``revoke``: a1's key is revoked before the tally."""
    key = SigningKey(hashlib.sha256(CHAPTER.encode()).digest())
    entries: list[dict[str, Any]] = [genesis(CHAPTER, "A", "chapter", key, T0)]

    def append(body: dict[str, Any]) -> dict[str, Any]:
        entry = make_entry(
            body,
            actor=CHAPTER,
            seq=len(entries),
            prev=entry_digest(entries[-1]),
            key=key,
            key_id=key_id(CHAPTER, 0),
            published=T0,
        )
        entries.append(entry)
        return entry

    for m in ("a1", "a2", "a3"):
        append(roster_change_body("add", m, "member"))
    for m, k in MEMBER_KEYS.items():
        append(key_change_body("key", m, k.verify_key.multibase))
    spec = ProposalSpec(method="choice", options=("parks", "transit"))
    question = append({"type": "Question", "name": "Budget", **spec_fields(spec)})
    votes = {"a1": {"choice": "parks"}, "a2": {"choice": "transit"}, "a3": {"choice": "parks"}}
    records: list[Any] = []
    typed = []
    for m, raw in votes.items():
        signed = None
        if m in MEMBER_KEYS:
            signed = sign_member_ballot(MEMBER_KEYS[m], question["id"], m, 1, raw)
        if forge and m == "a1":
            raw = {"choice": "transit"}
        nonce = hashlib.sha256(m.encode()).digest()
        ballot = validate_ballot(spec, raw)
        typed.append(ballot)
        extra = {}
        if signed is not None and not (drop_signature and m == "a1"):
            extra = {"counter": signed.counter, "key": signed.key, "signature": signed.signature}
        records.append(
            BallotRecord(
                actor=CHAPTER,
                proposal=question["id"],
                member=m,
                ballot=raw,
                nonce=nonce.hex(),
                receipt=ballot_receipt(question["id"], ballot, nonce),
                **extra,
            )
        )
    if revoke:
        append(key_change_body("revoke-key", "a1", MEMBER_KEYS["a1"].verify_key.multibase))
    size, root = roster_root(roster_at(entries))
    tally = make_tally(
        spec,
        chapter=CHAPTER,
        proposal=question["id"],
        proposal_digest=entry_digest(question),
        ballots=typed,
        receipts=[r.receipt for r in records],
        eligible=size,
        roster_root=root,
        roster_size=size,
    )
    append({"type": "Tally", **tally_body(tally)})
    doc = {
        "id": CHAPTER,
        "type": "Group",
        "outbox": f"{CHAPTER}/outbox",
        "assertionMethod": [multikey(CHAPTER, 0, key.verify_key)],
    }
    bundle: list[Any] = [ActorRecord(document=doc), *(EntryRecord(entry=e) for e in entries)]
    raw_bundle = encode_bundle(header(CHAPTER, T0), [*bundle, *records])
    return audit_bundle(parse_bundle(raw_bundle)[1])


def test_audit_counts_signed_and_custodial_ballots() -> None:
    report = audit_world()
    assert report.findings == ()
    assert (report.seen.member_signed, report.seen.custodial) == (2, 1)
    assert (report.verified.member_signed, report.verified.custodial) == (2, 1)


def test_audit_names_a_ballot_the_node_altered() -> None:
    report = audit_world(forge=True)
    assert [(f.actor, f.seq, f.what) for f in report.findings] == [
        (CHAPTER, 7, "bad_member_signature")
    ]
    assert "a1" in report.findings[0].why
    assert report.verified.member_signed == 1


def test_audit_names_a_ballot_signed_by_a_revoked_key() -> None:
    report = audit_world(revoke=True)
    assert [f.what for f in report.findings] == ["revoked_member_key"]
    assert "a1" in report.findings[0].why and "revoked" in report.findings[0].why


def test_a_dropped_signature_makes_the_ballot_custodial_in_the_report() -> None:
    # the node can always withhold a signature; the report then says so in numbers
    report = audit_world(drop_signature=True)
    assert report.ok
    assert (report.seen.member_signed, report.seen.custodial) == (1, 2)


def test_protocol_md_worked_example() -> None:
    # docs/protocol.md §7.5 quotes these bytes and this signature
    key, public = vector_key()
    proposal, member = "https://chapter.example/entries/7", "m-3f2a9c0d1e4b5a69"
    assert signed_ballot_payload(proposal, member, 2, {"choice": "agree"}) == (
        b'{"ballot":{"choice":"agree"},"counter":2,"member":"m-3f2a9c0d1e4b5a69",'
        b'"proposal":"https://chapter.example/entries/7","type":"MemberBallot"}'
    )
    signed = sign_member_ballot(key, proposal, member, 2, {"choice": "agree"})
    assert signed.key == public
    assert signed.signature == (
        "z3u54XAN7VEeiB5Az3Ja89Auk7biQ9tQtpbXvhTadMHa5W3jfRYxDuTUPb6bBpLtJnP98ckFpUqZ2M5ket7AAroMv"
    )
