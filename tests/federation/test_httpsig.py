"""HTTP Signatures: draft-cavage Appendix C vectors, interop with two independent
implementations (httpsig for draft-cavage, http-message-signatures for RFC 9421),
and every rejection the inbox relies on."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import http_message_signatures as hms
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from httpsig import HeaderSigner, HeaderVerifier
from multidict import CIMultiDict

from federation.errors import SignatureError
from federation.httpsig import (
    ParsedSignature,
    digest_header,
    parse_signature_headers,
    sign_request,
    sign_request_rfc9421,
    verify_request,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "cavage"
APPENDIX_C = json.loads((VECTORS / "appendix_c.json").read_text())
NOW = datetime(2026, 11, 26, 14, 0, 0, tzinfo=UTC)
URL = "https://chapter.example/inbox?x=1"
BODY = b'{"type":"Create","id":"https://region.example/a/1"}'


def flip_byte(data: bytes, i: int = 0) -> bytes:
    b = bytearray(data)
    b[i % len(b)] ^= 0x01
    return bytes(b)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def pem(key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def signed(
    key: Any, method: str = "POST", body: bytes | None = BODY, now: datetime = NOW, **extra: str
) -> dict[str, str]:
    headers = {"Content-Type": "application/activity+json", **extra}
    headers.update(
        sign_request(
            method,
            URL,
            headers,
            body,
            key_id="https://r.example/actor#main-key",
            private_key=key,
            now=now,
        )
    )
    return headers


def check(
    headers: dict[str, str],
    key: Any,
    method: str = "POST",
    body: bytes | None = BODY,
    now: datetime = NOW,
    path: str = "/inbox?x=1",
    **kw: Any,
) -> ParsedSignature:
    parsed = parse_signature_headers(method, path, headers, body)
    verify_request(parsed, key, now=now, **kw)
    return parsed


def code_of(fn: Any) -> str:
    with pytest.raises(SignatureError) as err:
        fn()
    assert err.value.status == 401
    return err.value.code


# --- draft-cavage-12 Appendix C -------------------------------------------------------


def appendix_request() -> tuple[str, str, dict[str, str], bytes]:
    head, _, body = APPENDIX_C["request"].partition("\n\n")
    request_line, *lines = head.split("\n")
    method, target, _ = request_line.split(" ")
    headers = dict(line.split(": ", 1) for line in lines)
    return method, target, headers, body.rstrip("\n").encode()


def appendix_keys() -> tuple[Any, Any]:
    private = serialization.load_pem_private_key(APPENDIX_C["private_key_pem"].encode(), None)
    public = serialization.load_pem_public_key(APPENDIX_C["public_key_pem"].encode())
    return private, public


APPENDIX_NOW = datetime(2014, 1, 5, 21, 31, 40, tzinfo=UTC)


def test_appendix_c_body_matches_its_digest() -> None:
    _, _, headers, body = appendix_request()
    assert digest_header(body) == headers["Digest"]


def test_appendix_c_default_test() -> None:
    method, target, headers, _ = appendix_request()
    _, public = appendix_keys()
    header = APPENDIX_C["default_test"]["signature_header"].removeprefix("Signature: ")
    request = headers | {"Signature": header}
    parsed = parse_signature_headers(method, target, request, None, require_coverage=False)
    assert parsed.signing_string.decode() == APPENDIX_C["default_test"]["signing_string"]
    assert (parsed.scheme, parsed.algorithm, parsed.key_id) == ("cavage", "rsa-sha256", "Test")
    verify_request(parsed, public, now=APPENDIX_NOW, min_rsa_bits=1024)
    # Tampered: one byte of the signature, or the Date it covers.
    bad = replace(parsed, signature=flip_byte(parsed.signature))
    assert code_of(lambda: verify_request(bad, public, now=APPENDIX_NOW, min_rsa_bits=1024)) == (
        "bad_signature"
    )
    moved = request | {"Date": "Sun, 05 Jan 2014 21:31:41 GMT"}
    moved_parsed = parse_signature_headers(method, target, moved, None, require_coverage=False)
    assert code_of(
        lambda: verify_request(moved_parsed, public, now=APPENDIX_NOW, min_rsa_bits=1024)
    ) == ("bad_signature")
    # Our inbox policy refuses a signature over the date alone, and a 1024-bit key.
    assert code_of(lambda: parse_signature_headers(method, target, request, None)) == (
        "missing_header"
    )
    assert code_of(lambda: verify_request(parsed, public, now=APPENDIX_NOW)) == (
        "unsupported_algorithm"
    )


def test_appendix_c_basic_test_in_authorization_header() -> None:
    method, target, headers, body = appendix_request()
    private, public = appendix_keys()
    vector = APPENDIX_C["basic_test"]
    # The draft wraps the base64 signature with spaces; the joined value is the signature.
    auth = re.sub(
        r'signature="([^"]*)"',
        lambda m: 'signature="' + m.group(1).replace(" ", "") + '"',
        vector["authorization_header"].removeprefix("Authorization: "),
    )
    request = headers | {"Authorization": auth}
    parsed = parse_signature_headers(method, target, request, None)
    assert parsed.signing_string.decode() == vector["signing_string"]
    assert parsed.covered == tuple(vector["headers"].split())
    verify_request(parsed, public, now=APPENDIX_NOW, min_rsa_bits=1024)
    # Our signer reproduces the published signature byte for byte.
    ours = sign_request(
        method,
        "https://example.com" + target,
        {"Host": headers["Host"], "Date": headers["Date"]},
        None,
        key_id="Test",
        private_key=private,
        now=APPENDIX_NOW,
    )
    assert ours == {
        "Signature": 'keyId="Test",algorithm="rsa-sha256",headers="(request-target) host date",'
        f'signature="{vector["signature"]}"'
    }
    # With the body present, the inbox policy wants the digest covered too.
    assert code_of(lambda: parse_signature_headers(method, target, request, body)) == (
        "missing_header"
    )
    tampered = request | {"Host": "example.org"}
    bad = parse_signature_headers(method, target, tampered, None)
    assert code_of(lambda: verify_request(bad, public, now=APPENDIX_NOW, min_rsa_bits=1024)) == (
        "bad_signature"
    )


def test_appendix_c_all_headers_test() -> None:
    method, target, headers, body = appendix_request()
    _, public = appendix_keys()
    vector = APPENDIX_C["all_headers_test"]
    header = re.sub(
        r'signature="([^"]*)"',
        lambda m: 'signature="' + m.group(1).replace(" ", "") + '"',
        vector["signature_header"].removeprefix("Signature: "),
    )
    # The published header lists (created) and (expires), but the published signing
    # string (and the signature) leave them out: the draft warns its vectors are old.
    # Following §2.3 for the header as published gives a string the signature is not over.
    as_published = parse_signature_headers(method, target, headers | {"Signature": header}, body)
    assert as_published.signing_string.decode() != vector["signing_string"]
    # (created 1402170695 is five months after the Date; judge at that time, wide window.)
    then = datetime.fromtimestamp(vector["created"] + 2, UTC)
    assert code_of(
        lambda: verify_request(as_published, public, now=then, max_skew=10**9, min_rsa_bits=1024)
    ) == ("bad_signature")
    assert code_of(
        lambda: verify_request(as_published, public, now=APPENDIX_NOW, min_rsa_bits=1024)
    ) == ("stale_date")
    # The header list that matches the published signing string verifies, body and all.
    fixed = re.sub(r" created=\d+, expires=\d+,", "", header.replace("(created) (expires) ", ""))
    parsed = parse_signature_headers(method, target, headers | {"Signature": fixed}, body)
    assert parsed.signing_string.decode() == vector["signing_string"]
    verify_request(parsed, public, now=APPENDIX_NOW, min_rsa_bits=1024)
    assert code_of(
        lambda: parse_signature_headers(
            method, target, headers | {"Signature": fixed}, flip_byte(body)
        )
    ) == ("bad_digest")
    # A covered digest is checked even with the coverage policy off.
    assert code_of(
        lambda: parse_signature_headers(
            method, target, headers | {"Signature": fixed}, flip_byte(body), require_coverage=False
        )
    ) == ("bad_digest")


# --- our own round trips ---------------------------------------------------------------


def test_post_is_signed_as_mastodon_expects(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    assert headers["Host"] == "chapter.example"
    assert headers["Date"] == "Thu, 26 Nov 2026 14:00:00 GMT"
    assert headers["Digest"] == digest_header(BODY)
    assert headers["Digest"].startswith("SHA-256=")
    assert 'algorithm="rsa-sha256"' in headers["Signature"]
    assert 'headers="(request-target) host date digest"' in headers["Signature"]
    parsed = check(headers, rsa_key.public_key())
    assert parsed.key_id == "https://r.example/actor#main-key"
    assert parsed.signing_string.startswith(b"(request-target): post /inbox?x=1\nhost: ")


def test_get_is_signed_without_digest(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key, "GET", None)
    assert "Digest" not in headers
    assert 'headers="(request-target) host date"' in headers["Signature"]
    check(headers, rsa_key.public_key(), "GET", None)
    check(headers, rsa_key.public_key(), "GET", b"")


def test_existing_host_and_date_are_kept(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key, Host="chapter.example", Date="Thu, 26 Nov 2026 13:59:00 GMT")
    added = sign_request("POST", URL, headers, BODY, key_id="k", private_key=rsa_key, now=NOW)
    assert "Host" not in added and "Date" not in added
    check(headers, rsa_key.public_key())


def test_hs2019_with_ed25519(ed_key: ed25519.Ed25519PrivateKey) -> None:
    headers = signed(ed_key)
    assert 'algorithm="hs2019"' in headers["Signature"]
    check(headers, ed_key.public_key())
    # Without an algorithm parameter the key decides.
    bare = headers | {"Signature": headers["Signature"].replace('algorithm="hs2019",', "")}
    check(bare, ed_key.public_key())


def test_hs2019_with_rsa_and_no_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    for replacement in ('algorithm="hs2019",', ""):
        variant = headers["Signature"].replace('algorithm="rsa-sha256",', replacement)
        check(headers | {"Signature": variant}, rsa_key.public_key())


def test_key_id_must_fit_the_header(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        sign_request("GET", URL, {}, None, key_id='k",x="', private_key=rsa_key, now=NOW)


def test_keyid_without_fragment_as_gotosocial_sends(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = {"Accept": "application/activity+json"}
    headers.update(
        sign_request(
            "GET",
            URL,
            headers,
            None,
            key_id="https://gts.example/users/a/main-key",
            private_key=rsa_key,
            now=NOW,
        )
    )
    assert check(headers, rsa_key.public_key(), "GET", None).key_id == (
        "https://gts.example/users/a/main-key"
    )


@pytest.mark.parametrize("key_name", ["ed_key", "rsa_key"])
def test_rfc9421_round_trip(key_name: str, request: pytest.FixtureRequest) -> None:
    key = request.getfixturevalue(key_name)
    headers = {"Host": "chapter.example", "Content-Type": "application/activity+json"}
    headers.update(
        sign_request_rfc9421("POST", URL, headers, BODY, key_id="kid", private_key=key, now=NOW)
    )
    assert headers["Content-Digest"].startswith("sha-256=:")
    parsed = check(headers, key.public_key())
    assert parsed.scheme == "rfc9421"
    assert parsed.covered == ("@method", "@target-uri", "content-digest")
    assert code_of(lambda: check(headers, key.public_key(), body=flip_byte(BODY))) == "bad_digest"
    later = NOW + timedelta(seconds=3601)
    assert code_of(lambda: check(headers, key.public_key(), now=later)) == "stale_date"
    bad = headers | {"Signature": "sig1=:" + base64.b64encode(b"x" * 64).decode() + ":"}
    assert code_of(lambda: check(bad, key.public_key())) == "bad_signature"


# --- interop with independent implementations ----------------------------------------


def test_httpsig_library_verifies_what_we_sign(rsa_key: rsa.RSAPrivateKey) -> None:
    _, public_pem = pem(rsa_key)
    for method, body in (("POST", BODY), ("GET", None)):
        headers = signed(rsa_key, method, body)
        required = ["(request-target)", "host", "date"] + (["digest"] if body else [])
        verifier = HeaderVerifier(
            headers,
            public_pem,
            required_headers=required,
            method=method,
            path="/inbox?x=1",
            sign_header="signature",
        )
        assert verifier.verify() is True
        tampered = headers | {"Date": "Thu, 26 Nov 2026 14:00:01 GMT"}
        verifier = HeaderVerifier(
            tampered,
            public_pem,
            required_headers=required,
            method=method,
            path="/inbox?x=1",
            sign_header="signature",
        )
        assert verifier.verify() is False


def test_we_verify_what_the_httpsig_library_signs(rsa_key: rsa.RSAPrivateKey) -> None:
    private_pem, _ = pem(rsa_key)
    names = ["(request-target)", "host", "date", "digest"]
    signer = HeaderSigner(
        "https://m.example/users/a#main-key",
        private_pem,
        algorithm="rsa-sha256",
        headers=names,
        sign_header="signature",
    )
    headers = {
        "Host": "chapter.example",
        "Date": "Thu, 26 Nov 2026 14:00:00 GMT",
        "Digest": digest_header(BODY),
    }
    out = dict(signer.sign(headers, method="POST", path="/inbox?x=1"))
    parsed = check(out, rsa_key.public_key())
    assert parsed.covered == tuple(names)
    assert parsed.key_id == "https://m.example/users/a#main-key"
    assert code_of(lambda: check(out, rsa_key.public_key(), body=BODY + b" ")) == "bad_digest"


class _Message(SimpleNamespace):
    method: str
    url: str
    headers: dict[str, str]


@pytest.mark.parametrize(
    ("key_name", "algorithm"),
    [("ed_key", hms.algorithms.ED25519), ("rsa_key", hms.algorithms.RSA_V1_5_SHA256)],
)
def test_rfc9421_interop_both_ways(
    key_name: str, algorithm: Any, request: pytest.FixtureRequest
) -> None:
    key = request.getfixturevalue(key_name)
    now = datetime.now(UTC)  # the library checks `created` against its own clock
    resolver = hms.MappingKeyResolver(
        public_keys={"kid": key.public_key()}, private_keys={"kid": key}
    )
    # We sign, they verify.
    headers = {"Host": "chapter.example", "Content-Type": "application/activity+json"}
    headers.update(
        sign_request_rfc9421("POST", URL, headers, BODY, key_id="kid", private_key=key, now=now)
    )
    message = _Message(method="POST", url=URL, headers=headers)
    verifier = hms.HTTPMessageVerifier(signature_algorithm=algorithm, key_resolver=resolver)
    (result,) = verifier.verify(message, body=BODY)
    assert list(result.covered_components)[:3] == ['"@method"', '"@target-uri"', '"content-digest"']
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(_Message(method="PUT", url=URL, headers=headers), body=BODY)
    # They sign, we verify.
    theirs = _Message(method="POST", url=URL, headers={"Host": "chapter.example"})
    hms.HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=resolver).sign(
        theirs,
        key_id="kid",
        created=now,
        label="pyhms",
        covered_component_ids=("@method", "@authority", "@path", "@query"),
        body=BODY,
    )
    parsed = check(theirs.headers, key.public_key(), now=now)
    assert parsed.covered == ("@method", "@authority", "@path", "@query", "content-digest")
    assert code_of(lambda: check(theirs.headers, key.public_key(), now=now, path="/inbox?x=2")) == (
        "bad_signature"
    )


# --- rejections ------------------------------------------------------------------------


def test_no_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    del headers["Signature"]
    assert code_of(lambda: check(headers, rsa_key.public_key())) == "missing_signature"
    assert code_of(lambda: check({"Authorization": "Bearer x"}, rsa_key.public_key())) == (
        "missing_signature"
    )
    rfc = {"Signature-Input": 'sig1=("@method");created=1;keyid="k"'}
    assert code_of(lambda: check(rfc, rsa_key.public_key())) == "missing_signature"


def test_wrong_key(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    with pytest.raises(SignatureError, match=re.escape("https://r.example/actor#main-key")) as err:
        check(headers, other_rsa_key.public_key())
    assert err.value.code == "bad_signature"


def test_altered_body_and_digest_format(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    assert code_of(lambda: check(headers, rsa_key.public_key(), body=BODY + b"\n")) == "bad_digest"
    value = headers["Digest"].removeprefix("SHA-256=")
    for bad in (f"sha-256={value}", f"Sha-256={value}", f"SHA256={value}", "SHA-256=!!", ""):
        with pytest.raises(SignatureError) as err:
            check(headers | {"Digest": bad}, rsa_key.public_key())
        assert err.value.code == "bad_digest", bad
    # A digest that matches the body but is not the one signed: the signature fails.
    other = BODY + b" "
    assert (
        code_of(
            lambda: check(
                headers | {"Digest": digest_header(other)}, rsa_key.public_key(), body=other
            )
        )
        == "bad_signature"
    )
    no_digest = {k: v for k, v in headers.items() if k != "Digest"}
    assert code_of(lambda: check(no_digest, rsa_key.public_key())) == "missing_header"


def test_date_window(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    key = rsa_key.public_key()
    check(headers, key, now=NOW + timedelta(seconds=3600))
    check(headers, key, now=NOW - timedelta(seconds=3600))
    with pytest.raises(SignatureError, match="more than 3600 s from now") as err:
        check(headers, key, now=NOW + timedelta(seconds=3601))
    assert err.value.code == "stale_date"
    assert code_of(lambda: check(headers, key, now=NOW - timedelta(seconds=3601))) == "stale_date"
    check(headers, key, now=NOW, max_skew=0)
    garbled = signed(rsa_key, Date="yesterday")
    assert code_of(lambda: check(garbled, key)) == "malformed_signature"


def test_header_not_covered(rsa_key: rsa.RSAPrivateKey) -> None:
    key = rsa_key.public_key()
    headers = signed(rsa_key)
    for covered, missing in (
        ("(request-target) host date", "digest"),
        ("host date digest", "(request-target)"),
        ("(request-target) date digest", "host"),
        ("(request-target) host digest", "date or (created)"),
    ):
        bad = headers | {
            "Signature": re.sub(r'headers="[^"]*"', f'headers="{covered}"', headers["Signature"])
        }
        with pytest.raises(SignatureError, match=re.escape(missing)) as err:
            check(bad, key)
        assert err.value.code == "missing_header"
    # A covered header the request does not carry.
    lost = {k: v for k, v in headers.items() if k != "Host"}
    with pytest.raises(SignatureError, match="'host' is not in the request") as err:
        check(lost, key)
    assert err.value.code == "missing_header"


@pytest.mark.parametrize("algorithm", ["rsa-sha1", "hmac-sha256", "ecdsa-sha256", "RSA-SHA256"])
def test_unknown_algorithm(rsa_key: rsa.RSAPrivateKey, algorithm: str) -> None:
    headers = signed(rsa_key)
    bad = headers | {"Signature": headers["Signature"].replace("rsa-sha256", algorithm)}
    assert code_of(lambda: check(bad, rsa_key.public_key())) == "unsupported_algorithm"


def test_algorithm_and_key_must_agree(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    assert code_of(lambda: check(signed(rsa_key), ed_key.public_key())) == "unsupported_algorithm"
    ed_headers = signed(ed_key)
    as_rsa = ed_headers | {"Signature": ed_headers["Signature"].replace("hs2019", "rsa-sha256")}
    assert code_of(lambda: check(as_rsa, ed_key.public_key())) == "unsupported_algorithm"
    assert code_of(lambda: check(ed_headers, rsa_key.public_key())) == "bad_signature"


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        'keyId="k",signature="AAAA",keyId="k2"',
        'algorithm="rsa-sha256",headers="date",signature="AAAA"',
        'keyId="k",headers="date"',
        'keyId="k",headers="date",signature="not base64!"',
        'keyId="k",headers="",signature="AAAA"',
        'keyId="k",headers="date date",signature="AAAA"',
        'keyId="k" signature="AAAA"',
        'keyId="k",headers="(created) date",signature="AAAA"',
    ],
)
def test_malformed_signature_header(rsa_key: rsa.RSAPrivateKey, value: str) -> None:
    headers = signed(rsa_key, "GET", None) | {"Signature": value}
    with pytest.raises(SignatureError) as err:
        parse_signature_headers("GET", "/inbox?x=1", headers, None, require_coverage=False)
    assert err.value.code == "malformed_signature"


def test_oversized_headers(rsa_key: rsa.RSAPrivateKey) -> None:
    headers = signed(rsa_key)
    huge = headers["Signature"].replace('keyId="', 'keyId="' + "a" * 9000)
    with pytest.raises(SignatureError, match="at most 8192") as err:
        check(headers | {"Signature": huge}, rsa_key.public_key())
    assert err.value.code == "malformed_signature"
    long_list = " ".join(f"x-h{i}" for i in range(40))
    many = headers | {
        "Signature": re.sub(r'headers="[^"]*"', f'headers="{long_list}"', headers["Signature"])
    }
    assert code_of(lambda: check(many, rsa_key.public_key())) == "malformed_signature"
    assert (
        code_of(lambda: check(headers | {"Digest": "SHA-256=" + "A" * 9000}, rsa_key.public_key()))
        == "malformed_signature"
    )


@pytest.mark.parametrize(
    ("signature_input", "signature", "code"),
    [
        (
            'sig1=("@method" "@target-uri";x);created=1;keyid="k"',
            "sig1=:AAAA:",
            "malformed_signature",
        ),
        ('sig1=("@method" "@target-uri");created=1', "sig1=:AAAA:", "malformed_signature"),
        (
            'sig1=("@method" "@target-uri");created=1;keyid="k"',
            'sig1="AAAA"',
            "malformed_signature",
        ),
        (
            'sig1=("@method" "@target-uri");created=1;keyid="k"',
            "sig2=:AAAA:",
            "malformed_signature",
        ),
        (
            'sig1=("@method" "@target-uri");created=1;keyid="k";alg="hmac-sha256"',
            "sig1=:AAAA:",
            "unsupported_algorithm",
        ),
        (
            'sig1=("@method" "@target-uri");created="1";keyid="k"',
            "sig1=:AAAA:",
            "malformed_signature",
        ),
        ('sig1=("@method" "@status");created=1;keyid="k"', "sig1=:AAAA:", "malformed_signature"),
        ('sig1=("@method" "@target-uri"),', "sig1=:AAAA:", "malformed_signature"),
        ('sig1=("@method");created=1;keyid="k"', "sig1=:AAAA:", "missing_header"),
        ('sig1=("@method" "@target-uri");keyid="k"', "sig1=:AAAA:", "missing_header"),
        (
            'sig1=("@method" "@target-uri" "x-missing");created=1;keyid="k"',
            "sig1=:AAAA:",
            "missing_header",
        ),
    ],
)
def test_rfc9421_rejections(signature_input: str, signature: str, code: str) -> None:
    headers = {
        "Host": "chapter.example",
        "Signature-Input": signature_input,
        "Signature": signature,
    }
    with pytest.raises(SignatureError) as err:
        parse_signature_headers("GET", "/inbox", headers, None)
    assert err.value.code == code


def test_rfc9421_body_needs_content_digest(ed_key: ed25519.Ed25519PrivateKey) -> None:
    headers = {"Host": "chapter.example"}
    headers.update(
        sign_request_rfc9421("GET", URL, headers, None, key_id="k", private_key=ed_key, now=NOW)
    )
    check(headers, ed_key.public_key(), "GET", None)
    assert code_of(lambda: check(headers, ed_key.public_key(), "POST", BODY)) == "missing_header"
    headers.update(
        sign_request_rfc9421("POST", URL, headers, BODY, key_id="k", private_key=ed_key, now=NOW)
    )
    wrong = headers | {"Content-Digest": "sha-512=:AAAA:"}
    assert code_of(lambda: check(wrong, ed_key.public_key())) == "bad_digest"


def test_rfc9421_interop_escapes_and_extra_parameters(ed_key: ed25519.Ed25519PrivateKey) -> None:
    now = datetime.now(UTC)
    kid = 'https://m.example/u#k"1\\x'  # a quote and a backslash, escaped in sf-strings
    resolver = hms.MappingKeyResolver(
        public_keys={kid: ed_key.public_key()}, private_keys={kid: ed_key}
    )
    message = _Message(
        method="GET", url="https://c.example/a/b?q=1&r=%20", headers={"Host": "c.example"}
    )
    hms.HTTPMessageSigner(signature_algorithm=hms.algorithms.ED25519, key_resolver=resolver).sign(
        message,
        key_id=kid,
        created=now,
        nonce="abc",
        tag="t",
        covered_component_ids=("@method", "@target-uri", "@scheme", "@request-target", "host"),
    )
    parsed = check(message.headers, ed_key.public_key(), "GET", None, now, "/a/b?q=1&r=%20")
    assert parsed.key_id == kid
    assert (
        code_of(
            lambda: check(message.headers, ed_key.public_key(), "GET", None, now, "/a/b?q=1&r=%21")
        )
        == "bad_signature"
    )


def test_repeated_header_lines_are_joined() -> None:
    headers: CIMultiDict[str] = CIMultiDict()
    headers.add("Date", "Thu, 26 Nov 2026 14:00:00 GMT")
    headers.add("X-Tag", "a")
    headers.add("x-tag", " b ")
    headers.add("Signature", 'keyId="k",headers="x-tag date",signature="AAAA"')
    parsed = parse_signature_headers("GET", "/", headers, None, require_coverage=False)
    assert parsed.signing_string == b"x-tag: a, b\ndate: Thu, 26 Nov 2026 14:00:00 GMT"
