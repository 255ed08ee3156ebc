"""Ed25519 keys, their Multikey form, and base58btc: the only module touching key bytes.

A public key is published as a Multikey (W3C Controlled Identifiers §2.2.2; FEP-521a):
``publicKeyMultibase`` = "z" (multibase base58btc) + base58btc(0xed 0x01 ‖ 32 key bytes),
where 0xed 0x01 is the unsigned-varint multicodec ``ed25519-pub``. A secret key, when it
must be written out, uses the multicodec ``ed25519-priv`` (0x80 0x26) the same way.
Seeds always come from the caller: nothing here draws randomness.
"""

from __future__ import annotations

from typing import Final

import nacl.signing
from nacl._sodium import ffi as _ffi  # PyNaCl's libsodium binding
from nacl._sodium import lib as _lib

from protocol.errors import KeyFormatError, ProofError

__all__ = [
    "SigningKey",
    "VerifyKey",
    "b58decode",
    "b58encode",
]

_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(_ALPHABET)}
_DIGITS: Final = bytes(_INDEX.get(chr(b), 0xFF) for b in range(256))
_MAX_B58_CHARS: Final = 1024  # decoding is quadratic; nothing we read is near this long
_ED25519_PUB: Final = b"\xed\x01"
_ED25519_PRIV: Final = b"\x80\x26"
SIGNATURE_BYTES: Final = 64


def b58encode(data: bytes) -> str:
    """base58btc (the Bitcoin alphabet); each leading zero byte becomes a "1"."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of b58encode; KeyFormatError on a character outside the alphabet."""
    if len(text) > _MAX_B58_CHARS:
        raise KeyFormatError(f"base58 text of {len(text)} characters is too long")
    digits = text.encode("utf-8").translate(_DIGITS) if text.isascii() else b"\xff"
    if 0xFF in digits:
        pos, ch = next((i, c) for i, c in enumerate(text) if c not in _INDEX)
        raise KeyFormatError(f"{ch!r} at position {pos} is not a base58btc character")
    if len(digits) <= _LANE_DIGITS:
        n = _lanes_value(digits)
    else:
        n = 0
        for d in digits:
            n = n * 58 + d
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def _lane_levels(count: int) -> tuple[tuple[int, int, int], ...]:
    # (lane width in bits, mask of the low half of every double-width lane, 58**digits)
    levels = []
    width = 8
    while width < 8 * count:
        lane = 2 * width
        mask = sum(((1 << width) - 1) << (lane * i) for i in range(8 * count // lane))
        levels.append((width, mask, 58 ** (width // 8)))
        width = lane
    return tuple(levels)


_LANE_DIGITS: Final = 128  # a signature is 87 or 88 digits, a Multikey 48
_LEVELS: Final = _lane_levels(_LANE_DIGITS)


def _lanes_value(digits: bytes) -> int:
    """The number base-58 ``digits`` (values 0..57, at most 128) spell.

    Decoding runs once per proof verified, and a digit-by-digit Python loop costs more
    than all the rest of reading a proof. So the digits are read as one big integer of
    8-bit lanes (``int.from_bytes``), and seven rounds of whole-integer arithmetic merge
    neighbouring lanes: each lane pair (hi, lo) of k digits each becomes hi * 58**k + lo
    in a lane twice as wide. A value of k base-58 digits is below 58**k < 256**k, so it
    always fits its lane and no carry crosses lanes; missing leading digits are zeros.
    """
    n = int.from_bytes(digits, "big")
    for width, mask, scale in _LEVELS:
        n = ((n >> width) & mask) * scale + (n & mask)
    return n


def _multibase_decode(text: object, prefix: bytes, what: str) -> bytes:
    if not isinstance(text, str) or not text.startswith("z"):
        raise KeyFormatError(f"{what} must be a string starting with 'z' (base58btc multibase)")
    raw = b58decode(text[1:])
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise KeyFormatError(
            f"{what} must encode the multicodec prefix {prefix.hex()} and 32 key bytes"
        )
    return raw[len(prefix) :]


class VerifyKey:
    """An Ed25519 public key. Equal and hashable by its 32 bytes."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != 32:
            raise KeyFormatError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        self._raw = raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        return cls(raw)

    @classmethod
    def from_multibase(cls, text: str) -> VerifyKey:
        """Parse a Multikey ``publicKeyMultibase`` (z + base58btc(0xed01 ‖ key))."""
        return cls(_multibase_decode(text, _ED25519_PUB, "publicKeyMultibase"))

    @property
    def multibase(self) -> str:
        return "z" + b58encode(_ED25519_PUB + self._raw)

    def __bytes__(self) -> bytes:
        return self._raw

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise ProofError unless ``signature`` is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            raise ProofError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
        # libsodium's crypto_sign_open through PyNaCl's own cffi binding: the very check
        # nacl.signing.VerifyKey.verify makes, minus two Python wrapper layers (chain
        # verification runs this once per entry, so the layers show).
        signed = bytes(signature) + message
        out = _ffi.new("unsigned char[]", len(signed))
        if _lib.crypto_sign_open(out, _ffi.NULL, signed, len(signed), self._raw) != 0:
            raise ProofError(f"the signature does not verify with key {self.multibase}")

    def __reduce__(self) -> tuple[type[VerifyKey], tuple[bytes]]:
        return (VerifyKey, (self._raw,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.multibase!r})"


class SigningKey:
    """An Ed25519 secret key, made from a 32-byte seed the caller drew."""

    __slots__ = ("_key", "_verify_key")

    def __init__(self, seed: bytes) -> None:
        seed = bytes(seed)
        if len(seed) != 32:
            raise KeyFormatError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
        self._key = nacl.signing.SigningKey(seed)
        self._verify_key = VerifyKey(bytes(self._key.verify_key))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls(seed)

    @classmethod
    def from_multibase(cls, text: str) -> SigningKey:
        """Parse a Multikey ``secretKeyMultibase`` (z + base58btc(0x8026 ‖ seed))."""
        return cls(_multibase_decode(text, _ED25519_PRIV, "secretKeyMultibase"))

    def seed_bytes(self) -> bytes:
        """The 32-byte seed, for the node's key storage only."""
        return bytes(self._key)

    def secret_multibase(self) -> str:
        return "z" + b58encode(_ED25519_PRIV + bytes(self._key))

    @property
    def verify_key(self) -> VerifyKey:
        return self._verify_key

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self._key.sign(message).signature

    def __repr__(self) -> str:  # never show the secret
        return f"SigningKey(public={self._verify_key.multibase!r})"
