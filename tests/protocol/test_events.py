"""Convenings as events, RSVPs and attendance sums (protocol.events, protocol.md §10.1–10.2)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.entries import make_entry
from protocol.events import (
    ConveningError,
    RsvpCounts,
    attendance_body,
    count_rsvps,
    event_body,
    parse_attendance,
    parse_event,
    source,
    sum_attendance,
)
from protocol.keys import SigningKey

REGION = "https://region.example/actor"
CHAPTERS = tuple(f"https://c{i}.example/actor" for i in range(3))
WHEN = "2026-11-26T15:00:00Z"


def sign(body: dict[str, Any], actor: str, seq: int = 3) -> dict[str, Any]:
    key = SigningKey.from_seed(actor.encode().ljust(32, b"\0")[:32])
    return make_entry(
        body,
        actor=actor,
        seq=seq,
        prev="00" * 32,
        key=key,
        key_id=f"{actor}#ed25519-0",
        published=WHEN,
    )


def convening(capacity: int | None = 50) -> dict[str, Any]:
    body = event_body(
        "Regional convening",
        "2026-12-05T14:00:00Z",
        "2026-12-05T18:00:00Z",
        location="Union hall, 4 Main St",
        url="https://meet.example/regional",
        capacity=capacity,
        chapters=CHAPTERS,
    )
    return sign(body, REGION, seq=7)


def count_entry(
    event: dict[str, Any], chapter: str, going: int, maybe: int = 0, seq: int = 5
) -> dict[str, Any]:
    body = attendance_body(
        event["id"], source(event).digest, RsvpCounts(going=going, maybe=maybe), members=40
    )
    return sign(body, chapter, seq)


# --- the event ---------------------------------------------------------------------


def test_event_body_round_trips_as_an_as2_event() -> None:
    entry = convening()
    ev = parse_event(entry)
    assert entry["type"] == "Event"
    assert entry["location"] == {"type": "Place", "name": "Union hall, 4 Main St"}
    assert (ev.startTime, ev.endTime, ev.maximumAttendeeCapacity) == (
        "2026-12-05T14:00:00Z",
        "2026-12-05T18:00:00Z",
        50,
    )
    assert ev.chapters == CHAPTERS


def test_an_online_only_event_needs_no_place() -> None:
    body = event_body(
        "Call", "2026-12-01T18:00:00Z", "2026-12-01T19:00:00Z", url="https://x.example/c"
    )
    assert parse_event(sign(body, REGION)).location is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"endTime": "2026-12-05T14:00:00Z"}, "endTime 2026-12-05T14:00:00Z is not after"),
        ({"startTime": "2026-12-05 14:00"}, "Expected `str` matching regex"),
        ({"maximumAttendeeCapacity": 0}, "Expected `int` >= 1"),
        ({"maximumAttendeeCapacity": 5.0}, "Expected `int | null`, got `float`"),
        ({"url": "javascript:alert(1)"}, "is not an http(s) link"),
        ({"location": None, "url": None}, "needs a location, an online link"),
        ({"name": ""}, "Expected `str` of length >= 1"),
        ({"type": "Note"}, "entry type is 'Note', not 'Event'"),
        ({"chapters": [CHAPTERS[0], CHAPTERS[0]]}, "chapters must be distinct"),
    ],
)
def test_bad_events_are_refused_with_actor_and_seq(change: dict[str, Any], why: str) -> None:
    entry = {**convening(), **change}
    with pytest.raises(ConveningError, match=why.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_event(entry)
    assert (err.value.actor, err.value.seq, err.value.code) == (REGION, 7, "bad_convening")


def test_the_builder_refuses_what_the_parser_would() -> None:
    with pytest.raises(ConveningError, match="not after"):
        event_body("X", "2026-12-05T14:00:00Z", "2026-12-05T13:00:00Z", url="https://x.example")
    with pytest.raises(ConveningError, match="needs a location"):
        event_body("X", "2026-12-05T14:00:00Z", "2026-12-05T15:00:00Z")


# --- RSVPs -------------------------------------------------------------------------


def test_last_answer_per_member_counts() -> None:
    answers = [
        ("ann", "going"),
        ("bo", "maybe"),
        ("ann", "not going"),
        ("cy", "going"),
        ("bo", "going"),
    ]
    assert count_rsvps(answers) == RsvpCounts(going=2, maybe=0, not_going=1)


def test_an_unknown_answer_is_refused() -> None:
    with pytest.raises(ConveningError, match="answer 1 \\('yes'\\) is not one of"):
        count_rsvps([("ann", "going"), ("bo", "yes")])


ANSWERS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["going", "maybe", "not going"])
    ),
    max_size=30,
)


@given(ANSWERS)
@settings(max_examples=100)
def test_rsvps_count_each_member_once_by_their_last_answer(answers: list[tuple[str, str]]) -> None:
    counts = count_rsvps(answers)
    last = {m: a for m, a in answers}
    assert counts.answered == len(last)
    assert counts.going == sum(1 for a in last.values() if a == "going")


# --- attendance --------------------------------------------------------------------


def test_the_region_sums_attendance_per_chapter_against_capacity() -> None:
    ev = convening(capacity=50)
    counts = [count_entry(ev, CHAPTERS[0], 30, 4), count_entry(ev, CHAPTERS[2], 25, 1)]
    total = sum_attendance(ev, counts + counts[:1])  # an identical copy counts once
    assert (total.going, total.maybe, total.members) == (55, 5, 80)
    assert (total.capacity, total.remaining, total.over_capacity) == (50, -5, True)
    assert [(c.chapter, c.going, c.entry is None) for c in total.chapters] == [
        (CHAPTERS[0], 30, False),
        (CHAPTERS[1], 0, True),
        (CHAPTERS[2], 25, False),
    ]


def test_no_capacity_means_never_over() -> None:
    ev = convening(capacity=None)
    total = sum_attendance(ev, [count_entry(ev, CHAPTERS[1], 40)])
    assert (total.remaining, total.over_capacity) == (None, False)


def test_attendance_entry_round_trips() -> None:
    ev = convening()
    att = parse_attendance(count_entry(ev, CHAPTERS[0], 3, 2))
    assert (att.event, att.going, att.maybe, att.not_going, att.members) == (ev["id"], 3, 2, 0, 40)


def test_bad_attendance_counts_are_rejected_naming_chapter_and_seq() -> None:
    ev = convening()
    good = count_entry(ev, CHAPTERS[0], 3)
    cases = [
        ({**good, "going": 41}, "exceeds the roster of 40"),
        ({**good, "going": -1}, "Expected `int` >= 0"),
        ({**good, "going": "3"}, "Expected `int`, got `str`"),
        ({**good, "event_digest": "ab" * 32}, "not this one"),
    ]
    for entry, why in cases:
        with pytest.raises(ConveningError, match=why) as err:
            sum_attendance(ev, [entry])
        assert (err.value.actor, err.value.seq) == (CHAPTERS[0], 5)
    with pytest.raises(ConveningError, match="two attendance counts from one chapter") as err:
        sum_attendance(ev, [good, count_entry(ev, CHAPTERS[0], 4, seq=6)])
    assert err.value.actor == CHAPTERS[0]
    stranger = "https://stranger.example/actor"
    with pytest.raises(ConveningError, match="not among the event's chapters") as err:
        sum_attendance(ev, [count_entry(ev, stranger, 1)])
    assert err.value.actor == stranger
    with pytest.raises(ConveningError, match="answers from a roster"):
        attendance_body(ev["id"], source(ev).digest, RsvpCounts(going=5), members=4)


@given(st.permutations(range(3)), st.lists(st.integers(0, 40), min_size=3, max_size=3))
@settings(max_examples=30, deadline=None)
def test_attendance_sum_is_independent_of_order(order: list[int], going: list[int]) -> None:
    ev = convening()
    entries = [count_entry(ev, CHAPTERS[i], going[i]) for i in range(3)]
    total = sum_attendance(ev, [entries[i] for i in order])
    assert total == sum_attendance(ev, entries)
    assert total.going == sum(going)
