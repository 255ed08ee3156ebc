"""Web sessions as HMAC-signed cookies, and the CSRF token bound to each.

Theory of operation. The cookie carries everything needed to check it, so the node
keeps no session table: `v1.<member>.<expires>.<nonce>.<mac>` where member is the
member id (empty for a visitor who has not logged in yet), expires is epoch seconds,
nonce is 16 random bytes naming this session, and mac is HMAC-SHA256 over the rest
under the node's web secret (RFC 2104; compared in constant time). Changing any byte
breaks the MAC; an expired cookie is refused even with a good MAC.

The CSRF token is HMAC(secret, "csrf" ‖ nonce): a synchronizer token that needs no
storage because only the server can compute it from the session it was issued to. A
visitor gets an anonymous session before the login form, so logging in is CSRF-
protected too; logging in issues a fresh nonce (no session fixation). The cookie is
HttpOnly and SameSite=Lax, and Secure when the node's public URL is https.

A member who is removed loses access at once: every request re-reads the member
through the members service. Logging out clears the cookie in the browser; a copy
stolen before that stays valid until it expires, which is the price of no table and
why the lifetime is bounded by `session_ttl_s`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from node.errors import Forbidden, Unauthorized

COOKIE = "convene_web"  # not "convene_session": the JSON API login uses that name
SECRET_FILE = "web-session.key"
SECRET_SIZE = 32
NONCE_SIZE = 16
MAX_COOKIE = 512
_VERSION = "v1"
_SESSION_LABEL = b"session\n"
_CSRF_LABEL = b"csrf\n"


class SessionError(Unauthorized):
    code = "bad_session"


class CsrfError(Forbidden):
    code = "bad_csrf"


@dataclass(frozen=True)
class WebSession:
    member_id: str | None  # None: a visitor who has not logged in
    expires: int
    nonce: str  # base64url, names this session


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Issues and checks session cookies and CSRF tokens under one secret."""

    def __init__(self, secret: bytes, *, ttl_s: int, secure: bool) -> None:
        if len(secret) < SECRET_SIZE:
            raise ValueError(f"the web session secret must be at least {SECRET_SIZE} bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self.secure = secure

    def _mac(self, label: bytes, payload: str) -> str:
        return _b64(hmac.new(self._secret, label + payload.encode(), hashlib.sha256).digest())

    def issue(self, member_id: str | None, now: float, nonce: bytes | None = None) -> str:
        """A new cookie value for `member_id` (None: anonymous) valid for ttl_s."""
        nonce = secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
        member = _b64((member_id or "").encode())
        payload = f"{_VERSION}.{member}.{int(now) + self.ttl_s}.{_b64(nonce)}"
        return f"{payload}.{self._mac(_SESSION_LABEL, payload)}"

    def read(self, cookie: str, now: float) -> WebSession:
        """Check a cookie value; SessionError says which part is wrong."""
        if len(cookie) > MAX_COOKIE:
            raise SessionError(f"session cookie is {len(cookie)} bytes, above {MAX_COOKIE}")
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            raise SessionError("session cookie is malformed (expected v1 and 5 parts)")
        payload, mac = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(self._mac(_SESSION_LABEL, payload), mac):
            raise SessionError("session cookie signature does not match; log in again")
        _, member, expires_text, nonce = parts[:4]
        try:
            expires = int(expires_text)
            member_id = _unb64(member).decode()
        except (ValueError, UnicodeDecodeError):
            raise SessionError("session cookie fields are unreadable") from None
        if expires <= now:
            raise SessionError("session expired; log in again")
        return WebSession(member_id=member_id or None, expires=expires, nonce=nonce)

    def csrf_token(self, session: WebSession) -> str:
        return self._mac(_CSRF_LABEL, session.nonce)

    def check_csrf(self, session: WebSession, token: object, where: str) -> None:
        """Refuse a form POST whose token is missing or not this session's."""
        if not isinstance(token, str) or not token:
            raise CsrfError(f"{where}: the form has no CSRF token; reload the page and retry")
        if not hmac.compare_digest(self.csrf_token(session), token):
            raise CsrfError(f"{where}: the form's CSRF token is not this session's; reload")


def load_or_create_secret(key_dir: Path) -> bytes:
    """The node's web secret, made once from the OS random source, file mode 0600."""
    path = key_dir / SECRET_FILE
    try:
        secret = path.read_bytes()
    except FileNotFoundError:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = secrets.token_bytes(SECRET_SIZE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
    if len(secret) < SECRET_SIZE:
        raise ValueError(f"{path} holds {len(secret)} bytes; a web secret needs {SECRET_SIZE}")
    return secret
