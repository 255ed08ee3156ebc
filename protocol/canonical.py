"""Canonical JSON (RFC 8785, JCS), digests, and bounded decoding of untrusted JSON.

Theory of operation. RFC 8785 fixes one byte string per JSON value:
- §3.2.2.3 numbers are IEEE 754 doubles written as ECMAScript's Number.prototype.toString
  writes them (shortest round-trip digits, plain notation when 1e-6 <= |x| < 1e21);
- §3.2.2.2 strings escape only `"`, `\\` and U+0000..U+001F (with the short forms \\b \\t \\n
  \\f \\r, else \\u00xx in lowercase hex) and are otherwise raw UTF-8;
- §3.2.3 object members are sorted by their names as arrays of UTF-16 code units.

Two paths produce that form. The fast path hands the value to msgspec's C encoder with
sorted keys, which writes exactly the JCS bytes *when* every number is an int in the I-JSON
safe range (so its text equals the double's) and every object's key order by code point
equals the order by UTF-16 code unit (always true unless one object mixes a key holding a
character above U+FFFF with one holding U+E000..U+FFFF). A single walk checks those
conditions and rejects what JCS cannot express; anything else (floats, such rare keys)
goes through the slow path, a direct transcription of the RFC. Tests cross-check both paths
against the independent `rfc8785` package.

Integers outside ±(2**53 - 1) are refused rather than silently rounded to a double: a vote
count that changes when canonicalized would be worse than an error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring
from typing import Any, Final

import msgspec

from protocol.errors import CanonicalError, DecodeError

__all__ = [
    "MAX_SAFE_INTEGER",
    "canonicalize",
    "canonicalize_exact",
    "canonicalize_minus",
    "decode_json",
    "decode_object",
    "digest",
    "es6_number",
    "sha256_hex",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_MAX_DEPTH: Final = 128
_PLAIN: Final = frozenset({str, type(None), bool})
_PLAIN_OR_INT: Final = _PLAIN | {int}

_encode_sorted: Final = msgspec.json.Encoder(order="sorted").encode
_encode_str: Final[Callable[[str], str]] = encode_basestring


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest(value: object) -> str:
    """The digest of a JSON value: lowercase hex SHA-256 of its canonical form (§1)."""
    return hashlib.sha256(canonicalize(value)).hexdigest()


def canonicalize(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value.

    Accepts dict (str keys), list, tuple, str, int, float, bool and None. Raises
    CanonicalError on NaN or infinities, integers beyond ±(2**53 - 1), lone surrogates,
    non-str keys, nesting deeper than 128 and any other type.
    """
    return _canonical(value)


def canonicalize_minus(obj: Mapping[str, object], member: str, inner: str) -> tuple[bytes, ...]:
    """Canonical forms of ``obj``, of ``obj`` without ``member``, and of the object
    ``obj[member]`` without its ``inner`` — for Data Integrity: the secured document,
    the unsecured document, the proof options — validating the document once.

    Once the whole object passed the fast-path check, every object built from a subset
    of its members (or of its members' members) passes too: its keys are a subset, its
    values were checked. So the two smaller forms are encoded without another walk.
    """
    part = obj.get(member)
    without = dict(obj)  # a copy then one deletion: far cheaper than a comprehension
    without.pop(member, None)
    if not isinstance(part, dict):
        return canonicalize(obj), canonicalize(without), canonicalize(part)
    options = dict(part)
    options.pop(inner, None)
    if type(obj) is dict and type(part) is dict and _fast_ok(obj, 0):
        try:
            return _encode_sorted(obj), _encode_sorted(without), _encode_sorted(options)
        except UnicodeEncodeError as exc:
            raise CanonicalError(f"string holds a lone surrogate: {exc.reason}") from exc
    return canonicalize_exact(obj), canonicalize_exact(without), canonicalize_exact(options)


def _canonical(value: object) -> bytes:
    if _fast_ok(value, 0):
        try:
            return _encode_sorted(value)
        except UnicodeEncodeError as exc:
            raise CanonicalError(f"string holds a lone surrogate: {exc.reason}") from exc
    return canonicalize_exact(value)


def canonicalize_exact(value: object) -> bytes:
    """canonicalize without the fast path: the RFC transcribed, for reference and tests."""
    parts: list[str] = []
    _write(value, parts, 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"string holds a lone surrogate: {exc.reason}") from exc


def _fast_ok(value: object, depth: int) -> bool:
    """Validate ``value``; True when the fast encoder writes its exact JCS bytes.

    This walk is most of what canonicalization costs, so it leans on C-level helpers:
    one ``set(map(type, ...))`` per container decides whether a Python loop is needed.
    """
    t = type(value)
    if t is dict:
        d: dict[Any, Any] = value  # type: ignore[assignment]
        try:
            keys = "".join(d)
        except TypeError:
            raise CanonicalError(_bad_keys(d)) from None
        # Past U+D7FF, code-point and UTF-16 orders may differ: exact path.
        ok = keys.isascii() or max(keys, default="") <= "\ud7ff"
        items: Iterable[Any] = d.values()
    elif t is list or t is tuple:
        ok = True
        items = value  # type: ignore[assignment]
    elif t is str or value is None or t is bool:
        return True
    elif t is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER  # type: ignore[operator]
    elif t is float:
        _check_float(value)  # type: ignore[arg-type]
        return False
    else:
        return _fast_ok_subclass(value, depth)
    if depth > _MAX_DEPTH:
        raise CanonicalError(f"nesting deeper than {_MAX_DEPTH}")
    kinds = set(map(type, items))
    if kinds <= _PLAIN:
        return ok  # only strings, null and booleans: nothing to check (the common case)
    if kinds <= _PLAIN_OR_INT:
        ints = items if len(kinds) == 1 else [v for v in items if type(v) is int]
        return ok and min(ints) >= -MAX_SAFE_INTEGER and max(ints) <= MAX_SAFE_INTEGER
    for v in items:
        tv = type(v)
        if tv is str:
            continue
        if tv is int and -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
            continue
        if tv is list and set(map(type, v)) <= _PLAIN:
            continue  # a list of strings, like every @context: no call needed
        if not _fast_ok(v, depth + 1):
            ok = False
    return ok


