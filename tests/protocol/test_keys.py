"""Ed25519 keys, Multikey and base58btc against the did:key and W3C vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import KeyFormatError, ProofError
from protocol.keys import SigningKey, VerifyKey, b58decode, b58encode

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
DID_KEY = json.loads((VECTORS / "did-key" / "ed25519.json").read_text())
W3C_PAIR = json.loads((VECTORS / "w3c-vc-di-eddsa" / "keyPair.json").read_text())


def _flip_char(text: str, at: int) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    swap = alphabet[(alphabet.index(text[at]) + 1) % 58]
    return text[:at] + swap + text[at + 1 :]


@pytest.mark.parametrize("vector", DID_KEY, ids=lambda v: v["seed_hex"][-2:])
def test_did_key_vector(vector: dict[str, str]) -> None:
    key = SigningKey.from_seed(bytes.fromhex(vector["seed_hex"])).verify_key
    assert key.multibase == vector["multikey"]
    assert VerifyKey.from_multibase(vector["multikey"]) == key
    if "publicKeyBase58" in vector:
        assert b58encode(bytes(key)) == vector["publicKeyBase58"]
        assert b58decode(vector["publicKeyBase58"]) == bytes(key)
    else:
        x = vector["publicKeyJwk_x"]
        assert base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)) == bytes(key)


@pytest.mark.parametrize("vector", DID_KEY, ids=lambda v: v["seed_hex"][-2:])
def test_did_key_vector_tampered(vector: dict[str, str]) -> None:
    key = SigningKey.from_seed(bytes.fromhex(vector["seed_hex"])).verify_key
    tampered = _flip_char(vector["multikey"], len(vector["multikey"]) - 5)
    try:
        other = VerifyKey.from_multibase(tampered)
    except KeyFormatError:
        return  # the flip broke the multicodec prefix or length: also a detection
    assert other != key
    flipped_seed = bytes.fromhex(vector["seed_hex"])[:-1] + b"\x09"
    assert SigningKey.from_seed(flipped_seed).verify_key.multibase != vector["multikey"]


def test_w3c_key_pair() -> None:
    secret = SigningKey.from_multibase(W3C_PAIR["privateKeyMultibase"])
    assert secret.verify_key.multibase == W3C_PAIR["publicKeyMultibase"]
    assert secret.secret_multibase() == W3C_PAIR["privateKeyMultibase"]
    tampered = _flip_char(W3C_PAIR["privateKeyMultibase"], 40)
    assert (
        SigningKey.from_multibase(tampered).verify_key.multibase != (W3C_PAIR["publicKeyMultibase"])
    )


def test_sign_and_verify() -> None:
    key = SigningKey.from_seed(bytes(range(32)))
    signature = key.sign(b"tally")
    assert len(signature) == 64
    key.verify_key.verify(b"tally", signature)
    with pytest.raises(ProofError, match="does not verify"):
        key.verify_key.verify(b"tallY", signature)
    with pytest.raises(ProofError, match="does not verify"):
        key.verify_key.verify(b"tally", bytes([signature[0] ^ 1]) + signature[1:])
    with pytest.raises(ProofError, match="64 bytes"):
        key.verify_key.verify(b"tally", signature[:-1])
    other = SigningKey.from_seed(bytes(32)).verify_key
    with pytest.raises(ProofError):
        other.verify(b"tally", signature)


def test_seed_round_trip_and_repr_hides_secret() -> None:
    seed = bytes(range(1, 33))
    key = SigningKey.from_seed(seed)
    assert key.seed_bytes() == seed
    assert seed.hex() not in repr(key) and key.secret_multibase() not in repr(key)
    assert key.verify_key.multibase in repr(key)


def test_keys_compare_and_hash_by_bytes() -> None:
    a = SigningKey.from_seed(bytes(32)).verify_key
    b = VerifyKey.from_bytes(bytes(a))
    c = SigningKey.from_seed(bytes(31) + b"\x01").verify_key
    assert a == b and hash(a) == hash(b) and a != c
    assert len({a, b, c}) == 2


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "starting with 'z'"),
        ("z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooW0", "'0' at position"),
        ("z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooW", "multicodec"),
        ("z" + b58encode(b"\xed\x02" + bytes(32)), "multicodec"),
        ("z" + "2" * 2000, "too long"),
    ],
)
def test_bad_multibase_is_refused(text: str, why: str) -> None:
    with pytest.raises(KeyFormatError, match=why):
        VerifyKey.from_multibase(text)


def test_bad_key_lengths() -> None:
    with pytest.raises(KeyFormatError, match="32 bytes"):
        SigningKey.from_seed(bytes(31))
    with pytest.raises(KeyFormatError, match="32 bytes"):
        VerifyKey.from_bytes(bytes(33))


def test_base58_known_values() -> None:
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0\x01") == "112"
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58decode("StV1DL6CwTryKyV") == b"hello world"
    assert b58decode("StV1DL6CwTryKyW") != b"hello world"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_base58_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data
