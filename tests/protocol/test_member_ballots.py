"""Member-signed ballots (protocol/member_ballots.py) and the key part of the roster fold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import canonicalize
from protocol.keys import SigningKey, b58decode, b58encode
from protocol.member_ballots import (
    MemberBallotError,
    SignedBallot,
    decode_signed_ballot,
    sign_member_ballot,
    signed_ballot_payload,
    verify_member_ballot,
)
from protocol.roster import RosterError, key_change_body, member_keys_at, roster_at

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
