"""audit_bundle: a valid bundle passes; every kind of tampering is named (actor, seq, what).

Bundles are built with the real protocol/ builders: chain genesis and entries, roster
changes, a regional proposal, open ballots with receipts, signed tallies, a decision,
and a local secret vote with receipts only.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.aggregate import aggregate, decision_body
from protocol.audit import AuditReport, audit_bundle
from protocol.ballots import ProposalSpec, ballot_receipt, spec_fields, validate_ballot
from protocol.bundle import (
    ActorRecord,
    BallotRecord,
    Body,
    EntryRecord,
    ReceiptRecord,
    encode_bundle,
    header,
    parse_bundle,
)
from protocol.chain import entry_digest, genesis, rotation
from protocol.counting import make_tally
from protocol.entries import accept_body, key_id, make_entry, multikey, roster_change_body
from protocol.keys import SigningKey
from protocol.roster import roster_at, roster_root
from protocol.tally import tally_body

T0 = "2026-11-26T14:00:00Z"
REGION = "https://region.example/actor"
CH_A = "https://a.example/actor"
CH_B = "https://b.example/actor"


def seed(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


class Chain:
    """One actor's chain, appended with the real builders."""

    def __init__(self, actor: str, kind: str) -> None:
        self.actor = actor
        self.key = SigningKey(seed(actor))
        self.kid = key_id(actor, 0)
        self.entries: list[dict[str, Any]] = [genesis(actor, actor, kind, self.key, T0)]

    @property
    def head(self) -> str:
        return entry_digest(self.entries[-1])

    def append(self, body: dict[str, Any], published: str = T0) -> dict[str, Any]:
        entry = make_entry(
            body,
            actor=self.actor,
            seq=len(self.entries),
            prev=self.head,
            key=self.key,
            key_id=self.kid,
            published=published,
        )
        self.entries.append(entry)
        return entry

    def rotate(self, new: SigningKey) -> dict[str, Any]:
        seq = len(self.entries)
        entry = rotation(self.actor, seq, self.head, self.key, self.kid, new.verify_key, T0)
        self.entries.append(entry)
        self.key, self.kid = new, key_id(self.actor, seq)
        return entry

    def actor_document(self) -> dict[str, Any]:
        return {
            "id": self.actor,
            "type": "Group",
            "outbox": f"{self.actor}/outbox",
            "assertionMethod": [
                multikey(self.actor, int(self.kid.rsplit("-", 1)[1]), self.key.verify_key)
            ],
        }


def cast(
    chain: Chain, question: dict[str, Any], spec: ProposalSpec, votes: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], list[Body]]:
    """Members vote, the chapter signs a tally; returns the tally entry and ballot records."""
    proposal = question["id"]
    records: list[Body] = []
    ballots = []
    for member, raw in votes.items():
        nonce = seed(member + proposal)
        ballot = validate_ballot(spec, raw)
        receipt = ballot_receipt(proposal, ballot, nonce)
        ballots.append(ballot)
        if spec.secret:
            records.append(ReceiptRecord(actor=chain.actor, proposal=proposal, receipt=receipt))
        else:
            records.append(
                BallotRecord(
                    actor=chain.actor,
                    proposal=proposal,
                    member=member,
                    ballot=raw,
                    nonce=nonce.hex(),
                    receipt=receipt,
                )
            )
    roster = roster_at(chain.entries)
    size, root = roster_root(roster)
    receipts = [r.receipt for r in records if isinstance(r, BallotRecord | ReceiptRecord)]
    tally = make_tally(
        spec,
        chapter=chain.actor,
        proposal=proposal,
        proposal_digest=entry_digest(question),
        ballots=ballots,
        receipts=receipts,
        eligible=size,
        roster_root=root,
        roster_size=size,
    )
    entry = chain.append({"type": "Tally", **tally_body(tally)})
    return entry, records


