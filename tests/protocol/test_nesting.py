"""Nested regions (protocol.nesting, protocol.md §10.6): the same aggregation at every level."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.aggregate import aggregate, decision_body
from protocol.audit_nesting import (
    check_decisions,
    check_level,
    decision_lateness,
    decisions_due,
    level_body,
    parse_level,
)
from protocol.audit_report import Finding
from protocol.ballots import (
    ApprovalBallot,
    Ballot,
    ChoiceBallot,
    ConsentBallot,
    ProposalSpec,
    RankedBallot,
    ScoreBallot,
    ballot_receipt,
    parse_spec,
    spec_fields,
)
from protocol.chain import entry_digest
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


# --- the Level entry and the audit's level-by-level check (protocol.audit_nesting) --------


DIRECT = "https://d0.example/actor"  # a chapter straight under the state


def key_of(actor: str) -> SigningKey:
    return SigningKey.from_seed(actor.encode()[:32].ljust(32, b"\0"))


def signed(
    actor: str, seq: int, body: dict[str, Any], published: str = "2026-11-26T15:00:00Z"
) -> dict[str, Any]:
    entry = make_entry(
        body,
        actor=actor,
        seq=seq,
        prev="00" * 32,
        key=key_of(actor),
        key_id=f"{actor}#ed25519-0",
        published=published,
    )
    plain: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(entry))
    return plain


def state_question(members: tuple[str, ...] = (CITIES[0], DIRECT)) -> dict[str, Any]:
    spec = ProposalSpec(method="choice", options=OPTIONS, scope="regional", chapters=members)
    body = {"type": "Question", "name": "Where?", **spec_fields(spec)}
    entry = signed(STATE, 3, body)
    return {**entry, "id": PROPOSAL}


def test_a_level_entry_checks_against_the_question_it_carries() -> None:
    q = signed(STATE, 3, {"type": "Question", **spec_fields(state_spec())})
    qd = entry_digest(q)
    city = CITIES[0]
    ok = signed(city, 4, level_body(q, qd, CITY_CHAPTERS[city]))
    level, spec = check_level(ok, qd)
    assert parse_level(ok) == level
    assert spec.chapters == tuple(sorted(CITY_CHAPTERS[city])) and spec.method == "choice"
    bad = {
        "a digest that is not the carried question's": (
            signed(city, 4, level_body(q, "ab" * 32, CITY_CHAPTERS[city])),
            "is not the carried question's digest",
        ),
        "a city the question does not list": (
            signed("https://elsewhere.example/actor", 4, level_body(q, qd, ("https://x/a",))),
            "is not listed by",
        ),
        "a chapter also at the level above": (
            signed(city, 4, level_body(q, qd, (CITY_CHAPTERS[city][0], CITIES[1]))),
            "already stand at the level above",
        ),
        "the city itself as one of its chapters": (
            signed(city, 4, level_body(q, qd, (city,))),
            "not itself",
        ),
        "no chapters": (signed(city, 4, level_body(q, qd, ())), "level spec"),
    }
    for why, (entry, message) in bad.items():
        with pytest.raises(ConveningError, match=message) as err:
            check_level(entry, qd)
        assert (err.value.actor, err.value.seq) == (entry["actor"], 4), why
    with pytest.raises(ConveningError, match="Level is malformed") as err2:
        parse_level({**ok, "chapters": "all"})
    assert (err2.value.actor, err2.value.seq) == (city, 4)


class Index:
    """The two fields check_decisions reads of a BundleIndex."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.by_id = {e["id"]: e for e in entries}
        self.decisions = [e for e in entries if e.get("type") == "Decision"]


def two_level_bundle() -> tuple[list[dict[str, Any]], ProposalSpec, str, dict[Any, Any]]:
    """A state with one city (two chapters) and one direct chapter, all signed."""
    q = state_question()
    qd = entry_digest(q)
    spec = parse_spec(q)
    city = CITIES[0]
    chapters = CITY_CHAPTERS[city][:2]
    level = signed(city, 4, level_body(q, qd, chapters))
    votes = {chapters[0]: ("Park", "Park"), chapters[1]: ("Garden",), DIRECT: ("Garden", "Garden")}
    tallies = {}
    for ch, picks in votes.items():
        t = make_tally(
            spec,
            chapter=ch,
            proposal=PROPOSAL,
            proposal_digest=qd,
            ballots=choices(*picks),
            receipts=[
                ballot_receipt(PROPOSAL, b, bytes([i]) * 32) for i, b in enumerate(choices(*picks))
            ],
            eligible=3,
            roster_root="77" * 32,
            roster_size=3,
        )
        tallies[(ch, PROPOSAL)] = (ch.encode().hex()[:64].ljust(64, "0"), t)
    lower_pairs = [tallies[(c, PROPOSAL)] for c in chapters]
    lower = aggregate(
        level_spec(spec, chapters), lower_pairs, proposal=PROPOSAL, proposal_digest=qd
    )
    city_decision = signed(city, 5, {"type": "Decision", **decision_body(lower)})
    up = upward_input(spec, city_decision, lower_pairs)
    top = aggregate(spec, [up, tallies[(DIRECT, PROPOSAL)]], proposal=PROPOSAL, proposal_digest=qd)
    state_decision = signed(STATE, 6, {"type": "Decision", **decision_body(top)})
    return [q, level, city_decision, state_decision], spec, qd, tallies


