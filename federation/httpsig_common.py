"""What both HTTP signature dialects share: key types, the parsed signature, header
normalisation, digests and the coverage rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from federation.errors import SignatureError

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
Scheme = Literal["cavage", "rfc9421"]

MAX_SIGNATURE_HEADER = 8192
MAX_COVERED = 32


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    """A signature read from a request, ready for ``verify_request``."""

    scheme: Scheme
    key_id: str
    algorithm: str  # as named in the request; "" when absent
    covered: tuple[str, ...]  # header names / component identifiers, in signed order
    signature: bytes
    signing_string: bytes  # what the signature is over
    date: datetime | None = None  # the covered Date header
    created: int | None = None
    expires: int | None = None


def fail(code: str, detail: str) -> SignatureError:
    return SignatureError(detail, code=code)


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # A multidict (aiohttp's request.headers) may repeat a name: its values are joined
    # with ", " in order, as draft-cavage §2.3 and RFC 9421 §2.1 both prescribe.
    out: dict[str, str] = {}
    for k, v in headers.items():
        name = k.lower()
        out[name] = f"{out[name]}, {v.strip()}" if name in out else v.strip()
    return out


def digest_header(body: bytes) -> str:
    """The ``Digest`` header value for ``body``: ``SHA-256=<base64>``."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` header value for ``body``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def http_date(now: datetime) -> str:
    return format_datetime(now.astimezone(UTC), usegmt=True)


def split_target(url: str) -> tuple[str, str, str]:
    """(scheme, host header, path with query) of an absolute URL."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an absolute URL: {url!r}")
    host = parts.netloc.rpartition("@")[2].lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme.lower(), host, path


def sign_bytes(private_key: PrivateKey, data: bytes) -> bytes:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(data)


def check_size(name: str, value: str) -> None:
    if len(value) > MAX_SIGNATURE_HEADER:
        raise fail(
            "malformed_signature",
            f"{name} header is {len(value)} bytes, at most {MAX_SIGNATURE_HEADER} allowed",
        )


def check_digest(have: dict[str, str], body: bytes) -> None:
    """``Digest`` (RFC 3230) against the body, exact ``SHA-256=`` prefix as Mastodon writes it."""
    value = have.get("digest")
    if value is None:
        raise fail("missing_header", "the request has a body but no Digest header")
    check_size("Digest", value)
    want = hashlib.sha256(body).digest()
    entries = [e.strip() for e in value.split(",")]
    sha = [e for e in entries if e.startswith("SHA-256=")]
    if not sha:
        raise fail(
            "bad_digest",
            f"Digest {value[:80]!r} has no entry with the exact prefix 'SHA-256='",
        )
    try:
        got = base64.b64decode(sha[0][len("SHA-256=") :], validate=True)
    except ValueError as err:
        raise fail("bad_digest", "Digest SHA-256 value is not base64") from err
    if not hmac.compare_digest(got, want):
        raise fail("bad_digest", "Digest SHA-256 does not match the body")


def check_content_digest(have: dict[str, str], body: bytes) -> None:
    """``Content-Digest`` (RFC 9530) against the body; its sha-256 member is required."""
    value = have.get("content-digest")
    if value is None:
        raise fail("missing_header", "the request has a body but no Content-Digest header")
    check_size("Content-Digest", value)
    want = hashlib.sha256(body).digest()
    for entry in value.split(","):
        name, _, item = entry.strip().partition("=")
        if name == "sha-256":
            if not (len(item) > 2 and item[0] == ":" and item[-1] == ":"):
                raise fail("bad_digest", "Content-Digest sha-256 is not a byte sequence")
            try:
                got = base64.b64decode(item[1:-1], validate=True)
            except ValueError as err:
                raise fail("bad_digest", "Content-Digest sha-256 is not base64") from err
            if not hmac.compare_digest(got, want):
                raise fail("bad_digest", "Content-Digest sha-256 does not match the body")
            return
    raise fail("bad_digest", f"Content-Digest {value[:80]!r} has no sha-256 member")


def parse_date(value: str) -> datetime:
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as err:
        raise fail("malformed_signature", f"Date {value[:60]!r} is not an HTTP date") from err
    if date.tzinfo is None:
        raise fail("malformed_signature", f"Date {value[:60]!r} has no time zone")
    return date


def require(covered: tuple[str, ...], *alternatives: list[str]) -> None:
    """The coverage rule: each group of ``alternatives`` needs one member covered."""
    for options in alternatives:
        if not any(o in covered for o in options):
            raise fail("missing_header", f"{' or '.join(options)} is not covered by the signature")