def build() -> dict[str, Any]:
    """A region, two chapters, a regional open vote with its decision, a local secret vote."""
    region, a, b = Chain(REGION, "region"), Chain(CH_A, "chapter"), Chain(CH_B, "chapter")
    for ch in (a, b):
        region.append(accept_body(f"{ch.actor}/follows/1", ch.actor))
    for ch, members in ((a, ["a1", "a2", "a3"]), (b, ["b1", "b2", "b3", "b4"])):
        for m in members:
            ch.append(roster_change_body("add", m, "member"))
    spec = ProposalSpec(
        method="choice",
        options=("parks", "transit"),
        scope="regional",
        rule="pooled",
        chapters=(CH_A, CH_B),
    )
    question = region.append({"type": "Question", "name": "Budget", **spec_fields(spec)})
    tally_a, ballots_a = cast(
        a,
        question,
        spec,
        {"a1": {"choice": "parks"}, "a2": {"choice": "transit"}, "a3": {"choice": "parks"}},
    )
    tally_b, ballots_b = cast(
        b, question, spec, {"b1": {"choice": "transit"}, "b2": {"choice": "parks"}}
    )
    decision = aggregate(
        spec,
        [(entry_digest(t), _tally(t)) for t in (tally_a, tally_b)],
        proposal=question["id"],
        proposal_digest=entry_digest(question),
    )
    region.append({"type": "Decision", **decision_body(decision)})
    secret = ProposalSpec(method="consent", secret=True)
    local = a.append({"type": "Question", "name": "Picnic", **spec_fields(secret)})
    _, receipts_a = cast(a, local, secret, {"a1": {"choice": "agree"}, "a2": {"choice": "block"}})
    records: list[Body] = [ActorRecord(document=c.actor_document()) for c in (region, a, b)]
    for c in (region, a, b):
        records += [EntryRecord(entry=e) for e in c.entries]
    records += ballots_a + ballots_b + receipts_a
    return {"records": records, "region": region, "a": a, "b": b, "question": question}


def _tally(entry: dict[str, Any]) -> Any:
    from protocol.tally import parse_tally

    return parse_tally(entry)


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    return build()


def audit(records: list[Body], **kw: Any) -> AuditReport:
    return audit_bundle(copy.deepcopy(records), **kw)


def first(report: AuditReport) -> tuple[str, int | None, str]:
    assert not report.ok, "tampering went unnoticed"
    f = report.findings[0]
    return f.actor, f.seq, f.what


def entries_of(records: list[Body], actor: str) -> list[int]:
    return [
        i for i, r in enumerate(records) if isinstance(r, EntryRecord) and r.entry["actor"] == actor
    ]


def find_entry(records: list[Body], actor: str, kind: str) -> int:
    return next(i for i in entries_of(records, actor) if records[i].entry["type"] == kind)  # type: ignore[union-attr]


# --- the valid bundle -------------------------------------------------------------------


def test_a_valid_bundle_passes_and_everything_is_counted(world: dict[str, Any]) -> None:
    report = audit(world["records"])
    assert report.findings == ()
    assert report.ok
    n_entries = sum(isinstance(r, EntryRecord) for r in world["records"])
    assert report.seen == report.verified
    assert report.verified.actors == 3
    assert report.verified.entries == n_entries
    assert report.verified.proposals == 2
    assert report.verified.tallies == 3
    assert report.verified.decisions == 1
    assert report.verified.ballots == 5
    assert report.verified.receipts == 2
    assert report.recounted == 3
    assert report.equivocating == ()


def test_the_bundle_survives_encoding(world: dict[str, Any]) -> None:
    _, body = parse_bundle(encode_bundle(header(REGION, T0), world["records"]))
    assert audit_bundle(body).ok


def test_a_mapper_gives_the_same_report(world: dict[str, Any]) -> None:
    calls: list[int] = []

    def mapper(fn: Any, items: Any) -> Any:
        items = list(items)
        calls.append(len(items))
        return [fn(i) for i in items]

    assert audit(world["records"], mapper=mapper) == audit(world["records"])
    assert calls == [3, 3]  # three chains, three tallies


# --- tampering: one test each -------------------------------------------------------------


def _edit_entry(records: list[Body], index: int, **changes: Any) -> list[Body]:
    out = copy.deepcopy(records)
    entry = out[index].entry  # type: ignore[union-attr]
    entry.update(changes)
    return out


def test_a_changed_count_is_a_bad_proof(world: dict[str, Any]) -> None:
    recs = world["records"]
    i = find_entry(recs, CH_A, "Tally")
    counts = recs[i].entry["counts"]
    forged = _edit_entry(recs, i, counts={"votes": {**counts["votes"], "parks": 3}})
    actor, seq, what = first(audit(forged))
    assert (actor, seq, what) == (CH_A, recs[i].entry["seq"], "bad_proof")


