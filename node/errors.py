"""Errors of the node, each mapped to the JSON API's `{"error", "detail"}` answer."""

from __future__ import annotations


class NodeError(Exception):
    code: str = "error"
    status: int = 400

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None) -> None:
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        super().__init__(f"{self.code}: {detail}")


class BadRequest(NodeError):
    code = "bad_request"
    status = 400


class Unauthorized(NodeError):
    code = "unauthorized"
    status = 401


class Forbidden(NodeError):
    code = "forbidden"
    status = 403


class NotFound(NodeError):
    code = "not_found"
    status = 404


class Conflict(NodeError):
    code = "conflict"
    status = 409


class TooLarge(NodeError):
    code = "too_large"
    status = 413
