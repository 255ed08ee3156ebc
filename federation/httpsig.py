"""HTTP Signatures: draft-cavage-12 as the fediverse speaks it, and RFC 9421.

Theory of operation
-------------------
Pure functions over (method, path, headers, body); no web framework, no clock (``now``
comes in). Two steps on the receiving side, so a request with a bad digest or a
missing header is refused before anyone fetches a key:

1. ``parse_signature_headers`` reads the ``Signature`` header (draft-cavage-12 §2.1,
   ``Authorization: Signature`` as a fallback) or the ``Signature-Input`` /
   ``Signature`` pair (RFC 9421 §4), rebuilds the signing string (cavage §2.3) or the
   signature base (RFC 9421 §2.5), checks the body against ``Digest`` (RFC 3230,
   exact ``SHA-256=`` prefix as Mastodon writes it) or ``Content-Digest`` (RFC 9530),
   and enforces coverage: the request target, the host and a time (``date`` or
   ``created``), plus the digest whenever there is a body.
2. ``verify_request`` checks the time window (±``max_skew``, one hour by default, as
   Mastodon allows) and the signature with the caller's public key: RSA PKCS#1 v1.5
   SHA-256 (``rsa-sha256``, ``hs2019``, ``rsa-v1_5-sha256``) or Ed25519 (``hs2019``,
   ``ed25519``).

Signing writes what Mastodon expects: ``(request-target) host date`` plus ``digest``
when there is a body, ``algorithm="rsa-sha256"`` for RSA keys (``hs2019`` for Ed25519).
``sign_request_rfc9421`` writes the RFC 9421 form. Key parsing is the caller's job
(cache parsed keys by PEM there).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from federation.errors import SignatureError
from federation.structured_fields import Item, parse_signature_dictionaries, serialize_inner_list

__all__ = [
    "MAX_SIGNATURE_HEADER",
    "ParsedSignature",
    "PrivateKey",
    "PublicKey",
    "digest_header",
    "parse_signature_headers",
    "sign_request",
    "sign_request_rfc9421",
    "verify_request",
]

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
Scheme = Literal["cavage", "rfc9421"]

MAX_SIGNATURE_HEADER = 8192
MAX_COVERED = 32
MIN_RSA_BITS = 2048
_CAVAGE_ALGORITHMS = {"rsa-sha256", "hs2019"}
_RFC9421_ALGORITHMS = {"rsa-v1_5-sha256", "ed25519"}
_CAVAGE_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|(\d{1,15}))\s*(?:,|$)')
_BODY_METHODS = {"POST", "PUT", "PATCH"}


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


def _fail(code: str, detail: str) -> SignatureError:
    return SignatureError(detail, code=code)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
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


def _content_digest(body: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _http_date(now: datetime) -> str:
    return format_datetime(now.astimezone(UTC), usegmt=True)


def _target(url: str) -> tuple[str, str, str]:
    """(scheme, host header, path with query) of an absolute URL."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an absolute URL: {url!r}")
    host = parts.netloc.rpartition("@")[2].lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme.lower(), host, path


def _sign_bytes(private_key: PrivateKey, data: bytes) -> bytes:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(data)


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    key_id: str,
    private_key: PrivateKey,
    now: datetime,
) -> dict[str, str]:
    """Sign a request draft-cavage style; return the headers to add.

    Adds ``Host`` and ``Date`` unless present, ``Digest`` when ``body`` is not None,
    and ``Signature`` over ``(request-target) host date [digest]``.
    """
    _, host, path = _target(url)
    if '"' in key_id or not key_id.isprintable():
        raise ValueError(f"key id {key_id!r} cannot be written in a Signature header")
    have = _lower(headers)
    out: dict[str, str] = {}
    if "host" not in have:
        out["Host"] = have["host"] = host
    if "date" not in have:
        out["Date"] = have["date"] = _http_date(now)
    names = ["(request-target)", "host", "date"]
    if body is not None:
        out["Digest"] = have["digest"] = digest_header(body)
        names.append("digest")
    lines = [f"(request-target): {method.lower()} {path}"]
    lines += [f"{name}: {have[name].strip()}" for name in names[1:]]
    signature = _sign_bytes(private_key, "\n".join(lines).encode())
    algorithm = "rsa-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "hs2019"
    out["Signature"] = (
        f'keyId="{key_id}",algorithm="{algorithm}",headers="{" ".join(names)}",'
        f'signature="{base64.b64encode(signature).decode("ascii")}"'
    )
    return out


