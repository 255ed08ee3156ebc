"""When a chapter tally counts toward a regional decision (docs/protocol.md §8.4).

Theory of operation. A regional ``Question`` signs ``tallies_due``: its close time plus
the region's grace. A tally counts only if its own signed ``published`` is no later
than that. Both times are signed, so the region, every chapter and the auditor judge a
tally alike, whenever and in whatever order it arrived; arrival time plays no part.

This module is the one place that rule lives: node/regional.py applies it to the
tallies it receives and protocol/audit.py to the tallies in a bundle. Times are RFC
3339 (§1); protocol/ never reads the clock, it only compares signed times.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from protocol.errors import TallyError

__all__ = ["tallies_due", "tally_lateness"]


def _instant(text: object, *, field: str, actor: str | None, seq: int | None) -> datetime:
    if not isinstance(text, str):
        raise TallyError(f"{field} {text!r:.80} is not an RFC 3339 time", actor=actor, seq=seq)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise TallyError(
            f"{field} {text!r:.80} is not an RFC 3339 time", actor=actor, seq=seq
        ) from None
    if when.tzinfo is None:
        raise TallyError(f"{field} {text!r:.80} has no UTC offset", actor=actor, seq=seq)
    return when


def _where(entry: Mapping[str, Any]) -> tuple[str | None, int | None]:
    actor, seq = entry.get("actor"), entry.get("seq")
    return (actor if isinstance(actor, str) else None, seq if type(seq) is int else None)


def _z(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tallies_due(question: Mapping[str, Any], *, grace_s: int | None = None) -> str | None:
    """The deadline for tallies of ``question`` (RFC 3339, ``Z``), or None: no deadline.

    The signed ``tallies_due`` when the Question carries one. Without it, a node that
    knows its own grace passes ``grace_s`` and gets the close time (``closesAt``, else
    Mastodon's ``endTime``) plus that grace; an auditor, who knows no grace, passes
    none and judges no tally late. TallyError if a stated time is not RFC 3339.
    """
    actor, seq = _where(question)
    due = question.get("tallies_due")
    if due is not None:
        return _z(_instant(due, field="tallies_due", actor=actor, seq=seq))
    if grace_s is None:
        return None
    closes = question.get("closesAt") or question.get("endTime")
    if closes is None:
        return None
    when = _instant(closes, field="closesAt", actor=actor, seq=seq)
    return _z(when + timedelta(seconds=grace_s))


def tally_lateness(due: str | None, tally: Mapping[str, Any]) -> str | None:
    """Why ``tally`` does not count because it is late, or None when it is on time.

    On time means its signed ``published`` is at or before ``due`` (None: no deadline).
    A tally of the due second itself is on time: ``published`` has whole seconds.
    """
    if due is None:
        return None
    actor, seq = _where(tally)
    deadline = _instant(due, field="tallies_due", actor=actor, seq=seq)
    published = tally.get("published")
    if _instant(published, field="published", actor=actor, seq=seq) <= deadline:
        return None
    return f"published {published}, after tallies were due at {_z(deadline)}"
