"""A proposal's lifecycle as data: the transition table and the one function that moves it."""

from __future__ import annotations

from node.errors import Conflict

# (state, event) → next state. The only place a proposal's status changes.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("draft", "open"): "open",
    ("open", "close"): "closed",
    ("closed", "decide"): "decided",
}


def next_status(proposal_id: str, status: str, event: str) -> str:
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise Conflict(f"proposal {proposal_id} is {status}; it cannot {event}") from None