def sign_request_rfc9421(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    key_id: str,
    private_key: PrivateKey,
    now: datetime,
    label: str = "sig1",
) -> dict[str, str]:
    """Sign a request in RFC 9421 form; return ``Signature-Input``, ``Signature`` and,
    when ``body`` is not None, ``Content-Digest``.

    Covers ``@method @target-uri`` (+ ``content-digest``), with ``created`` and ``keyid``.
    """
    scheme, host, path = _target(url)
    out: dict[str, str] = {}
    components = ["@method", "@target-uri"]
    values = [method.upper(), f"{scheme}://{host}{path}"]
    if body is not None:
        out["Content-Digest"] = _content_digest(body)
        components.append("content-digest")
        values.append(out["Content-Digest"])
    alg = "rsa-v1_5-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "ed25519"
    params: list[tuple[str, Item]] = [
        ("created", int(now.timestamp())),
        ("keyid", key_id),
        ("alg", alg),
    ]
    sig_params = serialize_inner_list(components, params)
    base = _rfc9421_base(components, values, sig_params)
    signature = _sign_bytes(private_key, base)
    out["Signature-Input"] = f"{label}={sig_params}"
    out["Signature"] = f"{label}=:{base64.b64encode(signature).decode('ascii')}:"
    return out


def _rfc9421_base(components: list[str], values: list[str], sig_params: str) -> bytes:
    lines = [f'"{c}": {v}' for c, v in zip(components, values, strict=True)]
    lines.append(f'"@signature-params": {sig_params}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError as err:
        raise _fail("malformed_signature", "signature base is not ASCII") from err


def _check_size(name: str, value: str) -> None:
    if len(value) > MAX_SIGNATURE_HEADER:
        raise _fail(
            "malformed_signature",
            f"{name} header is {len(value)} bytes, at most {MAX_SIGNATURE_HEADER} allowed",
        )


def _check_digest(have: dict[str, str], body: bytes) -> None:
    value = have.get("digest")
    if value is None:
        raise _fail("missing_header", "the request has a body but no Digest header")
    _check_size("Digest", value)
    want = hashlib.sha256(body).digest()
    entries = [e.strip() for e in value.split(",")]
    sha = [e for e in entries if e.startswith("SHA-256=")]
    if not sha:
        raise _fail(
            "bad_digest",
            f"Digest {value[:80]!r} has no entry with the exact prefix 'SHA-256='",
        )
    try:
        got = base64.b64decode(sha[0][len("SHA-256=") :], validate=True)
    except ValueError as err:
        raise _fail("bad_digest", "Digest SHA-256 value is not base64") from err
    if not hmac.compare_digest(got, want):
        raise _fail("bad_digest", "Digest SHA-256 does not match the body")


def _check_content_digest(have: dict[str, str], body: bytes) -> None:
    value = have.get("content-digest")
    if value is None:
        raise _fail("missing_header", "the request has a body but no Content-Digest header")
    _check_size("Content-Digest", value)
    want = hashlib.sha256(body).digest()
    for entry in value.split(","):
        name, _, item = entry.strip().partition("=")
        if name == "sha-256":
            if not (len(item) > 2 and item[0] == ":" and item[-1] == ":"):
                raise _fail("bad_digest", "Content-Digest sha-256 is not a byte sequence")
            try:
                got = base64.b64decode(item[1:-1], validate=True)
            except ValueError as err:
                raise _fail("bad_digest", "Content-Digest sha-256 is not base64") from err
            if not hmac.compare_digest(got, want):
                raise _fail("bad_digest", "Content-Digest sha-256 does not match the body")
            return
    raise _fail("bad_digest", f"Content-Digest {value[:80]!r} has no sha-256 member")


def _parse_date(value: str) -> datetime:
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as err:
        raise _fail("malformed_signature", f"Date {value[:60]!r} is not an HTTP date") from err
    if date.tzinfo is None:
        raise _fail("malformed_signature", f"Date {value[:60]!r} has no time zone")
    return date


def parse_signature_headers(
    method: str,
    path_with_query: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    scheme: str = "https",
    require_coverage: bool = True,
) -> ParsedSignature:
    """Read and pre-check a request's signature (no key, no clock needed).

    ``scheme`` is the receiver's own URL scheme, needed to rebuild RFC 9421's
    ``@target-uri``. ``require_coverage=False`` drops the coverage policy (target,
    host, time, digest) and exists only to check published test vectors; an inbox
    never turns it off. Raises SignatureError: missing_signature, malformed_signature,
    unsupported_algorithm, missing_header, bad_digest.
    """
    have = _lower(headers)
    has_body = body is not None and (len(body) > 0 or method.upper() in _BODY_METHODS)
    if "signature-input" in have:
        parsed = _parse_rfc9421(method, path_with_query, have, scheme, require_coverage)
        if has_body:
            assert body is not None
            if "content-digest" in parsed.covered:
                _check_content_digest(have, body)
            elif "digest" in parsed.covered:
                _check_digest(have, body)
            elif require_coverage:
                raise _fail("missing_header", "content-digest is not covered by the signature")
        return parsed
    parsed = _parse_cavage(method, path_with_query, have, require_coverage)
    if has_body:
        assert body is not None
        if "digest" in parsed.covered:
            _check_digest(have, body)
        elif require_coverage:
            raise _fail("missing_header", "digest is not covered by the signature")
    return parsed


def _parse_cavage(method: str, path: str, have: dict[str, str], policy: bool) -> ParsedSignature:
    raw = have.get("signature")
    if raw is None:
        auth = have.get("authorization", "")
        if auth[:10].lower() == "signature ":
            raw = auth[10:]
    if raw is None:
        raise _fail("missing_signature", "no Signature, Signature-Input or Authorization header")
    _check_size("Signature", raw)
    params: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        m = _CAVAGE_PARAM.match(raw, pos)
        if m is None or m.end() == pos:
            raise _fail(
                "malformed_signature", f"Signature header unreadable at {raw[pos : pos + 40]!r}"
            )
        name = m.group(1)
        if name in params:
            raise _fail("malformed_signature", f"Signature parameter {name!r} given twice")
        params[name] = m.group(2) if m.group(2) is not None else m.group(3)
        pos = m.end()
    for need in ("keyId", "signature"):
        if not params.get(need):
            raise _fail("malformed_signature", f"Signature header has no {need}")
    algorithm = params.get("algorithm", "")
    if algorithm and algorithm not in _CAVAGE_ALGORITHMS:
        raise _fail("unsupported_algorithm", f"algorithm {algorithm[:40]!r} is not supported")
    covered = tuple(params.get("headers", "date").lower().split())
    if not covered or len(covered) > MAX_COVERED or len(set(covered)) != len(covered):
        raise _fail("malformed_signature", "headers parameter is empty, too long or repeats")
    created = int(params["created"]) if "created" in params else None
    expires = int(params["expires"]) if "expires" in params else None
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"{name}: {method.lower()} {path}")
        elif name in ("(created)", "(expires)"):
            value = created if name == "(created)" else expires
            if value is None:
                raise _fail("malformed_signature", f"{name} is covered but has no parameter")
            lines.append(f"{name}: {value}")
        elif name in have:
            lines.append(f"{name}: {have[name].strip()}")
        else:
            raise _fail("missing_header", f"covered header {name!r} is not in the request")
    if policy:
        _require(covered, ["(request-target)"], ["host"], ["date", "(created)"])
    try:
        signature = base64.b64decode(params["signature"], validate=True)
    except ValueError as err:
        raise _fail("malformed_signature", "signature is not base64") from err
    return ParsedSignature(
        scheme="cavage",
        key_id=params["keyId"],
        algorithm=algorithm,
        covered=covered,
        signature=signature,
        signing_string="\n".join(lines).encode("utf-8"),
        date=_parse_date(have["date"]) if "date" in covered else None,
        created=created,
        expires=expires,
    )


