"""RFC 9421 HTTP Message Signatures: signing and reading.

Signing covers ``@method @target-uri`` (+ ``content-digest``, RFC 9530) with
``created``, ``keyid`` and ``alg``. Reading takes the ``Signature-Input`` /
``Signature`` pair (§4) and rebuilds the signature base (§2.5) from the derived
components (§2.2) and covered fields.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from federation.httpsig_common import (
    MAX_COVERED,
    ParsedSignature,
    PrivateKey,
    check_size,
    content_digest,
    fail,
    parse_date,
    require,
    sign_bytes,
    split_target,
)
from federation.structured_fields import Item, parse_signature_dictionaries, serialize_inner_list

__all__ = ["parse_rfc9421", "sign_request_rfc9421"]

_RFC9421_ALGORITHMS = {"rsa-v1_5-sha256", "ed25519"}


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
    scheme, host, path = split_target(url)
    out: dict[str, str] = {}
    components = ["@method", "@target-uri"]
    values = [method.upper(), f"{scheme}://{host}{path}"]
    if body is not None:
        out["Content-Digest"] = content_digest(body)
        components.append("content-digest")
        values.append(out["Content-Digest"])
    alg = "rsa-v1_5-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "ed25519"
    params: list[tuple[str, Item]] = [
        ("created", int(now.timestamp())),
        ("keyid", key_id),
        ("alg", alg),
    ]
    sig_params = serialize_inner_list(components, params)
    base = _signature_base(components, values, sig_params)
    signature = sign_bytes(private_key, base)
    out["Signature-Input"] = f"{label}={sig_params}"
    out["Signature"] = f"{label}=:{base64.b64encode(signature).decode('ascii')}:"
    return out


def _signature_base(components: list[str], values: list[str], sig_params: str) -> bytes:
    lines = [f'"{c}": {v}' for c, v in zip(components, values, strict=True)]
    lines.append(f'"@signature-params": {sig_params}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError as err:
        raise fail("malformed_signature", "signature base is not ASCII") from err


def parse_rfc9421(
    method: str, path: str, have: dict[str, str], scheme: str, policy: bool
) -> ParsedSignature:
    """Read the first label present in both RFC 9421 headers of lower-cased ``have``.

    ``scheme`` is the receiver's own, to rebuild ``@target-uri``; ``policy`` enforces
    coverage of the method, the target, the authority and a time.
    """
    raw_input, raw_sig = have["signature-input"], have.get("signature")
    if raw_sig is None:
        raise fail("missing_signature", "Signature-Input without a Signature header")
    check_size("Signature-Input", raw_input)
    check_size("Signature", raw_sig)
    try:
        inputs, signatures = parse_signature_dictionaries(raw_input, raw_sig)
    except ValueError as err:
        raise fail("malformed_signature", f"RFC 9421 headers unreadable: {err}") from err
    label = next((lb for lb in inputs if lb in signatures), None)
    if label is None:
        raise fail("malformed_signature", "no label is in both Signature-Input and Signature")
    components, params = inputs[label]
    signature = signatures[label]
    if len(components) > MAX_COVERED or len(set(components)) != len(components):
        raise fail("malformed_signature", "too many or repeated covered components")
    keyid, alg = params.get("keyid"), params.get("alg", "")
    created, expires = params.get("created"), params.get("expires")
    if not isinstance(keyid, str) or not keyid:
        raise fail("malformed_signature", "Signature-Input has no keyid")
    if not isinstance(alg, str) or (alg and alg not in _RFC9421_ALGORITHMS):
        raise fail("unsupported_algorithm", f"alg {str(alg)[:40]!r} is not supported")
    for name, value in (("created", created), ("expires", expires)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise fail("malformed_signature", f"{name} is not an integer")
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
                raise fail("malformed_signature", f"component {c!r} is not supported")
            if c in ("@target-uri", "@authority") and not host:
                raise fail("missing_header", "the request has no Host header")
            values.append(derived[c])
        elif c in have:
            values.append(have[c].strip())
        else:
            raise fail("missing_header", f"covered header {c!r} is not in the request")
    covered = tuple(components)
    if policy:
        require(covered, ["@method"], ["@target-uri", "@request-target", "@path"])
        require(covered, ["@target-uri", "@authority", "host"])
        if created is None:
            require(covered, ["date"])
    base = _signature_base(
        components, values, serialize_inner_list(components, list(params.items()))
    )
    return ParsedSignature(
        scheme="rfc9421",
        key_id=keyid,
        algorithm=alg,
        covered=covered,
        signature=signature,
        signing_string=base,
        date=parse_date(have["date"]) if "date" in covered else None,
        created=created,
        expires=expires,
    )
