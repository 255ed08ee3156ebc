"""draft-cavage-12 HTTP Signatures as the fediverse speaks them: signing and reading.

Signing writes what Mastodon expects: ``(request-target) host date`` plus ``digest``
when there is a body, ``algorithm="rsa-sha256"`` for RSA keys (``hs2019`` for Ed25519).
Reading takes the ``Signature`` header (§2.1; ``Authorization: Signature`` as a
fallback) and rebuilds the signing string (§2.3).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from federation.httpsig_common import (
    MAX_COVERED,
    ParsedSignature,
    PrivateKey,
    check_size,
    digest_header,
    fail,
    http_date,
    lower_headers,
    parse_date,
    require,
    sign_bytes,
    split_target,
)

__all__ = ["parse_cavage", "sign_request"]

_CAVAGE_ALGORITHMS = {"rsa-sha256", "hs2019"}
_CAVAGE_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|(\d{1,15}))\s*(?:,|$)')


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
    _, host, path = split_target(url)
    if '"' in key_id or not key_id.isprintable():
        raise ValueError(f"key id {key_id!r} cannot be written in a Signature header")
    have = lower_headers(headers)
    out: dict[str, str] = {}
    if "host" not in have:
        out["Host"] = have["host"] = host
    if "date" not in have:
        out["Date"] = have["date"] = http_date(now)
    names = ["(request-target)", "host", "date"]
    if body is not None:
        out["Digest"] = have["digest"] = digest_header(body)
        names.append("digest")
    lines = [f"(request-target): {method.lower()} {path}"]
    lines += [f"{name}: {have[name].strip()}" for name in names[1:]]
    signature = sign_bytes(private_key, "\n".join(lines).encode())
    algorithm = "rsa-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "hs2019"
    out["Signature"] = (
        f'keyId="{key_id}",algorithm="{algorithm}",headers="{" ".join(names)}",'
        f'signature="{base64.b64encode(signature).decode("ascii")}"'
    )
    return out


def parse_cavage(method: str, path: str, have: dict[str, str], policy: bool) -> ParsedSignature:
    """Read the cavage ``Signature`` header from lower-cased ``have``; rebuild what it signs.

    ``policy`` enforces coverage of the request target, the host and a time.
    """
    raw = have.get("signature")
    if raw is None:
        auth = have.get("authorization", "")
        if auth[:10].lower() == "signature ":
            raw = auth[10:]
    if raw is None:
        raise fail("missing_signature", "no Signature, Signature-Input or Authorization header")
    check_size("Signature", raw)
    params: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        m = _CAVAGE_PARAM.match(raw, pos)
        if m is None or m.end() == pos:
            raise fail(
                "malformed_signature", f"Signature header unreadable at {raw[pos : pos + 40]!r}"
            )
        name = m.group(1)
        if name in params:
            raise fail("malformed_signature", f"Signature parameter {name!r} given twice")
        params[name] = m.group(2) if m.group(2) is not None else m.group(3)
        pos = m.end()
    for need in ("keyId", "signature"):
        if not params.get(need):
            raise fail("malformed_signature", f"Signature header has no {need}")
    algorithm = params.get("algorithm", "")
    if algorithm and algorithm not in _CAVAGE_ALGORITHMS:
        raise fail("unsupported_algorithm", f"algorithm {algorithm[:40]!r} is not supported")
    covered = tuple(params.get("headers", "date").lower().split())
    if not covered or len(covered) > MAX_COVERED or len(set(covered)) != len(covered):
        raise fail("malformed_signature", "headers parameter is empty, too long or repeats")
    created = int(params["created"]) if "created" in params else None
    expires = int(params["expires"]) if "expires" in params else None
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"{name}: {method.lower()} {path}")
        elif name in ("(created)", "(expires)"):
            value = created if name == "(created)" else expires
            if value is None:
                raise fail("malformed_signature", f"{name} is covered but has no parameter")
            lines.append(f"{name}: {value}")
        elif name in have:
            lines.append(f"{name}: {have[name].strip()}")
        else:
            raise fail("missing_header", f"covered header {name!r} is not in the request")
    if policy:
        require(covered, ["(request-target)"], ["host"], ["date", "(created)"])
    try:
        signature = base64.b64decode(params["signature"], validate=True)
    except ValueError as err:
        raise fail("malformed_signature", "signature is not base64") from err
    return ParsedSignature(
        scheme="cavage",
        key_id=params["keyId"],
        algorithm=algorithm,
        covered=covered,
        signature=signature,
        signing_string="\n".join(lines).encode("utf-8"),
        date=parse_date(have["date"]) if "date" in covered else None,
        created=created,
        expires=expires,
    )