def _require(covered: tuple[str, ...], *alternatives: list[str]) -> None:
    for options in alternatives:
        if not any(o in covered for o in options):
            raise _fail("missing_header", f"{' or '.join(options)} is not covered by the signature")


def _parse_rfc9421(
    method: str, path: str, have: dict[str, str], scheme: str, policy: bool
) -> ParsedSignature:
    raw_input, raw_sig = have["signature-input"], have.get("signature")
    if raw_sig is None:
        raise _fail("missing_signature", "Signature-Input without a Signature header")
    _check_size("Signature-Input", raw_input)
    _check_size("Signature", raw_sig)
    try:
        inputs, signatures = parse_signature_dictionaries(raw_input, raw_sig)
    except ValueError as err:
        raise _fail("malformed_signature", f"RFC 9421 headers unreadable: {err}") from err
    label = next((lb for lb in inputs if lb in signatures), None)
    if label is None:
        raise _fail("malformed_signature", "no label is in both Signature-Input and Signature")
    components, params = inputs[label]
    signature = signatures[label]
    if len(components) > MAX_COVERED or len(set(components)) != len(components):
        raise _fail("malformed_signature", "too many or repeated covered components")
    keyid, alg = params.get("keyid"), params.get("alg", "")
    created, expires = params.get("created"), params.get("expires")
    if not isinstance(keyid, str) or not keyid:
        raise _fail("malformed_signature", "Signature-Input has no keyid")
    if not isinstance(alg, str) or (alg and alg not in _RFC9421_ALGORITHMS):
        raise _fail("unsupported_algorithm", f"alg {str(alg)[:40]!r} is not supported")
    for name, value in (("created", created), ("expires", expires)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _fail("malformed_signature", f"{name} is not an integer")
    assert created is None or isinstance(created, int)
    assert expires is None or isinstance(expires, int)
    host = have.get("host", "").strip().lower()
    authority = host.removesuffix({"https": ":443", "http": ":80"}.get(scheme, "\0"))
    bare_path, _, query = path.partition("?")
    derived = {
        "@method": method.upper(),
        "@target-uri": f"{scheme}://{host}{path}",
        "@authority": authority,
        "@scheme": scheme,
        "@request-target": path,
        "@path": bare_path or "/",
        "@query": "?" + query,
    }
    values = []
    for c in components:
        if c.startswith("@"):
            if c not in derived:
                raise _fail("malformed_signature", f"component {c!r} is not supported")
            if c in ("@target-uri", "@authority") and not host:
                raise _fail("missing_header", "the request has no Host header")
            values.append(derived[c])
        elif c in have:
            values.append(have[c].strip())
        else:
            raise _fail("missing_header", f"covered header {c!r} is not in the request")
    covered = tuple(components)
    if policy:
        _require(covered, ["@method"], ["@target-uri", "@request-target", "@path"])
        _require(covered, ["@target-uri", "@authority", "host"])
        if created is None:
            _require(covered, ["date"])
    base = _rfc9421_base(components, values, serialize_inner_list(components, list(params.items())))
    return ParsedSignature(
        scheme="rfc9421",
        key_id=keyid,
        algorithm=alg,
        covered=covered,
        signature=signature,
        signing_string=base,
        date=_parse_date(have["date"]) if "date" in covered else None,
        created=created,
        expires=expires,
    )


def verify_request(
    parsed: ParsedSignature,
    public_key: PublicKey,
    *,
    now: datetime,
    max_skew: int = 3600,
    min_rsa_bits: int = MIN_RSA_BITS,
) -> None:
    """Check the time window and the signature; raise SignatureError, else return.

    Codes: stale_date (Date or created more than ``max_skew`` seconds off, or past
    ``expires``), unsupported_algorithm (algorithm and key disagree, weak RSA key),
    bad_signature.
    """
    t = now.timestamp()
    if parsed.date is not None and abs(t - parsed.date.timestamp()) > max_skew:
        raise _fail(
            "stale_date",
            f"Date {_http_date(parsed.date)} is more than {max_skew} s from now "
            f"({_http_date(now)})",
        )
    if parsed.created is not None and abs(t - parsed.created) > max_skew:
        raise _fail("stale_date", f"created {parsed.created} is more than {max_skew} s from now")
    if parsed.expires is not None and t > parsed.expires:
        raise _fail("stale_date", f"signature expired at {parsed.expires}")

    alg = parsed.algorithm
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if alg not in ("", "rsa-sha256", "hs2019", "rsa-v1_5-sha256"):
                raise _fail("unsupported_algorithm", f"algorithm {alg!r} does not fit an RSA key")
            if public_key.key_size < min_rsa_bits:
                raise _fail(
                    "unsupported_algorithm",
                    f"RSA key of {public_key.key_size} bits; at least {min_rsa_bits} required",
                )
            public_key.verify(
                parsed.signature, parsed.signing_string, padding.PKCS1v15(), hashes.SHA256()
            )
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            if alg not in ("", "hs2019", "ed25519"):
                raise _fail(
                    "unsupported_algorithm", f"algorithm {alg!r} does not fit an Ed25519 key"
                )
            public_key.verify(parsed.signature, parsed.signing_string)
        else:
            raise _fail("unsupported_algorithm", f"key type {type(public_key).__name__}")
    except InvalidSignature as err:
        raise _fail(
            "bad_signature", f"signature by {parsed.key_id} does not verify ({parsed.scheme})"
        ) from err
