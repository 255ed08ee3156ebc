"""eddsa-jcs-2022 Data Integrity proofs, reproduced byte for byte from the W3C and FEP vectors."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import canonicalize
from protocol.errors import ProofError
from protocol.keys import SigningKey, VerifyKey, b58decode, b58encode
from protocol.proofs import create_proof, hash_data, proof_method, verify_proof

W3C = Path(__file__).resolve().parent.parent / "vectors" / "w3c-vc-di-eddsa"
JCS = W3C / "eddsa-jcs-2022"
FEP = W3C / "fep-8b32"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


@pytest.fixture
def w3c_key() -> SigningKey:
    return SigningKey.from_multibase(_json(W3C / "keyPair.json")["privateKeyMultibase"])


def test_w3c_intermediate_values(w3c_key: SigningKey) -> None:
    unsigned = _json(W3C / "unsigned.json")
    config = _json(JCS / "proofConfigJCS.json")
    assert canonicalize(unsigned).decode() == _text(JCS / "canonDocJCS.txt")
    assert canonicalize(config).decode() == _text(JCS / "proofCanonJCS.txt")
    assert hashlib.sha256(canonicalize(unsigned)).hexdigest() == _text(JCS / "docHashJCS.txt")
    assert hashlib.sha256(canonicalize(config)).hexdigest() == _text(JCS / "proofHashJCS.txt")
    combined = hash_data(unsigned, config)
    assert combined.hex() == _text(JCS / "combinedHashJCS.txt")
    assert w3c_key.sign(combined).hex() == _text(JCS / "sigHexJCS.txt")


def test_w3c_signed_document_is_reproduced(w3c_key: SigningKey) -> None:
    config = _json(JCS / "proofConfigJCS.json")
    signed = create_proof(
        _json(W3C / "unsigned.json"),
        w3c_key,
        verification_method=config["verificationMethod"],
        created=config["created"],
    )
    expected = _json(JCS / "signedJCS.json")
    assert signed == expected
    assert signed["proof"]["proofValue"] == _text(JCS / "sigBTC58JCS.txt")  # type: ignore[index]
    assert canonicalize(signed) == canonicalize(expected)


def test_w3c_signed_document_verifies(w3c_key: SigningKey) -> None:
    signed = _json(JCS / "signedJCS.json")
    verify_proof(
        signed, VerifyKey.from_multibase(_json(W3C / "keyPair.json")["publicKeyMultibase"])
    )
    assert proof_method(signed).endswith("#z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2")


def test_w3c_flipped_bytes_fail(w3c_key: SigningKey) -> None:
    raw = (JCS / "signedJCS.json").read_bytes()
    detected = 0
    # Flip one bit inside every string value's first character: each must break the proof.
    signed = _json(JCS / "signedJCS.json")
    for path, _ in _string_leaves(signed):
        tampered = copy.deepcopy(signed)
        _set(tampered, path, lambda s: chr(ord(s[0]) ^ 1) + s[1:])
        with pytest.raises(ProofError):
            verify_proof(tampered, w3c_key.verify_key)
        detected += 1
    assert detected >= 12
    assert raw  # the file itself is untouched


def test_fep_8b32_example() -> None:
    params = _json(FEP / "params.json")
    key = SigningKey.from_multibase(params["secretKeyMultibase"])
    assert key.verify_key.multibase == params["publicKeyMultibase"]
    signed = create_proof(
        _json(FEP / "unsigned.json"),
        key,
        verification_method=params["verificationMethod"],
        created=params["created"],
    )
    expected = _json(FEP / "signed.json")
    assert canonicalize(signed) == canonicalize(expected)
    verify_proof(expected, VerifyKey.from_multibase(params["publicKeyMultibase"]))
    tampered = copy.deepcopy(expected)
    tampered["object"]["location"]["latitude"] = 25.273963
    with pytest.raises(ProofError, match="does not verify"):
        verify_proof(tampered, key.verify_key)


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    if isinstance(value, str):
        return [(path, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [leaf for k, v in items for leaf in _string_leaves(v, (*path, k))]


def _set(value: Any, path: tuple[Any, ...], change: Any) -> None:
    for k in path[:-1]:
        value = value[k]
    value[path[-1]] = change(value[path[-1]])


KEY = SigningKey.from_seed(bytes(range(32)))
DOC = {"@context": ["https://www.w3.org/ns/activitystreams"], "type": "Note", "content": "hi"}


def _signed() -> dict[str, Any]:
    return create_proof(
        DOC, KEY, verification_method="https://a.example/#k", created="2026-11-26T14:00:00Z"
    )


def test_round_trip_and_independence_from_input() -> None:
    signed = _signed()
    assert "proof" not in DOC
    verify_proof(signed, KEY.verify_key)
    assert signed["proof"]["@context"] == DOC["@context"]
    assert proof_method(signed) == "https://a.example/#k"
    with pytest.raises(ProofError, match="already carries"):
        create_proof(signed, KEY, verification_method="x", created="2026-11-26T14:00:00Z")


def test_document_without_context_gets_proof_without_context() -> None:
    signed = create_proof({"a": 1}, KEY, verification_method="k", created="2026-11-26T14:00:00Z")
    assert "@context" not in signed["proof"]  # type: ignore[operator]
    verify_proof(signed, KEY.verify_key)


def _mutated(**changes: Any) -> dict[str, Any]:
    signed = _signed()
    for field, value in changes.items():
        if value is None:
            del signed["proof"][field]
        else:
            signed["proof"][field] = value
    return signed


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({**DOC}, "no proof"),
        ({**DOC, "proof": [1]}, "single JSON object"),
        (_mutated(type="Ed25519Signature2020"), "proof type"),
        (_mutated(cryptosuite="eddsa-rdfc-2022"), "cryptosuite"),
        (_mutated(proofPurpose="authentication"), "purpose"),
        (_mutated(verificationMethod=None), "verificationMethod"),
        (_mutated(proofValue=None), "proofValue"),
        (_mutated(proofValue="u" + "A" * 86), "proofValue"),
        (_mutated(proofValue="z0OIl"), "base58btc"),
        (_mutated(proofValue="z2222"), "not 64"),
        (_mutated(created=5), "created"),
        (_mutated(**{"@context": ["https://other.example"]}), "prefix"),
        (_mutated(created="2026-11-26T14:00:01Z"), "does not verify"),
        ({**_signed(), "content": "hi!"}, "does not verify"),
        ({**_signed(), "extra": 1.5}, "does not verify"),
        ({**_signed(), "bad": float("nan")}, "canonicalize"),
    ],
)
def test_bad_proofs_are_refused(doc: dict[str, Any], why: str) -> None:
    with pytest.raises(ProofError, match=why):
        verify_proof(doc, KEY.verify_key)


def test_wrong_key_is_refused() -> None:
    other = SigningKey.from_seed(bytes(32)).verify_key
    with pytest.raises(ProofError, match="does not verify"):
        verify_proof(_signed(), other)


def test_purpose_can_be_chosen() -> None:
    signed = create_proof(
        DOC,
        KEY,
        verification_method="k",
        created="2026-11-26T14:00:00Z",
        proof_purpose="authentication",
    )
    verify_proof(signed, KEY.verify_key, proof_purpose="authentication")
    with pytest.raises(ProofError, match="purpose"):
        verify_proof(signed, KEY.verify_key)


# --- the proofValue decoder (merged lanes) against a digit-by-digit reference --------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58decode_reference(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + _B58.index(ch)
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(_B58), max_size=200))
def test_b58decode_matches_digit_by_digit_reference(text: str) -> None:
    # Up to 128 digits the lanes path runs, beyond it the plain loop: both covered.
    assert b58decode(text) == _b58decode_reference(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=140))
def test_b58_round_trip_of_signature_sized_and_longer_data(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


def test_proof_value_with_one_digit_changed_fails() -> None:
    signed = _signed()
    value = signed["proof"]["proofValue"]
    for at in (1, len(value) // 2, len(value) - 1):
        digit = "2" if value[at] != "2" else "3"
        tampered = copy.deepcopy(signed)
        tampered["proof"]["proofValue"] = value[:at] + digit + value[at + 1 :]
        with pytest.raises(ProofError):
            verify_proof(tampered, KEY.verify_key)
