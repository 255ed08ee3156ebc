"""Errors of the federation layer, each carrying the HTTP status it maps to."""

from __future__ import annotations


class FederationError(Exception):
    code: str = "federation_error"
    status: int = 400

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None) -> None:
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        super().__init__(f"{self.code}: {detail}")


class SignatureError(FederationError):
    """An HTTP signature is missing, malformed, stale or does not verify."""

    code = "bad_signature"
    status = 401


class BlockedAddressError(FederationError):
    """A fetch or delivery to a private or loopback address was refused (SSRF guard)."""

    code = "blocked_address"
    status = 400
