"""The bottom-up agenda (protocol.agenda, protocol.md §10.4)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.agenda import (
    TRANSITIONS,
    compute_agenda,
    config_body,
    items_voted,
    parse_sponsorship,
    parse_submission,
    sponsorship_body,
    submission_body,
)
from protocol.entries import make_entry
from protocol.events import ConveningError, source
from protocol.keys import SigningKey

REGION = "https://region.example/actor"
CHAPTERS = tuple(f"https://c{i}.example/actor" for i in range(5))
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


def config(min_sponsors: int = 1, min_share: str = "0/1") -> dict[str, Any]:
    body = config_body(
        "https://region.example/entries/7",
        CHAPTERS,
        min_sponsors=min_sponsors,
        min_share=min_share,
    )
    return sign(body, REGION, seq=8)


def submit(cfg: dict[str, Any], chapter: str, title: str, seq: int = 4) -> dict[str, Any]:
    return sign(submission_body(REGION, source(cfg).digest, title, "why it matters"), chapter, seq)


def sponsor(
    cfg: dict[str, Any], chapter: str, item: dict[str, Any], seq: int = 6
) -> dict[str, Any]:
    return sign(sponsorship_body(REGION, source(cfg).digest, source(item).digest), chapter, seq)


def question(item: dict[str, Any], seq: int = 12) -> dict[str, Any]:
    body = {"type": "Question", "name": "Vote", "agenda_item": source(item).digest}
    return sign(body, REGION, seq)


# --- known answers -----------------------------------------------------------------


def test_threshold_just_met_and_just_missed() -> None:
    cfg = config(min_share="3/5")  # 3 of the 5 listed chapters
    a = submit(cfg, CHAPTERS[0], "Rent control")
    b = submit(cfg, CHAPTERS[1], "Free transit")
    sponsorships = [
        sponsor(cfg, CHAPTERS[1], a),
        sponsor(cfg, CHAPTERS[2], a),  # a: 3 chapters with its submitter
        sponsor(cfg, CHAPTERS[3], b),  # b: 2 chapters
    ]
    agenda = compute_agenda(cfg, [a, b], sponsorships, [source(a).digest], closed=False)
    assert agenda.needed == 3
    by_title = {i.title: i for i in agenda.items}
    assert by_title["Rent control"].status == "voted"
    assert by_title["Rent control"].sponsors == CHAPTERS[:3]
    assert by_title["Free transit"].status == "submitted"
    assert [i.title for i in agenda.items] == ["Rent control", "Free transit"]


def test_a_qualified_item_not_put_to_a_vote_is_flagged_dropped() -> None:
    cfg = config(min_sponsors=2)
    a = submit(cfg, CHAPTERS[0], "Rent control")
    b = submit(cfg, CHAPTERS[1], "Free transit")
    c = submit(cfg, CHAPTERS[2], "Library hours")
    sp = [sponsor(cfg, CHAPTERS[3], a), sponsor(cfg, CHAPTERS[4], b)]
    voted = items_voted(REGION, [question(a)])
    open_ = compute_agenda(cfg, [a, b, c], sp, voted, closed=False)
    assert {i.title: i.status for i in open_.items} == {
        "Rent control": "voted",
        "Free transit": "qualified",
        "Library hours": "submitted",
    }
    closed = compute_agenda(cfg, [a, b, c], sp, voted)
    assert [(i.title, i.chapter) for i in closed.dropped] == [("Free transit", CHAPTERS[1])]
    assert {i.title: i.status for i in closed.items}["Library hours"] == "submitted"


def test_sponsoring_twice_or_by_the_submitter_counts_once() -> None:
    cfg = config(min_sponsors=2)
    a = submit(cfg, CHAPTERS[0], "Rent control")
    sp = [
        sponsor(cfg, CHAPTERS[0], a),
        sponsor(cfg, CHAPTERS[1], a, 6),
        sponsor(cfg, CHAPTERS[1], a, 9),
    ]
    agenda = compute_agenda(cfg, [a, a], sp, [])
    assert len(agenda.items) == 1
    assert agenda.items[0].sponsors == CHAPTERS[:2]


def test_the_lifecycle_is_a_table() -> None:
    assert TRANSITIONS[("qualified", "agenda_closed")] == "dropped"
    assert ("voted", "agenda_closed") not in TRANSITIONS


def test_items_voted_reads_only_the_regions_questions() -> None:
    cfg = config()
    a = submit(cfg, CHAPTERS[0], "Rent control")
    foreign = sign({"type": "Question", "agenda_item": source(a).digest}, CHAPTERS[1], 9)
    assert items_voted(REGION, [foreign, sign({"type": "Question"}, REGION, 2)]) == frozenset()
    with pytest.raises(ConveningError, match="agenda_item must be a string") as err:
        items_voted(REGION, [{**question(a), "agenda_item": 5}])
    assert (err.value.actor, err.value.seq) == (REGION, 12)


# --- bad input ---------------------------------------------------------------------


def test_bad_entries_are_rejected_naming_actor_and_seq() -> None:
    cfg = config()
    other_cfg = sign(config_body("x", CHAPTERS[:2]), REGION, seq=9)
    a = submit(cfg, CHAPTERS[0], "Rent control")
    stranger = "https://stranger.example/actor"
    cases: list[tuple[list[dict[str, Any]], list[dict[str, Any]], str, str, int]] = [
        ([{**a, "title": ""}], [], "AgendaSubmission is malformed", CHAPTERS[0], 4),
        ([{**a, "title": 7}], [], "Expected `str`, got `int`", CHAPTERS[0], 4),
        ([{**a, "summary": "x" * 20_001}], [], "length <= 20000", CHAPTERS[0], 4),
        ([submit(other_cfg, CHAPTERS[0], "X")], [], "not this agenda", CHAPTERS[0], 4),
        ([submit(cfg, stranger, "X")], [], "does not take part", stranger, 4),
        (
            [a],
            [sponsor(cfg, CHAPTERS[1], submit(cfg, CHAPTERS[2], "Y"))],
            "which no submission",
            CHAPTERS[1],
            6,
        ),
        (
            [a],
            [{**sponsor(cfg, CHAPTERS[1], a), "type": "Like"}],
            "not 'AgendaSponsorship'",
            CHAPTERS[1],
            6,
        ),
    ]
    for subs, sps, why, actor, seq in cases:
        with pytest.raises(ConveningError, match=why) as err:
            compute_agenda(cfg, subs, sps, [])
        assert (err.value.actor, err.value.seq) == (actor, seq), why


def test_the_inbox_checks_agree_with_the_computation() -> None:
    cfg = config()
    a = submit(cfg, CHAPTERS[0], "Rent control")
    assert parse_submission(cfg, a).title == "Rent control"
    assert parse_sponsorship(cfg, sponsor(cfg, CHAPTERS[1], a)).item == source(a).digest
    with pytest.raises(ConveningError, match="does not take part"):
        parse_sponsorship(cfg, sponsor(cfg, "https://x.example/actor", a))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConveningError, match="above 1"):
        config_body("c", CHAPTERS, min_share="6/5")
    with pytest.raises(ConveningError, match="none twice"):
        config_body("c", [CHAPTERS[0], CHAPTERS[0]])
    with pytest.raises(ConveningError, match="Expected `int` >= 1"):
        config_body("c", CHAPTERS, min_sponsors=0)
    with pytest.raises(ConveningError, match="min_share must be 'a/b'") as err:
        compute_agenda({**config(), "min_share": "half"}, [], [], [])
    assert (err.value.actor, err.value.seq) == (REGION, 8)


# --- properties --------------------------------------------------------------------

CFG = config(min_share="2/5")
ITEMS = [submit(CFG, CHAPTERS[i], f"Item {i}") for i in range(3)]
SPONSORSHIPS = [sponsor(CFG, CHAPTERS[c], ITEMS[i]) for i in range(3) for c in range(5)]


@given(
    st.lists(st.sampled_from(range(len(SPONSORSHIPS))), max_size=12),
    st.randoms(use_true_random=False),
    st.sets(st.sampled_from(range(3))),
)
@settings(max_examples=60, deadline=None)
def test_agenda_is_independent_of_message_order(
    picks: list[int], rnd: Any, voted: set[int]
) -> None:
    sps = [SPONSORSHIPS[i] for i in picks]
    votes = [source(ITEMS[i]).digest for i in voted]
    agenda = compute_agenda(CFG, ITEMS, sps, votes)
    shuffled_items, shuffled_sps = list(ITEMS), sps + sps[:2]
    rnd.shuffle(shuffled_items)
    rnd.shuffle(shuffled_sps)
    assert compute_agenda(CFG, shuffled_items, shuffled_sps, list(reversed(votes))) == agenda
    for item in agenda.items:
        qualified = len(item.sponsors) >= 2
        voted_here = item.item in votes
        expected = "voted" if voted_here else ("dropped" if qualified else "submitted")
        assert item.status == expected
