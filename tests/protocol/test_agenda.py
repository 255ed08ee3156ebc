"""The bottom-up agenda (protocol.agenda, protocol.md §10.4)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.agenda import (
    TRANSITIONS,
    before_close,
    close_body,
    closed_by,
    compute_agenda,
    config_body,
    items_voted,
    parse_close,
    parse_sponsorship,
    parse_submission,
    sponsorship_body,
    submission_body,
)
from protocol.audit import audit_bundle
from protocol.audit_agenda import DROPPED
from protocol.ballots import ProposalSpec, spec_fields
from protocol.bundle import EntryRecord
from protocol.chain import entry_digest, genesis
from protocol.entries import key_id, make_entry
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


# --- the close (AgendaClose) -----------------------------------------------------------


def test_a_close_by_the_region_closes_its_agenda() -> None:
    cfg = config()
    close = sign(close_body(source(cfg).digest), REGION, seq=20)
    assert parse_close(cfg, close).config == source(cfg).digest
    assert closed_by(cfg, [close]) is True
    assert closed_by(cfg, []) is False


def test_a_close_by_another_actor_or_of_another_agenda_is_refused() -> None:
    cfg = config()
    other = sign(config_body("another", CHAPTERS[:2]), REGION, seq=9)
    by_chapter = sign(close_body(source(cfg).digest), CHAPTERS[0], seq=7)
    with pytest.raises(ConveningError, match="which opened this agenda, closes it") as err:
        closed_by(cfg, [by_chapter])
    assert (err.value.actor, err.value.seq) == (CHAPTERS[0], 7)
    wrong = sign(close_body(source(other).digest), REGION, seq=21)
    with pytest.raises(ConveningError, match="closes config") as err:
        parse_close(cfg, wrong)
    assert (err.value.actor, err.value.seq) == (REGION, 21)
    bad = {**sign(close_body(source(cfg).digest), REGION, seq=22), "config": "XY"}
    with pytest.raises(ConveningError, match="AgendaClose is malformed"):
        parse_close(cfg, bad)
    with pytest.raises(ConveningError, match="malformed"):
        close_body("not a digest")


# --- the audit: a dropped item is a finding against the region ----------------------------

T0 = "2026-11-26T15:00:00Z"


class Chain:
    """One actor's chain from its genesis, built with the real builders."""

    def __init__(self, actor: str, kind: str) -> None:
        self.actor = actor
        self.key = SigningKey.from_seed(hashlib.sha256(actor.encode()).digest())
        self.entries: list[dict[str, Any]] = [genesis(actor, actor, kind, self.key, T0)]

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = make_entry(
            body,
            actor=self.actor,
            seq=len(self.entries),
            prev=entry_digest(self.entries[-1]),
            key=self.key,
            key_id=key_id(self.actor, 0),
            published=T0,
        )
        self.entries.append(entry)
        return entry


def convening(vote_on_transit: bool, close: bool = True) -> dict[str, Any]:
    """A region and three chapters: two items, "Free transit" qualifies (2 of 2 needed)."""
    region = Chain(REGION, "region")
    chapters = [Chain(c, "chapter") for c in CHAPTERS[:3]]
    cfg = region.append(config_body("Autumn", [c.actor for c in chapters], min_sponsors=2))
    digest = entry_digest(cfg)
    transit = chapters[0].append(submission_body(REGION, digest, "Free transit"))
    library = chapters[1].append(submission_body(REGION, digest, "Library hours"))
    chapters[2].append(sponsorship_body(REGION, digest, entry_digest(transit)))
    if vote_on_transit:
        spec = spec_fields(ProposalSpec(method="consent", scope="regional", chapters=CHAPTERS[:3]))
        region.append(
            {"type": "Question", "name": "Transit", **spec, "agenda_item": entry_digest(transit)}
        )
    closing = region.append(close_body(digest)) if close else None
    records: list[Any] = [EntryRecord(entry=e) for c in (region, *chapters) for e in c.entries]
    return {
        "records": records,
        "config": digest,
        "transit": entry_digest(transit),
        "library": entry_digest(library),
        "close": closing,
        "chapters": chapters,
        "region": region,
    }


def test_the_audit_names_a_qualified_item_closed_without_a_vote() -> None:
    world = convening(vote_on_transit=False)
    report = audit_bundle(world["records"])
    assert not report.ok
    (finding,) = report.findings
    assert (finding.actor, finding.seq, finding.what) == (REGION, world["close"]["seq"], DROPPED)
    assert world["config"] in finding.why and world["transit"] in finding.why
    assert "Free transit" in finding.why and world["library"] not in finding.why


def test_the_audit_passes_an_agenda_whose_qualified_items_were_voted_or_still_open() -> None:
    assert audit_bundle(convening(vote_on_transit=True)["records"]).ok
    assert audit_bundle(convening(vote_on_transit=False, close=False)["records"]).ok