def _fast_ok_subclass(value: object, depth: int) -> bool:
    # Subclasses of the JSON types (IntEnum, str enums, OrderedDict, ...) are serialized as
    # their base type on the exact path, so that no encoder's idea of them leaks in.
    if isinstance(value, bool | int | float | str | dict | list | tuple):
        _write(value, [], depth)  # validates
        return False
    raise CanonicalError(f"a value of type {type(value).__name__} has no JSON form")


def _bad_keys(d: dict[Any, Any]) -> str:
    bad = next(k for k in d if not isinstance(k, str))
    return f"object key {bad!r} is a {type(bad).__name__}, not a string"


def _check_float(x: float) -> None:
    if not math.isfinite(x):
        raise CanonicalError(f"{x!r} is not a JSON number (RFC 8785 §3.2.2.3)")


def _utf16_key(key: str) -> bytes:
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"object key holds a lone surrogate: {exc.reason}") from exc


def _write(value: object, out: list[str], depth: int) -> None:
    """The exact path: RFC 8785 §3.2 transcribed."""
    if depth > _MAX_DEPTH:
        raise CanonicalError(f"nesting deeper than {_MAX_DEPTH}")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_str(str.__str__(value)))
    elif isinstance(value, int):
        n = int(value)
        if not -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER:
            raise CanonicalError(
                f"integer {n} is outside ±(2**53 - 1) and has no exact JSON number form"
            )
        out.append(str(n))
    elif isinstance(value, float):
        out.append(es6_number(float(value)))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalError(_bad_keys(value))
        out.append("{")
        first = True
        for key in sorted(value, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(str.__str__(key)))
            out.append(":")
            _write(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, depth + 1)
        out.append("]")
    else:
        raise CanonicalError(f"a value of type {type(value).__name__} has no JSON form")


def es6_number(x: float) -> str:
    """ECMAScript Number::toString of a finite double (RFC 8785 §3.2.2.3).

    Python's repr already yields the shortest digits that round-trip, which is the digit
    string ECMAScript chooses; only the notation differs, so it is rewritten here.
    """
    _check_float(x)
    if x == 0:
        return "0"  # also -0
    text = repr(x)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    if whole != "0":
        n = len(whole) + exponent  # value = 0.DIGITS × 10**n
        digits = (whole + frac).rstrip("0")
    else:
        stripped = frac.lstrip("0")
        n = exponent - (len(frac) - len(stripped))
        digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{mant}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


# --- bounded decoding of untrusted bytes -------------------------------------------------


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DecodeError(f"duplicate object key {dup!r}")
    return obj


def _no_constant(name: str) -> Any:
    raise DecodeError(f"{name} is not JSON")


def _float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise DecodeError(f"number {text[:40]} is out of the double range")
    return x


def _int(text: str) -> int | float:
    n = int(text)
    if -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER:
        return n
    # Beyond I-JSON's exact range a JSON number is a double (RFC 8785 §3.2.2.3): accept it
    # as one when the digits are exactly that double or are its canonical spelling (ES6
    # pads the shortest digits with zeros), refuse digits a double would silently change.
    x = float(n)
    if math.isfinite(x) and (int(x) == n or es6_number(x) == text):
        return x
    raise DecodeError(f"integer {text[:40]} is not a double's exact value or canonical form")


_decoder: Final = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_constant=_no_constant, parse_float=_float, parse_int=_int
)


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def decode_json(data: bytes, *, max_bytes: int) -> object:
    """Decode untrusted JSON bytes strictly, refusing anything canonicalize cannot take.

    Raises DecodeError when ``data`` is longer than ``max_bytes``, is not UTF-8 (a BOM
    included), is not exactly one JSON text, holds a duplicate object key, NaN/Infinity,
    a number beyond the double range, an integer beyond ±(2**53 - 1) that a double cannot
    hold exactly (one it can hold is returned as a float, as RFC 8785 reads it),
    a lone surrogate escape, or nests deeper than the interpreter allows.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"JSON body of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise DecodeError("a byte order mark is not allowed (RFC 8259 §8.1)")
    try:
        value: object = _decoder.decode(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise DecodeError(f"malformed JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise DecodeError("JSON nests too deeply") from None
    except ValueError as exc:  # int() digit limit
        raise DecodeError(f"malformed number: {exc}") from None
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(value):
        raise DecodeError("a string holds a lone surrogate escape")
    return value


def decode_object(data: bytes, *, max_bytes: int) -> dict[str, object]:
    """decode_json that also requires the top level to be an object."""
    value = decode_json(data, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise DecodeError(f"top level is a JSON {type(value).__name__}, not an object")
    return value
