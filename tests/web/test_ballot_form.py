"""HTML ballot forms to the JSON API's ballot shapes, and the time-left wording."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from node.errors import BadRequest
from node.web.ballot_form import ballot_from_form
from node.web.page import paragraphs, time_left

OPTIONS = ("Rent", "Transit", "Parks")


def test_each_method_maps_to_its_api_shape() -> None:
    assert ballot_from_form("consent", (), {"choice": "block"}) == {"choice": "block"}
    assert ballot_from_form("choice", OPTIONS, {"choice": "Parks"}) == {"choice": "Parks"}
    approval = MultiDict([("choices", "Rent"), ("choices", "Parks")])
    assert ballot_from_form("approval", OPTIONS, approval) == {"choices": ["Rent", "Parks"]}
    ranked = {"rank-0": "2", "rank-1": "", "rank-2": " 1 "}
    assert ballot_from_form("ranked", OPTIONS, ranked) == {"ranking": ["Parks", "Rent"]}
    score = {"score-0": "5", "score-1": "", "score-2": "0"}
    assert ballot_from_form("score", OPTIONS, score) == {"scores": {"Rent": 5, "Parks": 0}}


@pytest.mark.parametrize(
    ("method", "form", "says"),
    [
        ("choice", {}, "choose one option"),
        ("ranked", {"rank-0": "1", "rank-2": "1"}, "'Rent' and 'Parks' both have position 1"),
        ("ranked", {"rank-0": "x"}, "'x' is not a whole number"),
        ("ranked", {"rank-0": "4"}, "4 is not between 1 and 3"),
        ("ranked", {}, "number at least one option"),
        ("score", {"score-1": "6"}, "score of 'Transit': 6 is not between 0 and 5"),
        ("score", {}, "at least one option a score"),
        ("plurality", {}, "unknown voting method"),
    ],
)
def test_bad_forms_say_what_is_wrong(method: str, form: dict[str, str], says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        ballot_from_form(method, OPTIONS, form)


@settings(max_examples=50, deadline=None)
@given(st.permutations(OPTIONS))
def test_numbering_orders_the_ranking(order: list[str]) -> None:
    form = {f"rank-{OPTIONS.index(o)}": str(i + 1) for i, o in enumerate(order)}
    assert ballot_from_form("ranked", OPTIONS, form) == {"ranking": list(order)}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2 * 86400 + 3 * 3600 + 5, "2 days 3 hours left"),
        (86400, "1 day left"),
        (3600 + 60, "1 hour 1 minute left"),
        (30, "1 minute left"),
        (0, "closing now"),
        (-5, "closing now"),
    ],
)
def test_time_left(seconds: int, text: str) -> None:
    closes_ts = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    assert time_left("2027-01-15T08:00:00Z", closes_ts - seconds) == text
    assert time_left(None, closes_ts) == "no close time set"


def test_paragraphs_split_at_blank_lines_whatever_the_line_ends() -> None:
    assert paragraphs("One\r\n\r\nTwo\n  \nThree\nstill three\n\n\n") == [
        "One",
        "Two",
        "Three\nstill three",
    ]
    assert paragraphs("   ") == []