def test_the_audit_names_agenda_entries_that_break_the_rules() -> None:
    world = convening(vote_on_transit=True, close=False)
    outsider = Chain("https://outsider.example/actor", "chapter")
    sneaked = outsider.append(submission_body(REGION, world["config"], "Sneaked in"))
    cedar = world["chapters"][2]
    orphan = cedar.append(sponsorship_body(REGION, world["config"], "ab" * 32))
    by_chapter = cedar.append(close_body(world["config"]))
    records = world["records"] + [
        EntryRecord(entry=e) for e in (*outsider.entries, orphan, by_chapter)
    ]
    named = {(f.actor, f.seq, f.what) for f in audit_bundle(records).findings}
    assert named == {
        (outsider.actor, sneaked["seq"], "bad_agenda_entry"),
        (cedar.actor, orphan["seq"], "bad_agenda_entry"),
        (cedar.actor, by_chapter["seq"], "bad_agenda_entry"),
    }


def test_a_tampered_close_is_a_chain_finding_not_an_agenda_one() -> None:
    world = convening(vote_on_transit=False)
    records = [
        EntryRecord(entry={**r.entry, "config": "cd" * 32})
        if r.entry.get("type") == "AgendaClose"
        else r
        for r in world["records"]
    ]
    whats = {f.what for f in audit_bundle(records).findings}
    assert DROPPED not in whats and whats  # the close's proof fails: it closes nothing


def test_items_and_sponsorships_signed_after_the_close_do_not_count() -> None:
    cfg = config(min_sponsors=2)
    late = "2026-11-26T16:00:00Z"
    a = submit(cfg, CHAPTERS[0], "Rent control")  # published WHEN, before the close
    b = {**submit(cfg, CHAPTERS[1], "Free transit"), "published": late}
    sp_a = {**sponsor(cfg, CHAPTERS[2], a), "published": late}
    sp_b = sponsor(cfg, CHAPTERS[3], b)
    close = {**sign(close_body(source(cfg).digest), REGION, seq=20), "published": WHEN}
    subs, sps = before_close([a, b], [sp_a, sp_b], [close])
    assert subs == [a] and sps == []  # b is late, so its sponsorship is too
    agenda = compute_agenda(cfg, subs, sps, [], closed=True)
    assert [(i.title, i.status) for i in agenda.items] == [("Rent control", "submitted")]
    # with no close, everything counts
    assert before_close([a, b], [sp_a, sp_b], []) == ([a, b], [sp_a, sp_b])


def test_the_audit_ignores_an_item_signed_after_the_close() -> None:
    world = convening(vote_on_transit=True)  # transit voted; closes at T0
    region, chapters = world["region"], world["chapters"]
    late = make_entry(
        submission_body(REGION, world["config"], "Too late"),
        actor=chapters[1].actor,
        seq=len(chapters[1].entries),
        prev=entry_digest(chapters[1].entries[-1]),
        key=chapters[1].key,
        key_id=key_id(chapters[1].actor, 0),
        published="2026-11-26T18:00:00Z",
    )
    chapters[1].entries.append(late)
    chapters[0].append(sponsorship_body(REGION, world["config"], entry_digest(late)))
    records = [EntryRecord(entry=e) for c in (region, *chapters) for e in c.entries]
    assert audit_bundle(records).ok  # qualified only by entries signed after the close


TIMES = [f"2026-11-26T1{h}:00:00Z" for h in range(5)]


def signed_at(body: dict[str, Any], actor: str, seq: int, published: str) -> dict[str, Any]:
    key = SigningKey.from_seed(actor.encode().ljust(32, b"\0")[:32])
    return make_entry(
        body,
        actor=actor,
        seq=seq,
        prev="00" * 32,
        key=key,
        key_id=f"{actor}#ed25519-0",
        published=published,
    )


@given(
    st.lists(st.sampled_from(TIMES), min_size=3, max_size=3),
    st.lists(
        st.tuples(st.sampled_from(range(3)), st.sampled_from(range(5)), st.sampled_from(TIMES))
    ),
    st.lists(st.sampled_from(TIMES), max_size=3),
    st.randoms(use_true_random=False),
)
@settings(max_examples=40, deadline=None)
def test_the_cut_at_the_close_is_independent_of_order(
    item_times: list[str],
    sp_picks: list[tuple[int, int, str]],
    close_times: list[str],
    rnd: Any,
) -> None:
    digest = source(CFG).digest
    items = [
        signed_at(submission_body(REGION, digest, f"Item {i}"), CHAPTERS[i], 4, t)
        for i, t in enumerate(item_times)
    ]
    sps = [
        signed_at(sponsorship_body(REGION, digest, source(items[i]).digest), CHAPTERS[c], 6, t)
        for i, c, t in sp_picks
    ]
    closes = [signed_at(close_body(digest), REGION, 30 + n, t) for n, t in enumerate(close_times)]
    subs, kept = before_close(items, sps, closes)
    cut = min(close_times, default="9999")
    # the rule, restated plainly: signed no later than the earliest close, and a
    # sponsorship only of an item that counts
    assert subs == [e for e in items if e["published"] <= cut]
    counted = {source(e).digest for e in subs}
    assert kept == [e for e in sps if e["published"] <= cut and e["item"] in counted]
    agenda = compute_agenda(CFG, subs, kept, [], closed=bool(closes))
    shuffled = [list(items), list(sps), list(closes)]
    for part in shuffled:
        rnd.shuffle(part)
    subs2, kept2 = before_close(*shuffled)
    assert compute_agenda(CFG, subs2, kept2, [], closed=bool(closes)) == agenda
