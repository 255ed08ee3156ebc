"""Charts of a tally: the numbers people read must be the tally's numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.web.chart import Bar, bar_chart, pairwise_table, tally_chart, turnout_chart
from protocol.tally import ConsentCounts, OptionCounts, PairwiseCounts, ScoreCounts

SVG = "{http://www.w3.org/2000/svg}"


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_consent_bars_carry_each_count_and_an_accessible_name() -> None:
    out = tally_chart("consent", (), ConsentCounts(agree=7, abstain=2, disagree=1, block=1))
    root = _svg(out)
    assert root.get("role") == "img"
    assert "agree: 7" in root.get("aria-label", "")
    assert "block: 1" in root.get("aria-label", "")
    texts = _texts(root)
    assert texts[0::2] == ["agree", "abstain", "disagree", "block"]
    assert texts[1::2] == ["7", "2", "1", "1"]


def test_bar_lengths_are_proportional_to_counts() -> None:
    out = tally_chart("choice", ("A", "B"), OptionCounts(votes={"A": 6, "B": 3}), ["A"])
    widths = [float(r.get("width", "0")) for r in _svg(out).iter(f"{SVG}rect")][1::2]
    assert widths[0] == pytest.approx(2 * widths[1])
    assert "6 votes winner" in _texts(_svg(out))


def test_winner_is_marked_by_word_not_only_colour() -> None:
    out = tally_chart(
        "approval", ("A", "B", "C"), OptionCounts(votes={"A": 1, "B": 4, "C": 0}), ["B"]
    )
    texts = _texts(_svg(out))
    assert "4 votes winner" in texts
    assert "1 vote" in texts and "0 votes" in texts
    tied = _texts(
        _svg(
            tally_chart(
                "choice", ("A", "B"), OptionCounts(votes={"A": 2, "B": 2}), ["A", "B"], tie=True
            )
        )
    )
    assert tied == ["A", "2 votes tied", "B", "2 votes tied"]


def test_score_chart_shows_means_on_a_fixed_scale() -> None:
    counts = ScoreCounts(sums={"A": 9, "B": 0}, scored={"A": 2, "B": 0})
    texts = _texts(_svg(tally_chart("score", ("A", "B"), counts, ["A"])))
    assert "4.5 of 5 (2 scored) winner" in texts
    assert "not scored" in texts


def test_ranked_shows_wins_and_the_pairwise_table() -> None:
    counts = PairwiseCounts(pairwise=((0, 3, 3), (1, 0, 2), (1, 2, 0)))
    out = str(tally_chart("ranked", ("A", "B", "C"), counts, ["A"]))
    assert "beats 2 of 2 winner" in out
    table = out[out.index("<div") :]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", table)
    assert cells[1:] == ["–", "3 ✓", "3 ✓", "1", "–", "2", "1", "2", "–"]


def test_labels_are_escaped() -> None:
    out = tally_chart("choice", ("<b>&", "B"), OptionCounts(votes={"<b>&": 1, "B": 0}))
    assert "<b>&" not in str(out)
    assert _texts(_svg(out))[0] == "<b>&"  # parses back to the original text
    table = pairwise_table(("<i>", "x"), PairwiseCounts(pairwise=((0, 1), (0, 0))))
    assert "<i>" not in str(table) and "&lt;i&gt;" in str(table)


def test_turnout_against_quorum() -> None:
    root = _svg(turnout_chart(3, 10, "1/2"))
    label = root.get("aria-label", "")
    assert "3 of 10 members voted (30%)" in label
    assert "quorum 50%" in label and "quorum not met" in label
    line = next(root.iter(f"{SVG}line"))
    assert float(line.get("x1", "0")) == pytest.approx(0.5 * 360)
    met = _svg(turnout_chart(5, 10, "1/2")).get("aria-label", "")
    assert "quorum met" in met and "not met" not in met


def test_turnout_without_quorum_or_members() -> None:
    assert "no quorum" in _svg(turnout_chart(0, 0, "0/1")).get("aria-label", "")


def test_bad_quorum_is_refused() -> None:
    from protocol.errors import BallotError

    with pytest.raises(BallotError):
        turnout_chart(1, 2, "3/2")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12))
def test_every_bar_fits_and_shows_its_number(values: list[int]) -> None:
    bars = [Bar(f"o{i}", v, str(v)) for i, v in enumerate(values)]
    root = _svg(bar_chart(bars, title="t"))
    rects = [float(r.get("width", "0")) for r in root.iter(f"{SVG}rect")][1::2]
    assert all(0 <= w <= 360 for w in rects)
    assert _texts(root)[1::2] == [str(v) for v in values]
    if max(values) > 0:
        assert max(rects) == pytest.approx(360)


def test_long_option_names_give_way_to_the_number() -> None:
    name = "A very long option name that would never fit beside its number on a phone"
    out = tally_chart(
        "score", (name, "B"), ScoreCounts(sums={name: 5, "B": 1}, scored={name: 1, "B": 1}), [name]
    )
    label, number = _texts(_svg(out))[:2]
    assert number == "5.0 of 5 (1 scored) winner"
    assert label.endswith("…") and len(label) + len(number) <= 44
    assert name in _svg(out).get("aria-label", "")
