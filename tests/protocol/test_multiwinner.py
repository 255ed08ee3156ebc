"""Lists of demands: choose N by approval or score (protocol.multiwinner, protocol.md §10.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ballots import ApprovalBallot, Ballot, ProposalSpec, ScoreBallot, ballot_receipt
from protocol.counting import add_counts, count, make_tally
from protocol.errors import TallyError
from protocol.events import ConveningError
from protocol.multiwinner import check_seats, parse_seats, rank_demands, regional_demands
from protocol.tally import OptionCounts, ScoreCounts, Tally

PROPOSAL = "https://region.example/proposals/11"
DIGEST = "11" * 32
DEMANDS = ("Rent cap", "Free transit", "Clinic", "Library hours", "Park")
CHAPTERS = tuple(f"https://c{i}.example/actor" for i in range(3))


def spec(method: str = "approval", **kw: object) -> ProposalSpec:
    return ProposalSpec(method=method, options=DEMANDS, scope="regional", chapters=CHAPTERS, **kw)  # type: ignore[arg-type]


def approvals(*rows: tuple[str, ...]) -> list[Ballot]:
    return [ApprovalBallot(choices=r) for r in rows]


def tally(
    s: ProposalSpec, chapter: int, ballots: list[Ballot], eligible: int = 20
) -> tuple[str, Tally]:
    receipts = [
        ballot_receipt(PROPOSAL, b, (1000 * chapter + i).to_bytes(32, "big"))
        for i, b in enumerate(ballots)
    ]
    t = make_tally(
        s,
        chapter=CHAPTERS[chapter],
        proposal=PROPOSAL,
        proposal_digest=DIGEST,
        ballots=ballots,
        receipts=receipts,
        eligible=eligible,
        roster_root="77" * 32,
        roster_size=eligible,
    )
    return f"{chapter:064x}", t


def votes(**n: int) -> OptionCounts:
    return OptionCounts(votes={d: n.get(d.split()[0], 0) for d in DEMANDS})


def test_approval_list_in_order_of_support() -> None:
    result = rank_demands(spec(), 2, votes(Rent=9, Free=7, Clinic=4, Park=1), cast=12, eligible=20)
    assert (result.result, result.adopted, result.tied) == (
        "complete",
        ("Rent cap", "Free transit"),
        (),
    )
    assert [(d.option, d.place, d.support, d.adopted) for d in result.items] == [
        ("Rent cap", 1, 9, True),
        ("Free transit", 2, 7, True),
        ("Clinic", 3, 4, False),
        ("Park", 4, 1, False),
    ]  # Library hours has no support and is not listed


def test_a_tie_at_the_nth_place_is_reported_not_broken() -> None:
    result = rank_demands(
        spec(), 3, votes(Rent=9, Free=7, Clinic=7, Library=7), cast=12, eligible=20
    )
    assert (result.result, result.adopted, result.tied) == (
        "tie",
        ("Rent cap",),
        ("Free transit", "Clinic", "Library hours"),
    )
    assert [d.place for d in result.items] == [1, 2, 2, 2]
    assert result.reason == "3 options tie for the last 2 of 3 seats"


def test_a_tie_that_fits_inside_the_seats_is_no_tie() -> None:
    result = rank_demands(spec(), 3, votes(Rent=9, Free=7, Clinic=7, Park=2), cast=12, eligible=20)
    assert (result.result, result.adopted) == ("complete", ("Rent cap", "Free transit", "Clinic"))


def test_fewer_supported_options_than_seats_is_short() -> None:
    result = rank_demands(spec(), 3, votes(Rent=1), cast=2, eligible=20)
    assert (result.result, result.adopted) == ("short", ("Rent cap",))


def test_score_list_by_mean_then_number_of_scores() -> None:
    counts = ScoreCounts(
        sums={"Rent cap": 18, "Free transit": 8, "Clinic": 12, "Library hours": 0, "Park": 4},
        scored={"Rent cap": 4, "Free transit": 2, "Clinic": 3, "Library hours": 0, "Park": 1},
    )  # means 9/2, 4, 4, -, 4
    result = rank_demands(spec("score"), 2, counts, cast=4, eligible=5)
    assert result.adopted == ("Rent cap", "Clinic")  # 4 from 3 scores beats 4 from 2 or 1
    assert [(d.option, d.mean, d.scored, d.place) for d in result.items] == [
        ("Rent cap", "9/2", 4, 1),
        ("Clinic", "4/1", 3, 2),
        ("Free transit", "4/1", 2, 3),
        ("Park", "4/1", 1, 4),
    ]


def test_quorum_and_empty_votes_fail() -> None:
    assert (
        rank_demands(spec(quorum="1/2"), 2, votes(Rent=3), cast=3, eligible=20).result == "failed"
    )
    assert (
        rank_demands(spec(), 2, votes(), cast=3, eligible=20).reason == "no option has any support"
    )


def test_seats_are_checked() -> None:
    assert parse_seats(spec(), {"seats": 3, "actor": "r", "seq": 2}) == 3
    for bad in (0, 6, True, 2.0, "2", None):
        with pytest.raises(ConveningError, match="seats must be a whole number from 1 to 5") as err:
            parse_seats(spec(), {"seats": bad, "actor": "r", "seq": 2})
        assert (err.value.actor, err.value.seq) == ("r", 2)
    with pytest.raises(ConveningError, match="by approval or score, not ranked"):
        check_seats(spec("ranked"), 1)


def test_a_region_decides_the_list_from_pooled_chapter_tallies() -> None:
    s = spec()
    tallies = [
        tally(s, 0, approvals(("Rent cap", "Clinic"), ("Rent cap",), ("Park",))),
        tally(s, 1, approvals(("Free transit", "Clinic"), ("Clinic",))),
        tally(s, 2, approvals(("Rent cap", "Free transit"))),
    ]
    result = regional_demands(s, 2, tallies, proposal=PROPOSAL, proposal_digest=DIGEST)
    assert (result.result, result.adopted) == ("complete", ("Rent cap", "Clinic"))
    assert [d.support for d in result.items] == [3, 3, 2, 1]
    with pytest.raises(ConveningError, match="decided pooled"):
        regional_demands(
            spec(rule="chapters"), 2, tallies, proposal=PROPOSAL, proposal_digest=DIGEST
        )


def test_a_forged_chapter_tally_is_rejected_naming_it() -> None:
    s = spec()
    d, t = tally(s, 1, approvals(("Clinic",)))
    forged = Tally(
        **{**{f: getattr(t, f) for f in t.__struct_fields__}, "counts": votes(Clinic=40)}
    )
    with pytest.raises(TallyError, match="more than cast") as err:
        regional_demands(s, 2, [(d, forged)], proposal=PROPOSAL, proposal_digest=DIGEST)
    assert err.value.actor == CHAPTERS[1]


APPROVALS = st.lists(
    st.lists(st.sets(st.sampled_from(DEMANDS)).map(lambda s: tuple(sorted(s))), max_size=6),
    min_size=3,
    max_size=3,
)
SCORES = st.lists(
    st.lists(st.dictionaries(st.sampled_from(DEMANDS), st.integers(0, 5)), max_size=6),
    min_size=3,
    max_size=3,
)


@given(APPROVALS, st.integers(1, 5), st.permutations(range(3)))
@settings(max_examples=60, deadline=None)
def test_regional_approval_list_equals_the_list_of_the_union(
    rows: list[list[tuple[str, ...]]], seats: int, order: list[int]
) -> None:
    s = spec()
    ballots = [approvals(*r) for r in rows]
    tallies = [tally(s, i, ballots[i]) for i in range(3)]
    regional = regional_demands(
        s, seats, [tallies[i] for i in order], proposal=PROPOSAL, proposal_digest=DIGEST
    )
    union = [b for chapter in ballots for b in chapter]
    assert regional == rank_demands(s, seats, count(s, union, eligible=60), len(union), 60)
    assert len(regional.adopted) <= seats
    if regional.result == "tie":
        assert len(regional.adopted) + len(regional.tied) > seats


@given(SCORES, st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_regional_score_list_equals_the_list_of_the_union(
    rows: list[list[dict[str, int]]], seats: int
) -> None:
    s = spec("score")
    ballots: list[list[Ballot]] = [[ScoreBallot(scores=r) for r in chapter] for chapter in rows]
    tallies = [tally(s, i, ballots[i]) for i in range(3)]
    regional = regional_demands(s, seats, tallies, proposal=PROPOSAL, proposal_digest=DIGEST)
    pooled = add_counts(s, [count(s, b, eligible=20) for b in ballots])
    cast = sum(len(b) for b in ballots)
    assert regional == rank_demands(s, seats, pooled, cast, 60)
