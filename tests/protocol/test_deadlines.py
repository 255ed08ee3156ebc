"""When a chapter tally counts toward a regional decision (protocol.deadlines, §8.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.deadlines import tallies_due, tally_lateness
from protocol.errors import TallyError

REGION = "http://127.0.0.1:8000"
CHAPTER = "http://127.0.0.1:8001"


def question(**fields: object) -> dict[str, object]:
    return {"type": "Question", "actor": REGION, "seq": 3, **fields}


def tally(published: object) -> dict[str, object]:
    return {"type": "Tally", "actor": CHAPTER, "seq": 7, "published": published}


def test_the_signed_deadline_is_the_deadline() -> None:
    q = question(tallies_due="2026-11-26T14:10:00Z", closesAt="2026-11-26T14:00:00Z")
    assert tallies_due(q) == "2026-11-26T14:10:00Z"
    # a node's own grace never overrides what the region signed
    assert tallies_due(q, grace_s=3600) == "2026-11-26T14:10:00Z"


def test_without_a_signed_deadline_a_node_adds_its_grace_and_an_auditor_none() -> None:
    q = question(closesAt="2026-11-26T14:00:00+01:00")
    assert tallies_due(q, grace_s=600) == "2026-11-26T13:10:00Z"
    assert tallies_due(q) is None
    assert tallies_due(question(endTime="2026-11-26T14:00:00Z"), grace_s=60) == (
        "2026-11-26T14:01:00Z"
    )
    assert tallies_due(question(), grace_s=60) is None


def test_a_tally_of_the_due_second_is_on_time_and_one_second_later_is_late() -> None:
    due = "2026-11-26T14:10:00Z"
    assert tally_lateness(due, tally("2026-11-26T14:09:59Z")) is None
    assert tally_lateness(due, tally("2026-11-26T14:10:00Z")) is None
    why = tally_lateness(due, tally("2026-11-26T14:10:01Z"))
    assert why == "published 2026-11-26T14:10:01Z, after tallies were due at 2026-11-26T14:10:00Z"


def test_no_deadline_means_nothing_is_late() -> None:
    assert tally_lateness(None, tally("2999-01-01T00:00:00Z")) is None


@pytest.mark.parametrize(
    ("q", "t", "field", "where"),
    [
        (question(tallies_due="soon"), tally("2026-11-26T14:00:00Z"), "tallies_due", (REGION, 3)),
        (question(tallies_due=17), tally("2026-11-26T14:00:00Z"), "tallies_due", (REGION, 3)),
        (question(tallies_due="2026-11-26T14:10:00"), tally("x"), "no UTC offset", (REGION, 3)),
        (question(tallies_due="2026-11-26T14:10:00Z"), tally(None), "published", (CHAPTER, 7)),
        (question(tallies_due="2026-11-26T14:10:00Z"), tally("later"), "published", (CHAPTER, 7)),
    ],
)
def test_a_time_that_is_not_rfc3339_is_a_named_error(
    q: dict[str, object], t: dict[str, object], field: str, where: tuple[str, int]
) -> None:
    with pytest.raises(TallyError) as caught:
        tally_lateness(tallies_due(q), t)
    assert field in caught.value.detail
    assert (caught.value.actor, caught.value.seq) == where


@settings(max_examples=60, deadline=None)
@given(
    due=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    offset=st.integers(min_value=-10_000, max_value=10_000),
)
def test_late_exactly_when_published_after_the_due_second(due: datetime, offset: int) -> None:
    due = due.replace(microsecond=0, tzinfo=UTC)
    published = due + timedelta(seconds=offset)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    late = tally_lateness(due.strftime(fmt), tally(published.strftime(fmt)))
    assert (late is not None) == (offset > 0)
