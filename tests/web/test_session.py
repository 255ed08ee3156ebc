"""Session cookies and CSRF tokens: forged, tampered, expired and cross-session refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.web.session import (
    SECRET_SIZE,
    CsrfError,
    SessionCodec,
    SessionError,
    load_or_create_secret,
)

SECRET = bytes(range(32))
NOW = 1_800_000_000


def codec(secret: bytes = SECRET) -> SessionCodec:
    return SessionCodec(secret, ttl_s=3600, secure=False)


def test_round_trip_for_member_and_visitor() -> None:
    c = codec()
    s = c.read(c.issue("m-1", NOW), NOW + 10)
    assert s.member_id == "m-1" and s.expires == NOW + 3600
    assert c.read(c.issue(None, NOW), NOW).member_id is None


def test_expired_cookie_is_refused() -> None:
    c = codec()
    cookie = c.issue("m-1", NOW)
    with pytest.raises(SessionError, match="expired"):
        c.read(cookie, NOW + 3600)


def test_cookie_from_another_secret_is_refused() -> None:
    cookie = codec(b"x" * 32).issue("m-1", NOW)
    with pytest.raises(SessionError, match="signature"):
        codec().read(cookie, NOW)


def test_forged_member_is_refused() -> None:
    c = codec()
    good = c.issue("m-1", NOW).split(".")
    other = c.issue("m-admin", NOW).split(".")
    forged = ".".join([good[0], other[1], *good[2:]])
    with pytest.raises(SessionError, match="signature"):
        c.read(forged, NOW)


@pytest.mark.parametrize("cookie", ["", "v1.a.b", "v2.a.b.c.d", "x" * 600, "v1.." + "." * 3])
def test_malformed_cookies_are_refused(cookie: str) -> None:
    with pytest.raises(SessionError):
        codec().read(cookie, NOW)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_flipping_any_byte_breaks_the_cookie(pos: int, xor: int) -> None:
    c = codec()
    cookie = c.issue("m-1", NOW, nonce=b"n" * 16)
    i = pos % len(cookie)
    flipped = chr((ord(cookie[i]) ^ (xor or 1)) % 128)
    tampered = cookie[:i] + flipped + cookie[i + 1 :]
    if tampered == cookie:
        return
    with pytest.raises(SessionError):
        c.read(tampered, NOW)


def test_csrf_token_is_bound_to_its_session() -> None:
    c = codec()
    a = c.read(c.issue("m-1", NOW), NOW)
    b = c.read(c.issue("m-1", NOW), NOW)
    c.check_csrf(a, c.csrf_token(a), "vote")
    with pytest.raises(CsrfError, match="not this session's"):
        c.check_csrf(a, c.csrf_token(b), "vote")
    with pytest.raises(CsrfError, match="no CSRF token"):
        c.check_csrf(a, None, "vote")
    with pytest.raises(CsrfError) as caught:
        c.check_csrf(a, "", "vote")
    assert caught.value.status == 403


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        SessionCodec(b"short", ttl_s=60, secure=False)


def test_secret_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "keys")
    assert len(first) == SECRET_SIZE
    path = tmp_path / "keys" / "web-session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path / "keys") == first


def test_truncated_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "web-session.key").write_bytes(b"abc")
    with pytest.raises(ValueError, match="3 bytes"):
        load_or_create_secret(tmp_path)