def test_a_flipped_byte_in_a_proof_is_named(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i = find_entry(recs, CH_B, "RosterChange")
    proof = recs[i].entry["proof"]
    value = proof["proofValue"]
    proof["proofValue"] = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    report = audit(recs)
    assert first(report) == (CH_B, recs[i].entry["seq"], "bad_proof")
    assert report.verified.entries < report.seen.entries


def test_a_removed_entry_is_a_gap(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i = entries_of(recs, CH_B)[2]
    seq = recs[i].entry["seq"]
    del recs[i]
    assert first(audit(recs)) == (CH_B, seq + 1, "gap")


def test_two_swapped_entries_break_the_links(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i, j = entries_of(recs, CH_A)[1:3]
    ei, ej = recs[i].entry, recs[j].entry  # type: ignore[union-attr]
    ei["seq"], ej["seq"] = ej["seq"], ei["seq"]  # the swap an editor would make
    actor, seq, what = first(audit(recs))
    assert (actor, seq) == (CH_A, 1) and what in ("malformed", "bad_prev", "bad_proof")


def test_a_forked_seq_is_an_equivocation(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    a: Chain = world["a"]
    fork = make_entry(
        roster_change_body("add", "ghost", "member"),
        actor=CH_A,
        seq=2,
        prev=entry_digest(a.entries[1]),
        key=a.key,
        key_id=a.kid,
        published=T0,
    )
    recs.append(EntryRecord(entry=fork))
    report = audit(recs)
    assert report.equivocating == (CH_A,)
    assert any(f.what == "equivocation" and f.seq == 2 for f in report.findings)


def test_a_tally_root_that_does_not_match_its_ballots(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i = next(k for k, r in enumerate(recs) if isinstance(r, BallotRecord) and r.actor == CH_B)
    rec = recs[i]
    assert isinstance(rec, BallotRecord)
    # the same vote with another nonce: the receipt is honest but not a leaf of the tally
    nonce = seed("other").hex()
    receipt = ballot_receipt(
        rec.proposal,
        validate_ballot(ProposalSpec(method="choice", options=("parks", "transit")), rec.ballot),
        bytes.fromhex(nonce),
    )
    recs[i] = BallotRecord(
        actor=rec.actor,
        proposal=rec.proposal,
        member=rec.member,
        ballot=rec.ballot,
        nonce=nonce,
        receipt=receipt,
    )
    tally_seq = recs[find_entry(recs, CH_B, "Tally")].entry["seq"]
    assert first(audit(recs)) == (CH_B, tally_seq, "ballots_root_mismatch")


def test_a_changed_ballot_no_longer_matches_its_receipt(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i = next(k for k, r in enumerate(recs) if isinstance(r, BallotRecord) and r.member == "a1")
    rec = recs[i]
    assert isinstance(rec, BallotRecord)
    recs[i] = BallotRecord(
        actor=rec.actor,
        proposal=rec.proposal,
        member=rec.member,
        ballot={"choice": "transit"},
        nonce=rec.nonce,
        receipt=rec.receipt,
    )
    report = audit(recs)
    whats = {f.what for f in report.findings}
    assert first(report)[:2] == (CH_A, recs[find_entry(recs, CH_A, "Tally")].entry["seq"])
    assert {"bad_ballot", "count_mismatch"} <= whats


def test_a_decision_that_does_not_follow_from_its_tallies(world: dict[str, Any]) -> None:
    region: Chain = copy.deepcopy(world["region"])
    decision = region.entries.pop()
    body = {
        k: v
        for k, v in decision.items()
        if k not in ("@context", "id", "actor", "seq", "prev", "published", "proof")
    }
    body["outcome"] = {**body["outcome"], "winner": "transit"}
    forged = region.append(body)  # properly signed by the region: only the numbers lie
    recs = [
        r
        for r in world["records"]
        if not (isinstance(r, EntryRecord) and r.entry["id"] == decision["id"])
    ]
    recs.append(EntryRecord(entry=forged))
    assert first(audit(recs)) == (REGION, forged["seq"], "decision_mismatch")


def test_an_entry_signed_with_a_retired_key(world: dict[str, Any]) -> None:
    b: Chain = copy.deepcopy(world["b"])
    old_key, old_kid = b.key, b.kid
    b.rotate(SigningKey(seed("new key of b")))
    late = make_entry(
        roster_change_body("add", "b9", "member"),
        actor=CH_B,
        seq=len(b.entries),
        prev=b.head,
        key=old_key,
        key_id=old_kid,
        published=T0,
    )
    b.entries.append(late)
    recs = [
        r for r in world["records"] if not (isinstance(r, EntryRecord) and r.entry["actor"] == CH_B)
    ]
    recs += [EntryRecord(entry=e) for e in b.entries]
    report = audit(recs)
    assert (CH_B, late["seq"], "retired_key") in {(f.actor, f.seq, f.what) for f in report.findings}


def test_a_rotated_key_is_honoured_when_used_properly(world: dict[str, Any]) -> None:
    b: Chain = copy.deepcopy(world["b"])
    b.rotate(SigningKey(seed("new key of b")))
    b.append(roster_change_body("add", "b9", "member"))
    recs = [
        r
        for r in world["records"]
        if not (isinstance(r, EntryRecord) and r.entry["actor"] == CH_B)
        and not (isinstance(r, ActorRecord) and r.document["id"] == CH_B)
    ]
    recs += [EntryRecord(entry=e) for e in b.entries] + [ActorRecord(document=b.actor_document())]
    assert audit(recs).findings == ()


def test_an_actor_document_with_a_swapped_key(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i = next(
        k for k, r in enumerate(recs) if isinstance(r, ActorRecord) and r.document["id"] == CH_A
    )
    doc = recs[i].document  # type: ignore[union-attr]
    doc["assertionMethod"] = [multikey(CH_A, 0, SigningKey(seed("intruder")).verify_key)]
    assert first(audit(recs)) == (CH_A, None, "actor_key_mismatch")


def test_a_tally_with_a_wrong_roster(world: dict[str, Any]) -> None:
    a: Chain = copy.deepcopy(world["a"])
    # drop the last RosterChange but keep signing honestly: the tally's roster claim now lies
    tally = next(e for e in a.entries if e["type"] == "Tally")
    cut = [e for e in a.entries if e["seq"] < tally["seq"] and e["seq"] != tally["seq"] - 1]
    rebuilt = Chain(CH_A, "chapter")
    for e in cut[1:]:
        rebuilt.append(
            {
                k: v
                for k, v in e.items()
                if k not in ("@context", "id", "actor", "seq", "prev", "published", "proof")
            }
        )
    rebuilt.append(
        {
            k: v
            for k, v in tally.items()
            if k not in ("@context", "id", "actor", "seq", "prev", "published", "proof")
        }
    )
    recs = [
        r for r in world["records"] if not (isinstance(r, EntryRecord) and r.entry["actor"] == CH_A)
    ]
    recs += [EntryRecord(entry=e) for e in rebuilt.entries]
    whats = {(f.actor, f.what) for f in audit(recs).findings}
    assert (CH_A, "roster_mismatch") in whats


def test_secret_ballots_must_not_be_disclosed(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    rec = next(r for r in recs if isinstance(r, ReceiptRecord))
    local = rec.proposal
    nonce = seed("a1" + local)
    recs = [r for r in recs if not isinstance(r, ReceiptRecord)]
    for member, choice in (("a1", "agree"), ("a2", "block")):
        nonce = seed(member + local)
        receipt = ballot_receipt(
            local, validate_ballot(ProposalSpec(method="consent"), {"choice": choice}), nonce
        )
        recs.append(
            BallotRecord(
                actor=CH_A,
                proposal=local,
                member=member,
                ballot={"choice": choice},
                nonce=nonce.hex(),
                receipt=receipt,
            )
        )
    assert "secret_ballot_disclosed" in {f.what for f in audit(recs).findings}


# --- receipts -------------------------------------------------------------------------------


def test_a_receipt_is_proved_included(world: dict[str, Any]) -> None:
    rec = next(r for r in world["records"] if isinstance(r, BallotRecord) and r.member == "b2")
    assert isinstance(rec, BallotRecord)
    report = audit(world["records"], receipt=rec.receipt)
    assert report.ok
    assert report.receipt is not None and report.receipt.included
    assert (report.receipt.actor, report.receipt.tree_size) == (CH_B, 2)


def test_a_secret_receipt_is_proved_included(world: dict[str, Any]) -> None:
    rec = next(r for r in world["records"] if isinstance(r, ReceiptRecord))
    report = audit(world["records"], receipt=rec.receipt)
    assert report.ok and report.receipt is not None and report.receipt.included


def test_an_unknown_receipt_fails(world: dict[str, Any]) -> None:
    report = audit(world["records"], receipt="ab" * 32)
    assert report.receipt is not None and not report.receipt.included
    assert [f.what for f in report.findings] == ["receipt_not_included"]


def test_findings_are_in_a_stable_order(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    for r in recs:
        if isinstance(r, EntryRecord) and r.entry["type"] == "RosterChange":
            r.entry["member"] += "x"
    one = audit(recs).findings
    two = audit(list(reversed(recs))).findings
    assert one == two and len(one) >= 2
    keys = [(f.actor, f.seq is None, f.seq or 0) for f in one]
    assert keys == sorted(keys)


def test_an_identical_copy_of_an_entry_counts_once(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    recs.append(copy.deepcopy(recs[find_entry(recs, CH_A, "Tally")]))
    report = audit(recs)
    assert report.ok and report.seen == report.verified


# --- the worked example of docs/auditing.md ------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "auditing.md"


def docs_example() -> bytes:
    text = DOCS.read_text()
    start = text.index("```jsonl\n") + len("```jsonl\n")
    return text[start : text.index("```", start)].encode()


def test_the_documented_example_audits_clean() -> None:
    _, body = parse_bundle(docs_example())
    report = audit_bundle(body)
    assert report.ok and report.verified.ballots == 2 and report.recounted == 1


def test_the_documented_example_with_a_flipped_proof_byte_fails() -> None:
    data = docs_example()
    at = data.index(b'"proofValue":"z') + 20  # inside the genesis signature
    flipped = data[:at] + (b"2" if data[at : at + 1] != b"2" else b"3") + data[at + 1 :]
    _, body = parse_bundle(flipped)
    assert first(audit_bundle(body)) == ("https://riverside.example/actor", 0, "bad_genesis")


def test_a_second_tally_of_one_proposal_by_one_chapter(world: dict[str, Any]) -> None:
    b: Chain = copy.deepcopy(world["b"])
    tally = next(e for e in b.entries if e["type"] == "Tally")
    envelope = ("@context", "id", "actor", "seq", "prev", "published", "proof")
    again = b.append({k: v for k, v in tally.items() if k not in envelope})
    recs = [
        r for r in world["records"] if not (isinstance(r, EntryRecord) and r.entry["actor"] == CH_B)
    ]
    recs += [EntryRecord(entry=e) for e in b.entries]
    report = audit(recs)
    assert (CH_B, again["seq"], "duplicate_tally") in {
        (f.actor, f.seq, f.what) for f in report.findings
    }
    assert audit(list(reversed(recs))).findings == report.findings


def test_a_decision_is_not_verified_from_a_forged_tally(world: dict[str, Any]) -> None:
    recs = world["records"]
    i = find_entry(recs, CH_B, "Tally")
    forged = _edit_entry(recs, i, cast=1)
    whats = {(f.actor, f.what) for f in audit(forged).findings}
    assert (CH_B, "bad_proof") in whats and (REGION, "decision_mismatch") in whats


# --- whatever is changed, the audit answers with findings, never an exception ----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_edit_of_any_record_is_answered_with_findings(
    world: dict[str, Any], data: st.DataObject
) -> None:
    recs = copy.deepcopy(world["records"])
    index = data.draw(st.integers(0, len(recs) - 1))
    record = recs[index]
    target: dict[str, Any]
    if isinstance(record, EntryRecord):
        target = record.entry
    elif isinstance(record, ActorRecord):
        target = record.document
    elif isinstance(record, BallotRecord):
        target = record.ballot
    else:
        return
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=5))
    value = data.draw(json_values)
    changed = target.get(key, object()) != value
    target[key] = value
    report = audit_bundle(recs)  # must not raise
    if changed and not isinstance(record, ActorRecord):
        # entries are signed and ballots hashed into receipts: any change shows
        # (an actor document is only checked for its key)
        assert not report.ok


def test_progress_counts_every_entry_ballot_and_receipt(world: dict[str, Any]) -> None:
    done: list[int] = []
    audit(world["records"], progress=done.append)
    checked = sum(
        isinstance(r, EntryRecord | BallotRecord | ReceiptRecord) for r in world["records"]
    )
    assert sum(done) == checked and len(done) == 6  # three chains, three tallies


def test_an_unsigned_copy_cannot_frame_an_actor_as_equivocating(world: dict[str, Any]) -> None:
    recs = copy.deepcopy(world["records"])
    i = find_entry(recs, CH_A, "Tally")
    genuine = recs[i].entry  # type: ignore[union-attr]
    forged = copy.deepcopy(genuine)
    forged["counts"] = {"votes": {"parks": 0, "transit": 3}}  # not re-signed
    recs.insert(0, EntryRecord(entry=forged))  # first in the file, so read first
    report = audit(recs)
    assert report.equivocating == ()
    assert [(f.actor, f.seq, f.what) for f in report.findings] == [
        (CH_A, genuine["seq"], "bad_proof")
    ]
    assert "forgery" in report.findings[0].why
    # the genuine tally, not the forged one, was recounted and fed the decision
    assert report.verified.tallies == 3 and report.verified.decisions == 1


def test_a_late_tally_does_not_count_in_the_decision() -> None:
    """The proposal says when tallies are due; one published after it is left out."""
    region, a, b = Chain(REGION, "region"), Chain(CH_A, "chapter"), Chain(CH_B, "chapter")
    for ch, member in ((a, "a1"), (b, "b1")):
        ch.append(roster_change_body("add", member, "member"))
    spec = ProposalSpec(method="consent", scope="regional", chapters=(CH_A, CH_B))
    fields = {"type": "Question", "name": "Q", "tallies_due": "2026-11-26T14:10:00Z"}
    question = region.append({**fields, **spec_fields(spec)})
    tally_a, recs_a = cast(a, question, spec, {"a1": {"choice": "agree"}})
    _, recs_b = cast(b, question, spec, {"b1": {"choice": "disagree"}})
    late = b.entries.pop()  # re-sign B's tally as published after the due time
    envelope = ("@context", "id", "actor", "seq", "prev", "published", "proof")
    tally_b = b.append({k: v for k, v in late.items() if k not in envelope}, "2026-11-26T14:20:00Z")

    def bundle_with(tallies: list[dict[str, Any]]) -> list[Body]:
        decision = aggregate(
            spec,
            [(entry_digest(t), _tally(t)) for t in tallies],
            proposal=question["id"],
            proposal_digest=entry_digest(question),
        )
        r = copy.deepcopy(region)
        r.append({"type": "Decision", **decision_body(decision)})
        records: list[Body] = [EntryRecord(entry=e) for c in (r, a, b) for e in c.entries]
        return records + recs_a + recs_b

    on_time_only = audit(bundle_with([tally_a]))
    assert on_time_only.findings == () and on_time_only.verified.decisions == 1
    counting_late = audit(bundle_with([tally_a, tally_b]))
    assert [f.what for f in counting_late.findings] == ["decision_mismatch"]


def test_a_question_whose_deadline_is_no_time_is_a_bad_proposal() -> None:
    region = Chain(REGION, "region")
    spec = ProposalSpec(method="consent", scope="regional", chapters=(CH_A,))
    body = {"type": "Question", "name": "Q", "tallies_due": "after lunch", **spec_fields(spec)}
    question = region.append(body)
    report = audit([EntryRecord(entry=e) for e in region.entries])
    assert [(f.actor, f.seq, f.what) for f in report.findings] == [
        (REGION, question["seq"], "bad_proposal")
    ]
    assert "tallies_due" in report.findings[0].why


def test_the_exporter_named_in_the_header_must_have_its_chain_in_the_bundle(
    world: dict[str, Any],
) -> None:
    honest = [header(CH_A, T0), *world["records"]]
    assert audit(honest).ok  # type: ignore[arg-type]
    missing = [header("https://elsewhere.example/actor", T0), *world["records"]]
    report = audit(missing)  # type: ignore[arg-type]
    assert [(f.actor, f.what) for f in report.findings] == [
        ("https://elsewhere.example/actor", "exporter_without_chain")
    ]


def test_an_entry_that_cannot_be_canonicalized_is_named_not_dropped(
    world: dict[str, Any],
) -> None:
    # An integer beyond 2**53 has no exact JSON number form, so the entry has no digest
    # and joins no chain; at a chain's head nothing else would notice it is gone.
    recs = copy.deepcopy(world["records"])
    decision = next(r for r in recs if isinstance(r, EntryRecord) and r.entry["type"] == "Decision")
    decision.entry["@context"] = 2**53
    assert first(audit(recs)) == (REGION, decision.entry["seq"], "malformed")
