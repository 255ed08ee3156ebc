"""Delivering our regional chain entries (docs/protocol.md §8.4, §9.6).

Theory of operation
-------------------
An entry to deliver is queued per target actor id in the transaction that appends it
(`regional_outbox`); this module resolves each target to its inbox and hands the entry
to federation's durable delivery queue, retrying an unreachable target with backoff.

Convene nodes take chain entries bare: the entry is the signed object, checked by its
proof. Servers of the wider fediverse (Mastodon and its kin, Mobilizon) act only on
activities: a bare `Question` or `Event` is dropped there. So for a target whose actor
document is not a convene node's (no `kind`), an AS2 object entry is wrapped in a
`Create` activity by the entry's author, addressed as those servers expect (public,
cc the author's followers); the `object` is the entry verbatim, proof included, so
whoever wants can still check it. Other entry types (tallies, decisions, grants...)
mean nothing outside convene and go out bare, as before.
"""

from __future__ import annotations

from typing import Any, Final

AS2: Final = "https://www.w3.org/ns/activitystreams"
PUBLIC: Final = f"{AS2}#Public"
# Entry types that are AS2 objects a fediverse server shows (as a poll, as an event).
WRAPPED_TYPES: Final = frozenset({"Question", "Event"})


def for_fediverse(entry: dict[str, Any], followers: str) -> dict[str, Any] | None:
    """The `Create` activity carrying `entry` to a fediverse server, or None when the
    entry is not an AS2 object such a server shows (it then goes out bare)."""
    if entry.get("type") not in WRAPPED_TYPES:
        return None
    return {
        "@context": AS2,
        "id": f"{entry['id']}#create",
        "type": "Create",
        "actor": entry["actor"],
        "published": entry["published"],
        "to": [PUBLIC],
        "cc": [followers],
        "object": entry,
    }
