"""Chapter tallies on the wire, their checks, and regional aggregation (protocol.aggregate)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.aggregate import (
    ChapterResult,
    Decision,
    aggregate,
    check_tally,
    decision_body,
    parse_decision,
    verify_decision,
)
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
from protocol.canonical import digest
from protocol.counting import count, make_tally, outcome
from protocol.errors import TallyError
from protocol.merkle import EMPTY_ROOT
from protocol.tally import (
    ConsentCounts,
    OptionCounts,
    Outcome,
    PairwiseCounts,
    ScoreCounts,
    Tally,
    parse_tally,
    tally_body,
)

PROPOSAL = "https://region.example/proposals/1"
PROPOSAL_DIGEST = "ab" * 32
ROSTER_ROOT = "cd" * 32
OPTIONS = ("Park", "Library", "Garden")
CHAPTERS = tuple(f"https://c{i}.example/actor" for i in range(6))
replace = msgspec.structs.replace


def regional(method: str, **kw: object) -> ProposalSpec:
    options = () if method == "consent" else OPTIONS
    fields: dict[str, object] = {"chapters": CHAPTERS[:3], **kw}
    return ProposalSpec(method=method, options=options, scope="regional", **fields)  # type: ignore[arg-type]


def tally(
    spec: ProposalSpec, chapter: str, ballots: Sequence[Ballot], eligible: int | None = None
) -> Tally:
    nonces = [i.to_bytes(32, "big") for i in range(len(ballots))]
    return make_tally(
        spec,
        chapter=chapter,
        proposal=PROPOSAL,
        proposal_digest=PROPOSAL_DIGEST,
        ballots=ballots,
        receipts=[ballot_receipt(PROPOSAL, b, n) for b, n in zip(ballots, nonces, strict=True)],
        eligible=len(ballots) if eligible is None else eligible,
        roster_root=ROSTER_ROOT,
        roster_size=max(len(ballots), eligible or 0),
    )


def entry(t: Tally, seq: int = 4) -> dict[str, object]:
    """A Tally chain entry as a node would write it (envelope + body), through JSON."""
    body = {"type": "Tally", "actor": t.chapter, "seq": seq, **tally_body(t)}
    decoded: dict[str, object] = msgspec.json.decode(msgspec.json.encode(body))
    return decoded


def signed(*tallies: Tally) -> list[tuple[str, Tally]]:
    return [(digest(entry(t)), parse_tally(entry(t))) for t in tallies]


def consent(*choices: str) -> list[Ballot]:
    return [ConsentBallot(choice=c) for c in choices]  # type: ignore[arg-type]


def choices(*names: str) -> list[Ballot]:
    return [ChoiceBallot(choice=n) for n in names]


# --- tallies on the wire -------------------------------------------------------------

SAMPLE_BALLOTS: dict[str, list[Ballot]] = {
    "consent": consent("agree", "agree", "block"),
    "choice": choices("Park", "Garden"),
    "approval": [ApprovalBallot(choices=("Park", "Garden")), ApprovalBallot(choices=())],
    "ranked": [RankedBallot(ranking=("Garden", "Park")), RankedBallot(ranking=("Library",))],
    "score": [ScoreBallot(scores={"Park": 5}), ScoreBallot(scores={"Park": 1, "Garden": 3})],
}


@pytest.mark.parametrize("method", sorted(SAMPLE_BALLOTS))
def test_tally_entry_round_trips_and_checks(method: str) -> None:
    spec = regional(method, block_limit=1)
    t = tally(spec, CHAPTERS[0], SAMPLE_BALLOTS[method], eligible=4)
    assert parse_tally(entry(t)) == t
    check_tally(spec, parse_tally(entry(t)), proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    assert "chapter" not in tally_body(t)


def test_tally_of_no_ballots_has_the_empty_root() -> None:
    spec = regional("choice")
    t = tally(spec, CHAPTERS[0], [], eligible=5)
    assert (t.ballots_root, t.ballots_size, t.outcome.reason) == (
        EMPTY_ROOT.hex(),
        0,
        "no ballots cast",
    )
    check_tally(spec, t)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"cast": "3"}, "Expected `int`, got `str` - at `\\$.cast`"),
        ({"ballots_root": None}, "Expected `str`, got `null`"),
        ({"counts": {"votes": {"Park": 1}}}, "counts of a consent tally are malformed"),
        ({"counts": {"agree": 1.0, "abstain": 0, "disagree": 0, "block": 0}}, "got `float`"),
        ({"counts": {"agree": True, "abstain": 0, "disagree": 0, "block": 0}}, "got `bool`"),
        ({"method": "plurality"}, "unknown voting method 'plurality'"),
        ({"type": "Decision"}, "entry type is 'Decision', not 'Tally'"),
        ({"outcome": {"result": "won", "quorum_met": True}}, "Invalid enum value 'won'"),
    ],
)
def test_parse_tally_is_strict_and_names_the_chapter(change: dict[str, object], why: str) -> None:
    raw = entry(tally(regional("consent"), CHAPTERS[1], consent("agree")))
    raw.update(change)
    with pytest.raises(TallyError, match=why) as info:
        parse_tally(raw)
    assert (info.value.actor, info.value.seq) == (CHAPTERS[1], 4)


def test_parse_tally_needs_the_actor() -> None:
    raw = entry(tally(regional("consent"), CHAPTERS[1], consent("agree")))
    del raw["actor"]
    with pytest.raises(TallyError, match="needs its chapter's actor"):
        parse_tally(raw)


# --- tallies that do not add up -------------------------------------------------------


def _bad_tallies() -> list[tuple[str, str, dict[str, object]]]:
    c = {"agree": 2, "abstain": 0, "disagree": 1, "block": 0}
    v = {"Park": 2, "Library": 1, "Garden": 0}
    return [
        (
            "consent",
            "consent counts sum to 4, not cast 3",
            {"counts": ConsentCounts(**{**c, "agree": 3})},
        ),
        (
            "consent",
            "a consent count is negative",
            {"counts": ConsentCounts(**{**c, "agree": 4, "block": -1})},
        ),
        ("consent", "cast 3 exceeds eligible 2", {"eligible": 2}),
        ("consent", "eligible 9 exceeds roster size 3", {"eligible": 9}),
        ("consent", "ballots_size 2 differs from cast 3", {"ballots_size": 2}),
        ("consent", "tally method is 'choice'", {"method": "choice"}),
        ("consent", "ballots_root is not 64 lowercase hex", {"ballots_root": "AB" * 32}),
        ("consent", "outcome 'failed' does not follow", {"outcome": replace_result("failed")}),
        ("consent", "tally is for proposal", {"proposal": PROPOSAL + "/other"}),
        ("consent", "tally counts proposal version", {"proposal_digest": "ef" * 32}),
        (
            "consent",
            "OptionCounts are not counts of a consent vote",
            {"counts": OptionCounts(votes=v)},
        ),
        (
            "choice",
            "choice votes sum to 4, not cast 3",
            {"counts": OptionCounts(votes={**v, "Garden": 1})},
        ),
        (
            "choice",
            "extra \\['Moon'\\], missing \\['Garden'\\]",
            {"counts": OptionCounts(votes={"Park": 2, "Library": 1, "Moon": 0})},
        ),
        (
            "approval",
            "'Park' has 4 approvals, more than cast 3",
            {"counts": OptionCounts(votes={**v, "Park": 4})},
        ),
        (
            "score",
            "'Park' scored 4 times; cast is 3",
            {
                "counts": ScoreCounts(
                    sums={"Park": 4, "Library": 0, "Garden": 0},
                    scored={"Park": 4, "Library": 0, "Garden": 0},
                )
            },
        ),
        (
            "score",
            "'Park' has score sum 6 from 1 scores",
            {
                "counts": ScoreCounts(
                    sums={"Park": 6, "Library": 0, "Garden": 0},
                    scored={"Park": 1, "Library": 0, "Garden": 0},
                )
            },
        ),
        (
            "ranked",
            "pairwise matrix is not 3x3",
            {"counts": PairwiseCounts(pairwise=((0, 1), (1, 0)))},
        ),
        (
            "ranked",
            "pairwise\\[1\\]\\[1\\] is 1, not 0",
            {"counts": PairwiseCounts(pairwise=((0, 1, 1), (0, 1, 1), (0, 0, 0)))},
        ),
        (
            "ranked",
            "= 4 is outside 0..cast 3",
            {"counts": PairwiseCounts(pairwise=((0, 2, 3), (2, 0, 3), (0, 0, 0)))},
        ),
    ]


def replace_result(result: str) -> Outcome:
    return Outcome(result=result, quorum_met=True)  # type: ignore[arg-type]


BALLOTS3: dict[str, list[Ballot]] = {
    "consent": consent("agree", "agree", "disagree"),
    "choice": choices("Park", "Park", "Library"),
    "approval": [ApprovalBallot(choices=("Park",))] * 2 + [ApprovalBallot(choices=("Library",))],
    "score": [ScoreBallot(scores={"Park": 1})] * 3,
    "ranked": [RankedBallot(ranking=("Park", "Library"))] * 3,
}


@pytest.mark.parametrize(("method", "why", "change"), _bad_tallies())
def test_check_tally_rejects_what_does_not_add_up(
    method: str, why: str, change: dict[str, object]
) -> None:
    spec = regional(method)
    good = tally(spec, CHAPTERS[2], BALLOTS3[method])
    check_tally(spec, good, proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    bad = replace(good, **change)
    with pytest.raises(TallyError, match=why) as info:
        check_tally(spec, bad, proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    assert info.value.actor == CHAPTERS[2]
    # The aggregator refuses it too, naming the chapter.
    others = signed(tally(spec, CHAPTERS[0], BALLOTS3[method]))
    with pytest.raises(TallyError, match=why) as info:
        aggregate(
            spec, [*others, ("12" * 32, bad)], proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST
        )
    assert info.value.actor == CHAPTERS[2]


# --- aggregation rules ----------------------------------------------------------------


def decide(spec: ProposalSpec, *tallies: Tally) -> Decision:
    return aggregate(spec, signed(*tallies), proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)


def test_pooled_and_by_chapters_can_disagree_and_double_majority_needs_both() -> None:
    big = consent(*["agree"] * 30, *["disagree"] * 2)
    small = consent("agree", "disagree", "disagree")
    results = {}
    for rule in ("pooled", "chapters", "double-majority"):
        spec = regional("consent", rule=rule)
        d = decide(
            spec,
            tally(spec, CHAPTERS[0], big),
            tally(spec, CHAPTERS[1], small),
            tally(spec, CHAPTERS[2], small),
        )
        results[rule] = d.outcome
        assert d.counts == ConsentCounts(agree=32, abstain=0, disagree=6, block=0)
        assert (d.cast, d.eligible, d.reporting, d.counted) == (38, 38, 3, 3)
    assert results["pooled"].result == "passed"
    assert results["chapters"].result == "failed"
    assert results["chapters"].reason.startswith("1 of 3 counted chapters passed it")
    assert (results["double-majority"].result, results["double-majority"].reason) == (
        "failed",
        "failed by chapters",
    )


def test_double_majority_with_options_needs_the_same_winner() -> None:
    spec = regional("choice", rule="double-majority")
    # pooled: Park 10, Library 4; chapters: Library wins two chapters, Park one.
    d = decide(
        spec,
        tally(spec, CHAPTERS[0], choices(*["Park"] * 10)),
        tally(spec, CHAPTERS[1], choices("Library", "Library")),
        tally(spec, CHAPTERS[2], choices("Library", "Library")),
    )
    assert (d.pooled.winner, d.by_chapters.winner) == ("Park", "Library")
    assert (d.outcome.result, d.outcome.reason) == (
        "failed",
        "no decision: pooled winner 'Park', by chapters winner 'Library'",
    )
    d = decide(
        spec,
        tally(spec, CHAPTERS[0], choices("Park", "Park", "Garden")),
        tally(spec, CHAPTERS[1], choices("Park")),
    )
    assert (d.outcome.result, d.outcome.winner) == ("winner", "Park")


def test_chapter_ties_abstain_under_the_chapters_rule() -> None:
    spec = regional("choice", rule="chapters")
    d = decide(
        spec,
        tally(spec, CHAPTERS[0], choices("Park", "Garden")),
        tally(spec, CHAPTERS[1], choices("Garden")),
    )
    assert (d.outcome.result, d.outcome.winner) == ("winner", "Garden")
    assert d.outcome.reason == "won in 1 of 2 counted chapters, more than any other option"


def test_minimum_share_of_chapters_reporting() -> None:
    spec = regional("consent", min_chapters="2/3")
    d = decide(spec, tally(spec, CHAPTERS[0], consent("agree")))
    assert (d.outcome.result, d.outcome.quorum_met, d.outcome.reason) == (
        "failed",
        False,
        "only 1 of 3 listed chapters reported; 2/3 must",
    )
    assert [c.status for c in d.chapters] == ["counted", "missing", "missing"]
    d = decide(spec, tally(spec, CHAPTERS[0], consent("agree")), tally(spec, CHAPTERS[2], []))
    assert d.outcome.result == "passed"  # 2 of 3 reported: exactly the share needed


def test_a_chapter_below_quorum_is_reported_but_not_counted() -> None:
    spec = regional("choice", quorum="1/2")
    low = tally(spec, CHAPTERS[1], choices(*["Garden"] * 4), eligible=10)
    d = decide(spec, tally(spec, CHAPTERS[0], choices("Park", "Park")), low)
    assert d.counts == OptionCounts(votes={"Park": 2, "Library": 0, "Garden": 0})
    assert d.outcome.winner == "Park"
    assert d.chapters[1] == ChapterResult(
        chapter=CHAPTERS[1],
        status="below_quorum",
        tally=digest(entry(low)),
        cast=4,
        eligible=10,
        outcome=low.outcome,
    )
    only_low = decide(spec, low)
    assert (only_low.outcome.result, only_low.outcome.reason) == ("failed", "no chapter met quorum")


def test_only_listed_chapters_count_and_decision_is_order_free() -> None:
    spec = regional("choice")
    stranger = tally(spec, CHAPTERS[5], choices(*["Library"] * 50))
    mine = [tally(spec, CHAPTERS[i], choices("Park", "Garden", "Park")) for i in range(3)]
    d = decide(spec, stranger, *mine)
    assert d.outcome.winner == "Park"
    assert d.tallies == tuple(sorted(digest(entry(t)) for t in mine))
    assert decide(spec, *reversed(mine), stranger) == d


def test_two_tallies_from_one_chapter_are_rejected() -> None:
    spec = regional("consent")
    a = tally(spec, CHAPTERS[0], consent("agree"))
    b = tally(spec, CHAPTERS[0], consent("disagree"))
    with pytest.raises(TallyError, match="two tallies from one chapter") as info:
        decide(spec, a, b)
    assert info.value.actor == CHAPTERS[0]


def test_a_tally_for_another_proposal_is_rejected() -> None:
    spec = regional("consent")
    other = replace(tally(spec, CHAPTERS[1], consent("agree")), proposal=PROPOSAL + "x")
    with pytest.raises(TallyError, match="tally is for proposal") as info:
        aggregate(spec, [("ef" * 32, other)], proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    assert info.value.actor == CHAPTERS[1]


# --- pooled aggregation is counting the union ------------------------------------------

SPEC_FOR = {
    m: regional(m, chapters=CHAPTERS, block_limit=2)
    for m in ("consent", "choice", "approval", "ranked", "score")
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
            lambda p: st.integers(0, 3).map(lambda k: RankedBallot(ranking=tuple(p[:k])))
        )
    return st.dictionaries(opts, st.integers(0, 5)).map(lambda s: ScoreBallot(scores=s))


region_case = st.sampled_from(sorted(SPEC_FOR)).flatmap(
    lambda m: st.tuples(
        st.just(m),
        st.lists(st.tuples(ballots_for(m), st.integers(0, len(CHAPTERS) - 1)), max_size=60),
        st.lists(st.integers(0, 3), min_size=len(CHAPTERS), max_size=len(CHAPTERS)),
    )
)


@settings(max_examples=60, deadline=None)
@given(region_case)
def test_pooled_aggregation_equals_counting_the_union(
    case: tuple[str, list[tuple[Ballot, int]], list[int]],
) -> None:
    method, placed, absent = case
    spec = SPEC_FOR[method]
    per_chapter: list[list[Ballot]] = [[] for _ in CHAPTERS]
    for ballot, where in placed:
        per_chapter[where].append(ballot)
    tallies = [
        tally(spec, ch, bs, eligible=len(bs) + extra)
        for ch, bs, extra in zip(CHAPTERS, per_chapter, absent, strict=True)
        if bs or extra  # a chapter with nobody eligible reports nothing
    ]
    union = [b for b, _ in placed]
    eligible = sum(t.eligible for t in tallies)
    d = decide(spec, *tallies)
    assert d.counts == count(spec, union, eligible=eligible)
    assert (d.cast, d.eligible) == (len(union), eligible)
    if tallies:
        assert d.pooled == outcome(
            spec, count(spec, union, eligible=eligible), len(union), eligible
        )
    verify_decision(spec, signed(*tallies), decision_body(d))


# --- decisions on the wire and their verification ---------------------------------------


def sample_decision() -> tuple[ProposalSpec, list[tuple[str, Tally]], dict[str, object]]:
    spec = regional("ranked", rule="double-majority")
    tallies = signed(
        tally(spec, CHAPTERS[0], [RankedBallot(ranking=("Garden", "Park"))] * 3),
        tally(spec, CHAPTERS[1], [RankedBallot(ranking=("Garden",))] * 2, eligible=3),
    )
    d = aggregate(spec, tallies, proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    body = {
        "type": "Decision",
        "actor": "https://region.example/actor",
        "seq": 9,
        **decision_body(d),
    }
    wire: dict[str, object] = msgspec.json.decode(msgspec.json.encode(body))
    return spec, tallies, wire


def test_decision_round_trips_and_verifies() -> None:
    spec, tallies, body = sample_decision()
    d = parse_decision(body)
    assert (d.outcome.result, d.outcome.winner) == ("winner", "Garden")
    assert decision_body(d) == {k: v for k, v in body.items() if k not in ("type", "actor", "seq")}
    verify_decision(spec, tallies, body, proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    verify_decision(spec, list(reversed(tallies)), body)


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("outcome", "winner"), "Park", "field 'outcome' differs"),
        (("cast",), 6, "field 'cast' differs from the recount \\(published 6, recounted 5\\)"),
        (("counts", "pairwise", 0, 2), 4, "field 'counts' differs"),
        (("chapters", 1, "status"), "below_quorum", "field 'chapters' differs"),
        (("rule",), "pooled", "field 'rule' differs"),
        (("tallies", 0), "00" * 32, "uses tallies \\['0000"),
        (("cast",), "5", "decision is malformed"),
    ],
)
def test_tampered_decision_is_disputed_naming_the_field(
    path: tuple[object, ...], value: object, why: str
) -> None:
    spec, tallies, body = sample_decision()
    target: object = body
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    if isinstance(target, list):
        target[path[-1]] = value  # type: ignore[index]
    else:
        target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(TallyError, match=why) as info:
        verify_decision(spec, tallies, body)
    assert info.value.actor == "https://region.example/actor"


def test_decision_with_a_tally_left_out_is_disputed() -> None:
    spec, tallies, body = sample_decision()
    with pytest.raises(TallyError, match="not supplied here"):
        verify_decision(spec, tallies[:1], body)


def test_decision_for_another_proposal_is_disputed() -> None:
    spec, tallies, body = sample_decision()
    with pytest.raises(TallyError, match="decision is for proposal"):
        verify_decision(spec, tallies, body, proposal=PROPOSAL + "x")


def test_reason_texts_are_explanations_not_compared() -> None:
    spec, tallies, body = sample_decision()
    body["outcome"]["reason"] = "worded by another implementation"  # type: ignore[index]
    verify_decision(spec, tallies, body)
    t = replace(tallies[0][1], outcome=replace(tallies[0][1].outcome, reason="other words"))
    check_tally(spec, t)
    body["outcome"]["quorum_met"] = False  # type: ignore[index]
    with pytest.raises(TallyError, match="field 'outcome' differs"):
        verify_decision(spec, tallies, body)


@settings(max_examples=40, deadline=None)
@given(region_case, st.sampled_from(("pooled", "chapters", "double-majority")), st.randoms())
def test_every_rule_decides_the_same_whatever_the_tally_order(
    case: tuple[str, list[tuple[Ballot, int]], list[int]], rule: str, rnd: object
) -> None:
    method, placed, absent = case
    spec = replace(SPEC_FOR[method], rule=rule, quorum="1/3")
    per_chapter: list[list[Ballot]] = [[] for _ in CHAPTERS]
    for ballot, where in placed:
        per_chapter[where].append(ballot)
    tallies = signed(
        *(
            tally(spec, ch, bs, eligible=len(bs) + extra)
            for ch, bs, extra in zip(CHAPTERS, per_chapter, absent, strict=True)
            if bs or extra
        )
    )
    d = aggregate(spec, tallies, proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST)
    shuffled = list(tallies)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert aggregate(spec, shuffled, proposal=PROPOSAL, proposal_digest=PROPOSAL_DIGEST) == d
    assert d.outcome == {"pooled": d.pooled, "chapters": d.by_chapters}.get(rule, d.outcome)
    assert d.counted == sum(1 for c in d.chapters if c.status == "counted")
    verify_decision(spec, shuffled, decision_body(d))