def test_the_audit_checks_each_level_and_names_a_tampered_city_decision() -> None:
    entries, spec, qd, tallies = two_level_bundle()
    q, level, city_decision, state_decision = entries
    plain_seen: list[list[dict[str, Any]]] = []

    def plain(b: Any, specs: Any, t: Any, findings: list[Finding]) -> list[str]:
        plain_seen.append(list(b.decisions))
        return []

    findings: list[Finding] = []
    specs = {PROPOSAL: (spec, qd)}
    ok = check_decisions(Index(entries), specs, tallies, findings, plain)
    assert findings == [] and set(ok) == {city_decision["id"], state_decision["id"]}
    assert plain_seen == [[]]  # both decisions were the nested check's
    # the state decision names the city's Decision entry digest as that city's tally
    assert entry_digest(city_decision) in state_decision["tallies"]
    assert state_decision["cast"] == 5 and state_decision["outcome"]["winner"] == "Garden"

    # a city decision altered after signing (re-signed by the city: a dishonest city)
    body = {
        k: v
        for k, v in city_decision.items()
        if k not in ("@context", "id", "actor", "seq", "prev", "published", "proof")
    }
    body["counts"] = {"votes": {"Park": 9, "Library": 0, "Garden": 1}}
    altered = signed(CITIES[0], 5, body)
    findings = []
    ok = check_decisions(
        Index([q, level, altered, state_decision]), specs, tallies, findings, plain
    )
    assert ok == []
    by_actor = {(f.actor, f.seq): f for f in findings}
    assert by_actor[(CITIES[0], 5)].what == "decision_mismatch"
    assert "counts" in by_actor[(CITIES[0], 5)].why
    assert by_actor[(STATE, 6)].what == "decision_mismatch"

    # a Level that lists a chapter the Question lists too is named, and not used
    bad_level = signed(CITIES[0], 4, level_body(q, qd, (DIRECT,)))
    findings = []
    check_decisions(
        Index([q, bad_level, city_decision, state_decision]), specs, tallies, findings, plain
    )
    assert any(f.what == "bad_level" and f.actor == CITIES[0] and f.seq == 4 for f in findings)
    # without a Level, the decisions are plain §8.5 ones
    assert plain_seen[-1] == [city_decision, state_decision]


def test_a_late_lower_decision_counts_at_its_level_but_not_above() -> None:
    q = {"closesAt": "2026-11-26T15:00:00Z", "tallies_due": "2026-11-26T15:00:10Z"}
    assert decisions_due(q) is not None and decisions_due({}) is None
    assert decisions_due(q).isoformat() == "2026-11-26T15:00:20+00:00"  # type: ignore[union-attr]
    assert decision_lateness(q, {"published": "2026-11-26T15:00:20Z"}) is None
    late = decision_lateness(q, {"published": "2026-11-26T15:00:21Z"})
    assert late is not None and "after lower decisions were due at 2026-11-26T15:00:20Z" in late
    assert decision_lateness(q, {"published": "soon"}) is not None

    entries, spec, qd, tallies = two_level_bundle()
    question, level, city_decision, state_decision = entries
    # the same bundle, but the Question (as the bundle indexes it) has deadlines and the
    # city decided too late
    timed = {**question, **q}
    body = {k: v for k, v in city_decision.items() if k in aggregate_fields(city_decision)}
    late_city = signed(CITIES[0], 5, body, published="2026-11-26T15:00:30Z")
    findings: list[Finding] = []
    ok = check_decisions(
        Index([timed, level, late_city, state_decision]),
        {PROPOSAL: (spec, qd)},
        tallies,
        findings,
        lambda *a: [],
    )
    # the city's decision still verifies at its level; the state's, which used it, not
    assert ok == [late_city["id"]]
    assert [(f.actor, f.what) for f in findings] == [(STATE, "decision_mismatch")]


def aggregate_fields(entry: dict[str, Any]) -> set[str]:
    envelope = {"@context", "id", "actor", "seq", "prev", "published", "proof"}
    return set(entry) - envelope
