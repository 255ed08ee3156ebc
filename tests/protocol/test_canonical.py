"""RFC 8785 canonical JSON: reference vectors, number serialization, both paths, decoding."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import (
    MAX_SAFE_INTEGER,
    canonicalize,
    canonicalize_exact,
    canonicalize_minus,
    decode_json,
    decode_object,
    digest,
    es6_number,
    sha256_hex,
)
from protocol.errors import CanonicalError, DecodeError

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "jcs"
NAMES = sorted(p.stem for p in (VECTORS / "input").glob("*.json"))


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _expected(name: str) -> bytes:
    return (VECTORS / "output" / f"{name}.json").read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_reference_vector(name: str) -> None:
    value = json.loads((VECTORS / "input" / f"{name}.json").read_text(encoding="utf-8"))
    hexed = (VECTORS / "outhex" / f"{name}.txt").read_text().split()
    assert canonicalize(value) == _expected(name) == bytes.fromhex("".join(hexed))
    assert canonicalize_exact(value) == _expected(name)


@pytest.mark.parametrize("name", NAMES)
def test_reference_vector_tampered(name: str) -> None:
    value = json.loads((VECTORS / "input" / f"{name}.json").read_text(encoding="utf-8"))
    expected = _expected(name)
    for at in (0, len(expected) // 2, len(expected) - 1):
        assert canonicalize(value) != _flip(expected, at)


def _double(hex_bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(hex_bits.rjust(16, "0")))[0])


def test_rfc8785_appendix_b_number_samples() -> None:
    samples = json.loads((VECTORS / "rfc8785_appendix_b.json").read_text())["samples"]
    assert len(samples) == 26
    for hex_bits, text in samples:
        x = _double(hex_bits)
        if text is None:
            with pytest.raises(CanonicalError):
                canonicalize([x])
        else:
            assert es6_number(x) == text, hex_bits
            assert canonicalize([x]) == f"[{text}]".encode()
            assert canonicalize([x]) != f"[{text}0]".encode()  # tampered


def _es6_corpus(count: int, spec: dict[str, Any]) -> Iterator[int]:
    """The reference ES6 corpus generator (cyberphone numgen), as the vector describes it."""
    static = [int(h, 16) for h in spec["static_u64_hex"]]
    serial_start, serial_count = int(spec["serial_start"], 16), spec["serial_count"]
    block, pool = bytes(32), b""
    for i in range(count):
        if i < len(static):
            yield static[i]
        elif i < len(static) + serial_count:
            yield serial_start + i - len(static)
        else:
            while True:
                if not pool:
                    block = hashlib.sha256(block).digest()
                    pool = block
                bits, pool = int.from_bytes(pool[:8], "little"), pool[8:]
                x = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
                if x != 0 and math.isfinite(x):
                    break
            yield bits


@pytest.mark.parametrize("lines", [1000, 10000, 100000])
def test_es6_number_corpus_checksum(lines: int) -> None:
    spec = json.loads((VECTORS / "es6_numbers.json").read_text())
    want = next(c for c in spec["checksums"] if c["lines"] == lines)
    h, size = hashlib.sha256(), 0
    for bits in _es6_corpus(lines, spec):
        x = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
        line = f"{bits:x},{es6_number(x)}\n".encode()
        h.update(line)
        size += len(line)
    assert (h.hexdigest(), size) == (want["sha256"], want["bytes"])
    assert h.hexdigest() != hashlib.sha256(b"tampered").hexdigest()


@pytest.mark.parametrize(
    "bad",
    [
        math.nan,
        math.inf,
        -math.inf,
        [1, {"a": math.nan}],
        "lone \ud800 surrogate",
        {"\udc00": 1},
        {1: "int key"},
        {(1, 2): "tuple key"},
        MAX_SAFE_INTEGER + 1,
        {"n": -(2**64)},
        b"bytes",
        {1, 2},
        object(),
    ],
)
def test_what_json_cannot_express_is_refused(bad: object) -> None:
    with pytest.raises(CanonicalError):
        canonicalize(bad)
    with pytest.raises(CanonicalError):
        canonicalize_exact(bad)


def test_refusal_names_the_problem() -> None:
    with pytest.raises(CanonicalError, match="outside"):
        canonicalize({"count": 2**60})
    with pytest.raises(CanonicalError, match="key 7"):
        canonicalize({7: 1})


def test_deep_nesting_is_refused() -> None:
    value: object = 0
    for _ in range(200):
        value = [value]
    with pytest.raises(CanonicalError, match="nesting"):
        canonicalize(value)


def test_utf16_key_order_differs_from_code_point_order() -> None:
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+FB33 there, after it by code point.
    value = {"\ufb33": 1, "\U0001f600": 2, "a": 3}
    assert canonicalize(value) == '{"a":3,"\U0001f600":2,"\ufb33":1}'.encode()
    assert canonicalize(value) == rfc8785.dumps(value)


def test_subclasses_serialize_as_their_base_type() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Label(enum.StrEnum):
        ok = "ok"

    assert canonicalize({"c": Color.RED, "l": Label.ok, "t": (True, None)}) == (
        b'{"c":1,"l":"ok","t":[true,null]}'
    )


def test_digest_and_sha256() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest({"b": 1, "a": "x"}) == sha256_hex(b'{"a":"x","b":1}')
    assert digest({"b": 1, "a": "x"}) != digest({"b": 1, "a": "y"})


# --- both paths against the independent rfc8785 package ----------------------------------

_keys = st.text(st.characters(codec="utf-8"), max_size=6)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)
# Values the fast path takes: no floats, keys below U+D800.
_fast_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)
_fast_json = st.recursive(
    _fast_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.text(st.characters(max_codepoint=0xD7FF), max_size=6), inner, max_size=5
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_matches_rfc8785_package_on_random_json(value: object) -> None:
    assert canonicalize(value) == canonicalize_exact(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(_fast_json)
def test_fast_path_matches_on_fast_shaped_json(value: object) -> None:
    assert canonicalize(value) == canonicalize_exact(value) == rfc8785.dumps(value)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(_json)
def test_round_trip_is_a_fixed_point(value: object) -> None:
    once = canonicalize(value)
    assert canonicalize(decode_json(once, max_bytes=1 << 20)) == once


# --- bounded, strict decoding -------------------------------------------------------------


def test_decode_accepts_json() -> None:
    assert decode_json(b'{"a":[1,2.5,"x",null,true]}', max_bytes=100) == {
        "a": [1, 2.5, "x", None, True]
    }
    assert decode_json(b'"\\ud83d\\ude02"', max_bytes=100) == "\U0001f602"
    assert decode_object(b'{"a":1}', max_bytes=100) == {"a": 1}
    big = decode_json(b"[9007199254740992]", max_bytes=100)
    assert isinstance(big, list) and big == [2.0**53] and isinstance(big[0], float)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"a":1' + b" " * 200 + b"}", "exceeds"),
        (b'{"a":1,}', "malformed JSON"),
        (b'{"a":1} {"b":2}', "malformed JSON"),
        (b"", "malformed JSON"),
        (b'{"a":1,"a":2}', "duplicate object key 'a'"),
        (b'{"a":NaN}', "NaN"),
        (b"[Infinity]", "Infinity"),
        (b"[1e400]", "double range"),
        (b"[9007199254740993]", "not a double"),
        (b'["\\ud800"]', "lone surrogate"),
        (b'{"\\udfff":1}', "lone surrogate"),
        (b'"\xff"', "not UTF-8"),
        (b'\xef\xbb\xbf{"a":1}', "byte order mark"),
        (b"[" * 100000 + b"]" * 100000, "nests too deeply"),
        (b"[" + b"1" * 5000 + b"]", "malformed number"),
    ],
)
def test_decode_refuses_bad_input(data: bytes, why: str) -> None:
    with pytest.raises(DecodeError, match=why):
        decode_json(data, max_bytes=1 << 20 if len(data) > 300 else 200)


def test_decode_object_requires_an_object() -> None:
    with pytest.raises(DecodeError, match="not an object"):
        decode_object(b"[1]", max_bytes=100)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(_keys, _json, max_size=5),
    st.dictionaries(_keys, _json, max_size=5),
    st.sampled_from(["proof", "\U0001f600", "a"]),
    st.sampled_from(["proofValue", "\ufb33", ""]),
)
def test_canonicalize_minus_equals_three_canonicalizations(
    doc: dict[str, Any], part: dict[str, Any], member: str, inner: str
) -> None:
    obj = {**doc, member: {**part, inner: "z"}}
    without = {k: v for k, v in obj.items() if k != member}
    options = {k: v for k, v in obj[member].items() if k != inner}
    assert canonicalize_minus(obj, member, inner) == (
        rfc8785.dumps(obj),
        rfc8785.dumps(without),
        rfc8785.dumps(options),
    )


def test_canonicalize_minus_refuses_what_canonicalize_refuses() -> None:
    with pytest.raises(CanonicalError):
        canonicalize_minus({"proof": {"v": 1}, "x": math.nan}, "proof", "v")
    with pytest.raises(CanonicalError):
        canonicalize_minus({"proof": {"v": "\ud800"}}, "proof", "w")
    assert canonicalize_minus({"proof": 5, "a": 1}, "proof", "v") == (
        b'{"a":1,"proof":5}',
        b'{"a":1}',
        b"5",
    )
