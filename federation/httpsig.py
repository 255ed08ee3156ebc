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

This module is the one door: the dialects live in ``httpsig_cavage`` and
``httpsig_rfc9421``, what they share in ``httpsig_common``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from federation.httpsig_cavage import parse_cavage, sign_request
from federation.httpsig_common import (
    MAX_SIGNATURE_HEADER,
    ParsedSignature,
    PrivateKey,
    PublicKey,
    check_content_digest,
    check_digest,
    digest_header,
    fail,
    http_date,
    lower_headers,
)
from federation.httpsig_rfc9421 import parse_rfc9421, sign_request_rfc9421

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

MIN_RSA_BITS = 2048
_BODY_METHODS = {"POST", "PUT", "PATCH"}


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
    have = lower_headers(headers)
    has_body = body is not None and (len(body) > 0 or method.upper() in _BODY_METHODS)
    if "signature-input" in have:
        parsed = parse_rfc9421(method, path_with_query, have, scheme, require_coverage)
        if has_body:
            assert body is not None
            if "content-digest" in parsed.covered:
                check_content_digest(have, body)
            elif "digest" in parsed.covered:
                check_digest(have, body)
            elif require_coverage:
                raise fail("missing_header", "content-digest is not covered by the signature")
        return parsed
    parsed = parse_cavage(method, path_with_query, have, require_coverage)
    if has_body:
        assert body is not None
        if "digest" in parsed.covered:
            check_digest(have, body)
        elif require_coverage:
            raise fail("missing_header", "digest is not covered by the signature")
    return parsed


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
        raise fail(
            "stale_date",
            f"Date {http_date(parsed.date)} is more than {max_skew} s from now ({http_date(now)})",
        )
    if parsed.created is not None and abs(t - parsed.created) > max_skew:
        raise fail("stale_date", f"created {parsed.created} is more than {max_skew} s from now")
    if parsed.expires is not None and t > parsed.expires:
        raise fail("stale_date", f"signature expired at {parsed.expires}")

    alg = parsed.algorithm
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if alg not in ("", "rsa-sha256", "hs2019", "rsa-v1_5-sha256"):
                raise fail("unsupported_algorithm", f"algorithm {alg!r} does not fit an RSA key")
            if public_key.key_size < min_rsa_bits:
                raise fail(
                    "unsupported_algorithm",
                    f"RSA key of {public_key.key_size} bits; at least {min_rsa_bits} required",
                )
            public_key.verify(
                parsed.signature, parsed.signing_string, padding.PKCS1v15(), hashes.SHA256()
            )
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            if alg not in ("", "hs2019", "ed25519"):
                raise fail(
                    "unsupported_algorithm", f"algorithm {alg!r} does not fit an Ed25519 key"
                )
            public_key.verify(parsed.signature, parsed.signing_string)
        else:
            raise fail("unsupported_algorithm", f"key type {type(public_key).__name__}")
    except InvalidSignature as err:
        raise fail(
            "bad_signature", f"signature by {parsed.key_id} does not verify ({parsed.scheme})"
        ) from err
