"""Nested regions (protocol.nesting, protocol.md §10.6): the same aggregation at every level."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.aggregate import aggregate, decision_body
from protocol.ballots import (
    ApprovalBallot,
    Ballot,
    ChoiceBallot,
    ConsentBallot,
    ProposalSpec,
    RankedBallot,
    ScoreBallot,
    ballot_receipt,
)
from protocol.counting import add_counts, count, make_tally, outcome
from protocol.entries import make_entry
from protocol.errors import TallyError
from protocol.events import ConveningError
from protocol.keys import SigningKey
from protocol.nesting import level_spec, upward_input, upward_tally
from protocol.tally import Tally

PROPOSAL = "https://state.example/proposals/3"
DIGEST = "5e" * 32
STATE = "https://state.example/actor"
CITIES = ("https://city-a.example/actor", "https://city-b.example/actor")
CITY_CHAPTERS = {
    CITIES[0]: tuple(f"https://a{i}.example/actor" for i in range(3)),
    CITIES[1]: tuple(f"https://b{i}.example/actor" for i in range(2)),
}
OPTIONS = ("Park", "Library", "Garden")


def state_spec(method: str = "choice", **kw: Any) -> ProposalSpec:
    options = () if method == "consent" else OPTIONS
    return ProposalSpec(method=method, options=options, scope="regional", chapters=CITIES, **kw)  # type: ignore[arg-type]


def chapter_tally(
    spec: ProposalSpec, chapter: str, ballots: list[Ballot], eligible: int
) -> tuple[str, Tally]:
    salt = int.from_bytes(chapter.encode()[:8], "big") << 16
    receipts = [
        ballot_receipt(PROPOSAL, b, (salt + i).to_bytes(32, "big")) for i, b in enumerate(ballots)
    ]
    t = make_tally(
        spec,
        chapter=chapter,
        proposal=PROPOSAL,
        proposal_digest=DIGEST,
        ballots=ballots,
        receipts=receipts,
        eligible=eligible,
        roster_root="77" * 32,
        roster_size=eligible,
    )
    return chapter.encode().hex()[:64].ljust(64, "0"), t


def signed_decision(
    spec: ProposalSpec, city: str, tallies: list[tuple[str, Tally]]
) -> dict[str, Any]:
    lower = level_spec(spec, CITY_CHAPTERS[city])
    decision = aggregate(lower, tallies, proposal=PROPOSAL, proposal_digest=DIGEST)
    body = {"type": "Decision", **decision_body(decision)}
    key = SigningKey.from_seed(city.encode()[:32].ljust(32, b"\0"))
    entry = make_entry(
        body,
        actor=city,
        seq=9,
        prev="00" * 32,
        key=key,
        key_id=f"{city}#ed25519-0",
        published="2026-11-26T15:00:00Z",
    )
    plain: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(entry))
    return plain


def choices(*names: str) -> list[Ballot]:
    return [ChoiceBallot(choice=n) for n in names]


def test_a_state_aggregates_cities_as_a_city_aggregates_chapters() -> None:
    spec = state_spec("choice")
    a0, a1, a2 = CITY_CHAPTERS[CITIES[0]]
    b0, b1 = CITY_CHAPTERS[CITIES[1]]
    lower = {
        CITIES[0]: [
            chapter_tally(spec, a0, choices("Park", "Park", "Garden"), 5),
            chapter_tally(spec, a1, choices("Library"), 2),
            chapter_tally(spec, a2, choices("Park"), 4),
        ],
        CITIES[1]: [
            chapter_tally(spec, b0, choices("Garden", "Garden"), 3),
            chapter_tally(spec, b1, choices("Garden", "Library"), 2),
        ],
    }
    inputs = [upward_input(spec, signed_decision(spec, c, lower[c]), lower[c]) for c in CITIES]
    state = aggregate(spec, inputs, proposal=PROPOSAL, proposal_digest=DIGEST)
    assert state.counts == count(
        spec,
        choices(
            "Park", "Park", "Garden", "Library", "Park", "Garden", "Garden", "Garden", "Library"
        ),
        eligible=16,
    )
    assert (state.cast, state.eligible, state.outcome.result, state.outcome.winner) == (
        9,
        16,
        "winner",
        "Garden",
    )
    # by chapters at the state level, each city is one voter: A chose Park, B Garden
    assert [c.outcome.winner for c in state.chapters if c.outcome] == ["Park", "Garden"]
    # the same input straight from the tallies
    assert (
        upward_tally(
            spec,
            lower[CITIES[0]],
            region=CITIES[0],
            chapters=CITY_CHAPTERS[CITIES[0]],
            proposal=PROPOSAL,
            proposal_digest=DIGEST,
        )
        == inputs[0][1]
    )


def test_a_city_below_min_chapters_sends_nothing_up() -> None:
    spec = state_spec("choice", min_chapters="2/3")
    city = CITIES[0]
    tallies = [chapter_tally(spec, CITY_CHAPTERS[city][0], choices("Park"), 3)]
    up = upward_tally(
        spec,
        tallies,
        region=city,
        chapters=CITY_CHAPTERS[city],
        proposal=PROPOSAL,
        proposal_digest=DIGEST,
    )
    assert (up.cast, up.eligible, up.outcome.result) == (0, 0, "failed")
    state = aggregate(spec, [("ab" * 32, up)], proposal=PROPOSAL, proposal_digest=DIGEST)
    assert state.chapters[0].status == "below_quorum"


def test_a_tampered_lower_decision_is_refused_naming_the_city() -> None:
    spec = state_spec("choice")
    city = CITIES[1]
    tallies = [chapter_tally(spec, c, choices("Garden"), 2) for c in CITY_CHAPTERS[city]]
    entry = signed_decision(spec, city, tallies)
    entry["counts"]["votes"]["Garden"] = 7  # flip a count
    with pytest.raises(TallyError, match="decision field 'counts' differs") as err:
        upward_input(spec, entry, tallies)
    assert (err.value.actor, err.value.seq) == (city, 9)
    with pytest.raises(ConveningError, match="not 'Decision'") as err2:
        upward_input(spec, {**entry, "type": "Tally"})
    assert (err2.value.actor, err2.value.seq) == (city, 9)
    with pytest.raises(ConveningError, match="is a choice vote, this level's is approval"):
        upward_input(state_spec("approval"), signed_decision(spec, city, tallies))
    with pytest.raises(ConveningError, match="needs the lower region's chapters"):
        upward_tally(spec, tallies, region=city)


# --- pooled over two levels == pooled over the union --------------------------------

CONSENT: tuple[Literal["agree", "abstain", "disagree", "block"], ...] = (
    "agree",
    "abstain",
    "disagree",
    "block",
)
BALLOT: dict[str, st.SearchStrategy[Ballot]] = {
    "consent": st.sampled_from(CONSENT).map(lambda c: ConsentBallot(choice=c)),
    "choice": st.sampled_from(OPTIONS).map(lambda o: ChoiceBallot(choice=o)),
    "approval": st.sets(st.sampled_from(OPTIONS)).map(
        lambda s: ApprovalBallot(choices=tuple(sorted(s)))
    ),
    "score": st.dictionaries(st.sampled_from(OPTIONS), st.integers(0, 5)).map(
        lambda d: ScoreBallot(scores=d)
    ),
    "ranked": st.permutations(OPTIONS).map(lambda p: RankedBallot(ranking=tuple(p))),
}


@st.composite
def two_levels(draw: st.DrawFn) -> tuple[ProposalSpec, dict[str, list[list[Ballot]]]]:
    method = draw(st.sampled_from(sorted(BALLOT)))
    spec = state_spec(method, block_limit=1)
    per_city = {
        city: [draw(st.lists(BALLOT[method], max_size=5)) for _ in CITY_CHAPTERS[city]]
        for city in CITIES
    }
    return spec, per_city


@given(two_levels())
@settings(max_examples=60, deadline=None)
def test_pooled_over_two_levels_equals_pooled_over_all_chapters(
    case: tuple[ProposalSpec, dict[str, list[list[Ballot]]]],
) -> None:
    spec, per_city = case
    inputs = []
    for city in CITIES:
        tallies = [
            chapter_tally(spec, ch, ballots, eligible=6)
            for ch, ballots in zip(CITY_CHAPTERS[city], per_city[city], strict=True)
        ]
        inputs.append(upward_input(spec, signed_decision(spec, city, tallies), tallies))
    state = aggregate(spec, inputs, proposal=PROPOSAL, proposal_digest=DIGEST)
    everyone = [b for city in CITIES for chapter in per_city[city] for b in chapter]
    union = add_counts(
        spec, [count(spec, b, eligible=6) for city in CITIES for b in per_city[city]]
    )
    assert union == count(spec, everyone, eligible=len(everyone))
    assert (state.counts, state.cast, state.eligible) == (union, len(everyone), 30)
    assert state.pooled == outcome(spec, union, len(everyone), 30)
