"""Choosing a convening's date: the time poll (docs/protocol.md §10.3).

Theory of operation
-------------------
A time poll is an *approval* vote (§7) whose options are the candidate slots, each
written as an ISO 8601 time interval ``START/END`` in the §1 timestamp form. A member
marks every slot they can attend (an approval ballot), so a chapter's counts are
approval counts, its tally is an ordinary §8.3 tally, and a region sums chapters with
``aggregate`` (§8.4) — nothing here recounts a ballot or re-checks a tally.

Closing picks the slot by this rule, in order, each step only among the slots still
tied:
  1. most members available (pooled over the counted chapters);
  2. most counted chapters with at least one member available — a slot that leaves
     fewer chapters out is better for a regional convening;
  3. otherwise the slots are reported as a tie, in poll order, and the host chooses.
No slot with anyone available: failed. The date never breaks a tie: an earlier slot is
not a better one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from protocol.aggregate import aggregate
from protocol.ballots import ProposalSpec, validate_spec
from protocol.counting import add_counts, check_tally
from protocol.errors import BallotError
from protocol.events import ConveningError, event_body
from protocol.tally import OptionCounts, Tally, quorum_met

__all__ = [
    "Slot",
    "SlotChoice",
    "check_time_poll",
    "choose_slot",
    "close_time_poll",
    "event_from_choice",
    "parse_slot",
    "slot_option",
    "time_poll_spec",
]

_TS: Final = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"
_INTERVAL: Final = re.compile(rf"({_TS})/({_TS})")


class Slot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    start: str
    end: str

    @property
    def option(self) -> str:
        return f"{self.start}/{self.end}"


class SlotChoice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The closed poll. ``available``: members per slot (pooled); ``chapters``: counted
    chapters with someone available, per slot; ``tied`` lists slots when ``result`` is
    ``tie``."""

    result: Literal["chosen", "tie", "failed"]
    slot: Slot | None
    tied: tuple[str, ...]
    available: dict[str, int]
    chapters: dict[str, int]
    reason: str


def parse_slot(option: str) -> Slot:
    """A slot from its option text ``START/END``; END must be after START."""
    m = _INTERVAL.fullmatch(option) if isinstance(option, str) else None
    if m is None:
        raise ConveningError(f"slot {option!r:.80} is not START/END in RFC 3339 UTC")
    if m.group(2) <= m.group(1):
        raise ConveningError(f"slot {option!r:.80} ends before it starts")
    return Slot(start=m.group(1), end=m.group(2))


def slot_option(start: str, end: str) -> str:
    """The option text of a slot (checked)."""
    return parse_slot(f"{start}/{end}").option


def time_poll_spec(
    slots: Sequence[tuple[str, str]],
    *,
    chapters: Sequence[str] = (),
    quorum: str = "0/1",
    min_chapters: str = "0/1",
) -> ProposalSpec:
    """The spec of a time poll over ``slots``; regional when ``chapters`` are listed."""
    spec = ProposalSpec(
        method="approval",
        options=tuple(slot_option(s, e) for s, e in slots),
        quorum=quorum,
        scope="regional" if chapters else "local",
        chapters=tuple(chapters),
        min_chapters=min_chapters,
    )
    return check_time_poll(spec)


def check_time_poll(spec: ProposalSpec) -> ProposalSpec:
    """Raise ConveningError unless ``spec`` is a valid approval vote over slots."""
    if spec.method != "approval":
        raise ConveningError(f"a time poll is an approval vote, not {spec.method!r}")
    try:
        validate_spec(spec)
    except BallotError as exc:
        raise ConveningError(f"time poll: {exc.detail}") from None
    for option in spec.options:
        parse_slot(option)
    return spec


def choose_slot(spec: ProposalSpec, per_chapter: Sequence[OptionCounts]) -> SlotChoice:
    """The slot chosen from each counted chapter's approval counts (the module's rule)."""
    check_time_poll(spec)
    pooled = add_counts(spec, per_chapter)
    assert isinstance(pooled, OptionCounts)
    available = {o: pooled.votes[o] for o in spec.options}
    reach = {o: sum(1 for c in per_chapter if c.votes[o] > 0) for o in spec.options}
    best = max(available.values())
    if best == 0:
        return SlotChoice(
            result="failed",
            slot=None,
            tied=(),
            available=available,
            chapters=reach,
            reason="no member is available at any slot",
        )
    top = [o for o in spec.options if available[o] == best]
    widest = max(reach[o] for o in top)
    top2 = tuple(o for o in top if reach[o] == widest)
    if len(top2) == 1:
        why = f"{best} members available" + (
            f"; {widest} chapters reached, more than the other slots with {best}"
            if len(top) > 1
            else ""
        )
        return SlotChoice(
            result="chosen",
            slot=parse_slot(top2[0]),
            tied=(),
            available=available,
            chapters=reach,
            reason=why,
        )
    return SlotChoice(
        result="tie",
        slot=None,
        tied=top2,
        available=available,
        chapters=reach,
        reason=f"{len(top2)} slots each have {best} members from {widest} chapters",
    )


def close_time_poll(
    spec: ProposalSpec,
    tallies: Sequence[tuple[str, Tally]],
    *,
    proposal: str,
    proposal_digest: str,
) -> SlotChoice:
    """Close a poll from ``(tally entry digest, tally)`` pairs: one chapter's for a local
    poll, the listed chapters' for a regional one (checked and counted as in §8.4)."""
    check_time_poll(spec)
    if spec.scope == "local":
        if len(tallies) != 1:
            raise ConveningError(f"a local time poll closes on 1 tally, got {len(tallies)}")
        t = tallies[0][1]
        check_tally(spec, t, proposal=proposal, proposal_digest=proposal_digest)
        counted = [t] if quorum_met(spec, t.cast, t.eligible) else []
    else:
        decision = aggregate(spec, tallies, proposal=proposal, proposal_digest=proposal_digest)
        m = spec.min_chapters_fraction
        if decision.reporting * m.denominator < m.numerator * len(spec.chapters):
            return _failed(spec, decision.outcome.reason)  # too few chapters reported
        used = {r.tally for r in decision.chapters if r.status == "counted"}
        counted = [t for d, t in tallies if d in used]
    if not counted:
        return _failed(spec, "no chapter met quorum")
    per_chapter = [t.counts for t in counted if isinstance(t.counts, OptionCounts)]
    return choose_slot(spec, per_chapter)


def _failed(spec: ProposalSpec, reason: str) -> SlotChoice:
    zero = dict.fromkeys(spec.options, 0)
    return SlotChoice(
        result="failed", slot=None, tied=(), available=zero, chapters=dict(zero), reason=reason
    )


def event_from_choice(
    choice: SlotChoice,
    name: str,
    *,
    location: str | None = None,
    url: str | None = None,
    capacity: int | None = None,
    chapters: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``Event`` body at the chosen slot; a tie or a failure has no time yet."""
    if choice.slot is None:
        raise ConveningError(f"the time poll has no single slot ({choice.result}): {choice.reason}")
    return event_body(
        name,
        choice.slot.start,
        choice.slot.end,
        location=location,
        url=url,
        capacity=capacity,
        chapters=chapters,
    )
