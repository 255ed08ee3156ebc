"""The node's clock and RFC 3339 times (UTC, `Z`, whole seconds, as protocol.md §1 fixes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from node.errors import BadRequest

Clock = Callable[[], float]


def system_clock() -> float:
    return time.time()


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str, *, field: str) -> int:
    """Epoch seconds of an RFC 3339 time with an explicit offset; 400 otherwise."""
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{field}: {text!r} is not an RFC 3339 time") from exc
    if when.tzinfo is None:
        raise BadRequest(f"{field}: {text!r} has no UTC offset (add Z)")
    return int(when.timestamp())
