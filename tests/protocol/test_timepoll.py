"""Time polls (protocol.timepoll, protocol.md §10.3)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ballots import ApprovalBallot, Ballot, ProposalSpec, ballot_receipt
from protocol.counting import count, make_tally
from protocol.errors import TallyError
from protocol.events import ConveningError, parse_event
from protocol.tally import OptionCounts, Tally
from protocol.timepoll import (
    Slot,
    choose_slot,
    close_time_poll,
    event_from_choice,
    parse_slot,
    slot_option,
    time_poll_spec,
)

POLL = "https://region.example/proposals/9"
POLL_DIGEST = "9a" * 32
CHAPTERS = tuple(f"https://c{i}.example/actor" for i in range(3))
SLOTS = [
    ("2026-12-05T14:00:00Z", "2026-12-05T18:00:00Z"),
    ("2026-12-06T10:00:00Z", "2026-12-06T14:00:00Z"),
    ("2026-12-12T14:00:00Z", "2026-12-12T18:00:00Z"),
]
SAT, SUN, NEXT = (slot_option(s, e) for s, e in SLOTS)


def marks(*rows: Sequence[str]) -> list[Ballot]:
    return [ApprovalBallot(choices=tuple(r)) for r in rows]


def tally(
    spec: ProposalSpec, chapter: str, ballots: list[Ballot], eligible: int = 10
) -> tuple[str, Tally]:
    receipts = [
        ballot_receipt(POLL, b, (i + 100 * CHAPTERS.index(chapter)).to_bytes(32, "big"))
        for i, b in enumerate(ballots)
    ]
    t = make_tally(
        spec,
        chapter=chapter,
        proposal=POLL,
        proposal_digest=POLL_DIGEST,
        ballots=ballots,
        receipts=receipts,
        eligible=eligible,
        roster_root="77" * 32,
        roster_size=eligible,
    )
    return (chapter.encode().hex().ljust(64, "0")[:64], t)


def test_slots_are_iso_8601_intervals() -> None:
    assert SAT == "2026-12-05T14:00:00Z/2026-12-05T18:00:00Z"
    assert parse_slot(SAT) == Slot(start=SLOTS[0][0], end=SLOTS[0][1])
    for bad, why in [
        ("2026-12-05T14:00:00Z", "is not START/END"),
        ("2026-12-05T18:00:00Z/2026-12-05T14:00:00Z", "ends before it starts"),
        ("2026-12-05 14:00/2026-12-05 18:00", "is not START/END"),
    ]:
        with pytest.raises(ConveningError, match=why):
            parse_slot(bad)


def test_the_spec_is_an_approval_vote_over_slots() -> None:
    spec = time_poll_spec(SLOTS, chapters=CHAPTERS)
    assert (spec.method, spec.options, spec.scope) == ("approval", (SAT, SUN, NEXT), "regional")
    with pytest.raises(ConveningError, match="listed twice"):
        time_poll_spec([SLOTS[0], SLOTS[0]])
    with pytest.raises(ConveningError, match="not START/END"):
        close_time_poll(
            ProposalSpec(method="approval", options=("Mon", "Tue")),
            [],
            proposal=POLL,
            proposal_digest=POLL_DIGEST,
        )


def test_a_local_poll_picks_the_slot_most_can_attend_and_becomes_the_event() -> None:
    spec = time_poll_spec(SLOTS)
    ballots = marks([SAT, SUN], [SUN], [SUN, NEXT], [])
    choice = close_time_poll(
        spec, [tally(spec, CHAPTERS[0], ballots)], proposal=POLL, proposal_digest=POLL_DIGEST
    )
    assert (choice.result, choice.slot, choice.available) == (
        "chosen",
        parse_slot(SUN),
        {SAT: 1, SUN: 3, NEXT: 1},
    )
    ev = event_from_choice(choice, "Convening", url="https://meet.example/c")
    assert (ev["startTime"], ev["endTime"]) == SLOTS[1]
    assert parse_event({**ev, "actor": CHAPTERS[0], "seq": 1}).name == "Convening"


def test_a_tie_is_broken_by_the_number_of_chapters_reached() -> None:
    spec = time_poll_spec(SLOTS, chapters=CHAPTERS)
    # Saturday: 4 members, all from chapter 0; Sunday: 4 members from chapters 1 and 2.
    tallies = [
        tally(spec, CHAPTERS[0], marks([SAT], [SAT], [SAT], [SAT])),
        tally(spec, CHAPTERS[1], marks([SUN], [SUN])),
        tally(spec, CHAPTERS[2], marks([SUN, NEXT], [SUN])),
    ]
    choice = close_time_poll(spec, tallies, proposal=POLL, proposal_digest=POLL_DIGEST)
    assert (choice.result, choice.slot) == ("chosen", parse_slot(SUN))
    assert choice.available == {SAT: 4, SUN: 4, NEXT: 1}
    assert choice.chapters == {SAT: 1, SUN: 2, NEXT: 1}


def test_a_tie_no_rule_breaks_is_reported() -> None:
    spec = time_poll_spec(SLOTS, chapters=CHAPTERS)
    tallies = [
        tally(spec, CHAPTERS[0], marks([SAT, NEXT], [SUN])),
        tally(spec, CHAPTERS[1], marks([SAT, NEXT, SUN])),
    ]
    choice = close_time_poll(spec, tallies, proposal=POLL, proposal_digest=POLL_DIGEST)
    assert (choice.result, choice.slot, choice.tied) == ("tie", None, (SAT, SUN, NEXT))
    with pytest.raises(ConveningError, match="no single slot \\(tie\\)"):
        event_from_choice(choice, "Convening", url="https://meet.example/c")


def test_nobody_available_fails_and_so_does_too_few_chapters() -> None:
    spec = time_poll_spec(SLOTS)
    choice = close_time_poll(
        spec, [tally(spec, CHAPTERS[0], marks([], []))], proposal=POLL, proposal_digest=POLL_DIGEST
    )
    assert choice.result == "failed"
    spec = time_poll_spec(SLOTS, chapters=CHAPTERS, min_chapters="2/3")
    choice = close_time_poll(
        spec, [tally(spec, CHAPTERS[0], marks([SAT]))], proposal=POLL, proposal_digest=POLL_DIGEST
    )
    assert (choice.result, choice.reason) == (
        "failed",
        "only 1 of 3 listed chapters reported; 2/3 must",
    )


def test_a_tally_that_does_not_add_up_is_rejected_naming_the_chapter() -> None:
    spec = time_poll_spec(SLOTS, chapters=CHAPTERS)
    d, t = tally(spec, CHAPTERS[1], marks([SAT], [SUN]))
    forged = Tally(
        **{
            **{f: getattr(t, f) for f in t.__struct_fields__},
            "counts": OptionCounts(votes={SAT: 5, SUN: 1, NEXT: 0}),
        }
    )
    with pytest.raises(TallyError, match="approvals, more than cast") as err:
        close_time_poll(spec, [(d, forged)], proposal=POLL, proposal_digest=POLL_DIGEST)
    assert err.value.actor == CHAPTERS[1]


MARKS = st.lists(
    st.lists(st.sets(st.sampled_from([SAT, SUN, NEXT])), max_size=6), min_size=3, max_size=3
)


@given(MARKS, st.permutations(range(3)))
@settings(max_examples=60, deadline=None)
def test_slot_counts_sum_across_chapters_and_order_does_not_matter(
    rows: list[list[set[str]]], order: list[int]
) -> None:
    spec = time_poll_spec(SLOTS, chapters=CHAPTERS)
    ballots = [marks(*(sorted(s) for s in chapter_rows)) for chapter_rows in rows]
    tallies = [tally(spec, CHAPTERS[i], ballots[i]) for i in range(3)]
    choice = close_time_poll(spec, tallies, proposal=POLL, proposal_digest=POLL_DIGEST)
    shuffled = close_time_poll(
        spec, [tallies[i] for i in order], proposal=POLL, proposal_digest=POLL_DIGEST
    )
    assert choice == shuffled
    union = count(spec, [b for chapter in ballots for b in chapter], eligible=30)
    assert isinstance(union, OptionCounts)
    if choice.result != "failed":
        assert choice.available == union.votes
    assert choice == choose_slot(
        spec, [t.counts for _, t in tallies if isinstance(t.counts, OptionCounts)]
    )
