"""Counting ballots and deciding outcomes, through the public API of protocol.counting."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ballots import (
    ApprovalBallot,
    Ballot,
    ChoiceBallot,
    ConsentBallot,
    ProposalSpec,
    RankedBallot,
    ScoreBallot,
    validate_ballot,
)
from protocol.counting import (
    add_counts,
    count,
    outcome,
    quorum_met,
    schulze_winners,
    score_means,
    strongest_paths,
)
from protocol.errors import BallotError, TallyError
from protocol.tally import ConsentCounts, OptionCounts, Outcome, PairwiseCounts, ScoreCounts

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "schulze" / "examples.json"
OPTIONS = ("Park", "Library", "Garden", "Clinic")


def consent(*choices: str, **spec: object) -> tuple[ProposalSpec, list[Ballot]]:
    s = ProposalSpec(method="consent", **spec)  # type: ignore[arg-type]
    return s, [validate_ballot(s, {"choice": c}) for c in choices]


def decide(spec: ProposalSpec, ballots: Sequence[Ballot], eligible: int) -> Outcome:
    return outcome(spec, count(spec, ballots, eligible=eligible), len(ballots), eligible)


def ranked(options: Sequence[str], groups: Sequence[tuple[int, str]]) -> list[Ballot]:
    return [RankedBallot(ranking=tuple(order)) for n, order in groups for _ in range(n)]


# --- counts ------------------------------------------------------------------------


def test_consent_counts_each_choice() -> None:
    spec, ballots = consent("agree", "agree", "abstain", "disagree", "block")
    assert count(spec, ballots, eligible=9) == ConsentCounts(
        agree=2, abstain=1, disagree=1, block=1
    )


def test_choice_and_approval_count_every_option_including_zero() -> None:
    spec = ProposalSpec(method="choice", options=OPTIONS)
    ballots = [ChoiceBallot(choice="Park"), ChoiceBallot(choice="Park"), ChoiceBallot("Garden")]
    assert count(spec, ballots, eligible=3) == OptionCounts(
        votes={"Park": 2, "Library": 0, "Garden": 1, "Clinic": 0}
    )
    spec = ProposalSpec(method="approval", options=OPTIONS)
    ballots = [ApprovalBallot(choices=("Park", "Clinic")), ApprovalBallot(choices=())]
    assert count(spec, ballots, eligible=2) == OptionCounts(
        votes={"Park": 1, "Library": 0, "Garden": 0, "Clinic": 1}
    )


def test_score_counts_sums_and_number_of_scores_leaving_unscored_out() -> None:
    spec = ProposalSpec(method="score", options=OPTIONS)
    ballots = [ScoreBallot(scores={"Park": 5, "Library": 0}), ScoreBallot(scores={"Park": 2})]
    counts = count(spec, ballots, eligible=2)
    assert counts == ScoreCounts(
        sums={"Park": 7, "Library": 0, "Garden": 0, "Clinic": 0},
        scored={"Park": 2, "Library": 1, "Garden": 0, "Clinic": 0},
    )
    assert isinstance(counts, ScoreCounts)
    assert score_means(counts) == {
        "Park": Fraction(7, 2),
        "Library": Fraction(0),
        "Garden": None,
        "Clinic": None,
    }


def test_ranked_counts_partial_rankings_place_unranked_below_and_equal() -> None:
    spec = ProposalSpec(method="ranked", options=("A", "B", "C", "D"))
    ballots = [RankedBallot(ranking=("C", "A")), RankedBallot(ranking=())]
    # C above A, B, D; A above B, D; B and D unranked: equal, no preference between them.
    assert count(spec, ballots, eligible=2) == PairwiseCounts(
        pairwise=((0, 1, 0, 1), (0, 0, 0, 0), (1, 1, 0, 1), (0, 0, 0, 0))
    )


def naive_pairwise(options: Sequence[str], rankings: Sequence[Sequence[str]]) -> list[list[int]]:
    """Straight from the definition, to check the packed counter against."""
    n = len(options)
    d = [[0] * n for _ in range(n)]
    for r in rankings:
        pos = {o: i for i, o in enumerate(r)}
        for i, a in enumerate(options):
            for j, b in enumerate(options):
                if a in pos and (b not in pos or pos[a] < pos[b]):
                    d[i][j] += 1
    return d


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(st.just(n), st.data())))
def test_pairwise_matrix_matches_the_definition(arg: tuple[int, st.DataObject]) -> None:
    n, data = arg
    options = tuple(f"o{i}" for i in range(n))
    rankings = data.draw(
        st.lists(
            st.permutations(options).flatmap(lambda p: st.integers(0, n).map(lambda k: p[:k])),
            max_size=30,
        )
    )
    spec = ProposalSpec(method="ranked", options=options)
    got = count(spec, [RankedBallot(ranking=tuple(r)) for r in rankings], eligible=len(rankings))
    assert isinstance(got, PairwiseCounts)
    assert [list(row) for row in got.pairwise] == naive_pairwise(options, rankings)


TEN = tuple("ABCDEFGHIJ")


@pytest.mark.parametrize(
    ("ranking", "why"),
    [
        (("A", "B", "C", "D", "E", "F", "G", "H", "I", "A"), "names an option twice"),
        (("A", "B", "C", "D", "E", "A", "G", "H", "I", "J"), "names an option twice"),
        (("A", "B", "A"), "'A' appears twice"),
        (("A", "B", "C", "D", "E", "F", "C"), "names an option twice"),
        (("A", "B", "C", "D", "E", "F", "G", "H", "I", "Z"), "'Z' is not an option"),
        (("Z",), "'Z' is not an option"),
    ],
)
def test_count_catches_a_ranking_that_skipped_validation(
    ranking: tuple[str, ...], why: str
) -> None:
    spec = ProposalSpec(method="ranked", options=TEN)
    good = [RankedBallot(ranking=TEN)] * 3
    with pytest.raises(BallotError, match=why):
        count(spec, [*good, RankedBallot(ranking=ranking)], eligible=4)


def test_pairwise_counts_past_a_16_bit_field() -> None:
    # 70,000 ballots no longer fit the 16-bit fields used for a chapter-sized count.
    spec = ProposalSpec(method="ranked", options=("A", "B", "C"))
    ballots = [RankedBallot(ranking=("A", "B", "C"))] * 69_999 + [RankedBallot(ranking=("C",))]
    assert count(spec, ballots, eligible=70_000) == PairwiseCounts(
        pairwise=((0, 69_999, 69_999), (0, 0, 69_999), (1, 1, 0))
    )


def test_count_rejects_more_ballots_than_eligible_members() -> None:
    spec, ballots = consent("agree", "agree")
    with pytest.raises(TallyError, match="2 ballots cast but only 1 members eligible"):
        count(spec, ballots, eligible=1)


def test_count_rejects_a_ballot_of_another_method() -> None:
    spec = ProposalSpec(method="choice", options=OPTIONS)
    with pytest.raises(BallotError, match="not a choice ballot"):
        count(spec, [RankedBallot(ranking=("Park",))], eligible=1)
    with pytest.raises(BallotError, match="'Moon' is not valid"):
        count(spec, [ChoiceBallot(choice="Moon")], eligible=1)


# --- consent -------------------------------------------------------------------------


def test_two_thirds_of_three_is_two() -> None:
    spec, ballots = consent("agree", "agree", "disagree", threshold="2/3")
    result = decide(spec, ballots, 3)
    assert result.result == "passed"
    assert "2 agree of 3 agree+disagree meets threshold 2/3" in result.reason


def test_threshold_met_exactly_passes_and_one_short_fails() -> None:
    spec, ballots = consent(*["agree"] * 3, *["disagree"] * 2, threshold="3/5")
    assert decide(spec, ballots, 5).result == "passed"
    spec, ballots = consent(*["agree"] * 3, *["disagree"] * 3, threshold="1/2")
    # 3 of 6 meets 1/2 but is not more than disagree: a majority is strict.
    failed = decide(spec, ballots, 6)
    assert failed.result == "failed"
    assert "agree is not more than disagree" in failed.reason
    spec, ballots = consent(*["agree"] * 3, *["disagree"] * 2, threshold="2/3")
    assert decide(spec, ballots, 5).reason == "3 agree of 5 agree+disagree is below threshold 2/3"


def test_abstentions_count_for_quorum_not_for_the_threshold() -> None:
    spec, ballots = consent("agree", "abstain", "abstain", "abstain", quorum="1/2")
    assert decide(spec, ballots, 8) == Outcome(
        result="passed",
        quorum_met=True,
        reason="1 agree of 1 agree+disagree meets threshold 1/2",
    )


def test_a_single_block_fails_it_unless_the_limit_allows_one() -> None:
    spec, ballots = consent(*["agree"] * 9, "block")
    blocked = decide(spec, ballots, 10)
    assert blocked.result == "failed"
    assert blocked.reason == "blocked: 1 blocks, at most 0 allowed"
    spec, ballots = consent(*["agree"] * 9, "block", block_limit=1)
    assert decide(spec, ballots, 10).result == "passed"


def test_quorum_just_met_and_just_missed() -> None:
    spec, ballots = consent("agree", "agree", "agree", quorum="1/3")
    assert quorum_met(spec, 3, 9) is True
    assert decide(spec, ballots, 9).result == "passed"
    missed = decide(spec, ballots, 10)
    assert missed == Outcome(
        result="failed",
        quorum_met=False,
        reason="quorum not met: 3 of 10 eligible voted, 1/3 needed",
    )


def test_zero_turnout_and_zero_eligible_are_explicit_failures() -> None:
    spec, _ = consent()
    assert decide(spec, [], 5) == Outcome(
        result="failed", quorum_met=True, reason="no ballots cast"
    )
    assert decide(spec, [], 0) == Outcome(
        result="failed", quorum_met=False, reason="no eligible members"
    )
    choice = ProposalSpec(method="choice", options=OPTIONS, quorum="1/10")
    assert decide(choice, [], 5).reason == "quorum not met: 0 of 5 eligible voted, 1/10 needed"


# --- choice, approval, score -------------------------------------------------------


def test_most_votes_wins_and_an_equal_top_is_a_tie() -> None:
    spec = ProposalSpec(method="choice", options=OPTIONS)
    b = [ChoiceBallot(choice=c) for c in ("Garden", "Park", "Garden")]
    assert decide(spec, b, 5).winner == "Garden"
    tie = decide(spec, [*b, ChoiceBallot(choice="Park")], 5)
    # tied options are listed in the proposal's order, whatever order the votes came in
    assert tie == Outcome(
        result="tie", quorum_met=True, tied=("Park", "Garden"), reason="2 options tie at 2 votes"
    )


def test_approval_with_no_approvals_at_all_fails() -> None:
    spec = ProposalSpec(method="approval", options=OPTIONS)
    result = decide(spec, [ApprovalBallot(choices=())], 1)
    assert (result.result, result.reason) == ("failed", "no option received votes")


def test_score_highest_mean_then_more_scores_then_tie() -> None:
    spec = ProposalSpec(method="score", options=OPTIONS)
    b = [ScoreBallot(scores={"Park": 4, "Library": 5}), ScoreBallot(scores={"Park": 5})]
    # Park 9/2 from 2 scores, Library 5/1 from 1: the higher mean wins.
    assert decide(spec, b, 2).winner == "Library"
    b = [ScoreBallot(scores={"Park": 4, "Library": 4}), ScoreBallot(scores={"Park": 4})]
    result = decide(spec, b, 2)
    assert (result.winner, result.reason) == ("Park", "highest mean 4/1 from 2 scores")
    b = [ScoreBallot(scores={"Park": 3, "Clinic": 3})]
    assert decide(spec, b, 1).tied == ("Park", "Clinic")
    assert decide(spec, [ScoreBallot(scores={})], 1).reason == "no option was scored"


# --- ranked ------------------------------------------------------------------------


def test_condorcet_winner() -> None:
    spec = ProposalSpec(method="ranked", options=("A", "B", "C"))
    ballots = ranked(spec.options, [(4, "ABC"), (3, "BCA"), (2, "CAB")])
    d = count(spec, ballots, eligible=9)
    assert d == PairwiseCounts(pairwise=((0, 6, 4), (3, 0, 7), (5, 2, 0)))
    result = decide(spec, ballots, 9)
    # A>B 6-3, B>C 7-2, C>A 5-4: a cycle; Schulze: A→B 6, B→C 7; C→A 5.
    # p[A][C] = min(6, 7) = 6 > p[C][A] = 5 and p[A][B] = 6 > p[B][A] = 5: A wins.
    assert (result.result, result.winner) == ("winner", "A")
    assert "Schulze" in result.reason

    ballots = ranked(spec.options, [(3, "BAC"), (2, "CBA")])
    result = decide(spec, ballots, 5)
    assert (result.winner, result.reason) == (
        "B",
        "Condorcet winner: beats every other option head to head",
    )


def test_a_perfect_condorcet_cycle_is_a_three_way_tie() -> None:
    spec = ProposalSpec(method="ranked", options=("Rock", "Paper", "Scissors"))
    ballots = [
        RankedBallot(ranking=("Rock", "Scissors", "Paper")),
        RankedBallot(ranking=("Paper", "Rock", "Scissors")),
        RankedBallot(ranking=("Scissors", "Paper", "Rock")),
    ]
    assert decide(spec, ballots, 3) == Outcome(
        result="tie",
        quorum_met=True,
        tied=("Rock", "Paper", "Scissors"),
        reason="no Condorcet winner; 3 Schulze winners tie",
    )


def test_no_preferences_at_all_fails() -> None:
    spec = ProposalSpec(method="ranked", options=("A", "B"))
    assert decide(spec, [RankedBallot(ranking=())], 1).reason == "no preferences expressed"


def _examples() -> list[dict[str, object]]:
    data = json.loads(VECTORS.read_text())
    examples: list[dict[str, object]] = data["examples"]
    return examples


@pytest.mark.parametrize("example", _examples(), ids=lambda e: str(e["name"]))
def test_schulze_published_examples(example: dict[str, object]) -> None:
    options = tuple(example["options"])  # type: ignore[arg-type]
    groups = [(int(n), str(order)) for n, order in example["ballots"]]  # type: ignore[attr-defined]
    spec = ProposalSpec(method="ranked", options=options)
    ballots = ranked(options, groups)
    counts = count(spec, ballots, eligible=len(ballots))
    assert isinstance(counts, PairwiseCounts)
    if "pairwise" in example:
        assert [list(r) for r in counts.pairwise] == example["pairwise"]
        assert strongest_paths(counts.pairwise) == example["strongest_paths"]
    winners = [options[i] for i in schulze_winners(counts.pairwise)]
    assert winners == example["winners"]
    result = decide(spec, ballots, len(ballots))
    if len(winners) == 1:
        assert (result.result, result.winner) == ("winner", winners[0])
    else:
        assert (result.result, list(result.tied)) == ("tie", winners)


@pytest.mark.parametrize("example", _examples(), ids=lambda e: str(e["name"]))
def test_schulze_examples_tampered_ballots_change_the_count(example: dict[str, object]) -> None:
    options = tuple(example["options"])  # type: ignore[arg-type]
    groups = [(int(n), str(order)) for n, order in example["ballots"]]  # type: ignore[attr-defined]
    # Flip one byte of the data: the first group's first two preferences swap places.
    n, order = groups[0]
    groups[0] = (n, order[1] + order[0] + order[2:])
    spec = ProposalSpec(method="ranked", options=options)
    tampered = count(spec, ranked(options, groups), eligible=sum(g[0] for g in groups))
    honest = count(
        spec, ranked(options, [(int(a), str(b)) for a, b in example["ballots"]]), eligible=99
    )  # type: ignore[attr-defined]
    assert tampered != honest


# --- properties --------------------------------------------------------------------

METHOD_SPECS = {
    "consent": ProposalSpec(method="consent", block_limit=1),
    "choice": ProposalSpec(method="choice", options=OPTIONS),
    "approval": ProposalSpec(method="approval", options=OPTIONS),
    "ranked": ProposalSpec(method="ranked", options=OPTIONS),
    "score": ProposalSpec(method="score", options=OPTIONS),
}


def ballots_for(method: str) -> st.SearchStrategy[Ballot]:
    opts = st.sampled_from(OPTIONS)
    if method == "consent":
        return st.sampled_from(("agree", "abstain", "disagree", "block")).map(
            lambda c: ConsentBallot(choice=c)  # type: ignore[arg-type]
        )
    if method == "choice":
        return opts.map(lambda c: ChoiceBallot(choice=c))
    if method == "approval":
        return st.lists(opts, unique=True).map(lambda cs: ApprovalBallot(choices=tuple(cs)))
    if method == "ranked":
        return st.permutations(OPTIONS).flatmap(
            lambda p: st.integers(0, len(p)).map(lambda k: RankedBallot(ranking=tuple(p[:k])))
        )
    return st.dictionaries(opts, st.integers(0, 5)).map(lambda s: ScoreBallot(scores=s))


any_method_ballots = st.sampled_from(sorted(METHOD_SPECS)).flatmap(
    lambda m: st.tuples(st.just(m), st.lists(ballots_for(m), max_size=40))
)


@settings(max_examples=80, deadline=None)
@given(any_method_ballots, st.randoms(use_true_random=False))
def test_counts_do_not_depend_on_ballot_order(case: tuple[str, list[Ballot]], rnd: object) -> None:
    method, ballots = case
    spec = METHOD_SPECS[method]
    shuffled = list(ballots)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert count(spec, shuffled, eligible=40) == count(spec, ballots, eligible=40)


@settings(max_examples=80, deadline=None)
@given(any_method_ballots, st.lists(st.integers(0, 40), max_size=5))
def test_added_counts_of_parts_equal_the_count_of_the_whole(
    case: tuple[str, list[Ballot]], cuts: list[int]
) -> None:
    method, ballots = case
    spec = METHOD_SPECS[method]
    bounds = [0, *sorted(c % (len(ballots) + 1) for c in cuts), len(ballots)]
    parts = [ballots[a:b] for a, b in itertools.pairwise(bounds)]
    summed = add_counts(spec, (count(spec, p, eligible=len(p)) for p in parts))
    assert summed == count(spec, ballots, eligible=len(ballots))


def test_outcome_refuses_counts_of_another_method() -> None:
    spec = ProposalSpec(method="choice", options=OPTIONS)
    with pytest.raises(TallyError, match="not counts of a choice vote"):
        outcome(spec, ConsentCounts(agree=1, abstain=0, disagree=0, block=0), 1, 1)
