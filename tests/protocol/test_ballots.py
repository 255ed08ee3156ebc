"""Proposal specs, ballot validation, receipts and the ballots root (protocol.ballots)."""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.ballots import (
    ApprovalBallot,
    ChoiceBallot,
    ConsentBallot,
    ProposalSpec,
    RankedBallot,
    ReceiptProof,
    ScoreBallot,
    ballot_receipt,
    ballots_root,
    parse_fraction,
    parse_spec,
    receipt_proof,
    spec_fields,
    validate_ballot,
    validate_spec,
    verify_receipt,
)
from protocol.errors import BallotError, MerkleError
from protocol.merkle import EMPTY_ROOT, root

OPTIONS = ("Park", "Library", "Garden")
SPECS = {
    m: ProposalSpec(method=m, options=OPTIONS) for m in ("choice", "approval", "ranked", "score")
}
SPECS["consent"] = ProposalSpec(method="consent")
PROPOSAL = "https://chapter.example/proposals/7"


# --- fractions and specs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("1/2", Fraction(1, 2)), ("2/3", Fraction(2, 3)), ("0/1", Fraction(0)), ("5/5", Fraction(1))],
)
def test_parse_fraction(text: str, value: Fraction) -> None:
    assert parse_fraction(text) == value


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("3/2", "above 1"),
        ("1/0", "'a/b'"),
        ("0.5", "'a/b'"),
        (" 1/2", "'a/b'"),
        ("-1/2", "'a/b'"),
        ("01/2", "'a/b'"),
        (0.5, "must be a string"),
    ],
)
def test_parse_fraction_rejects(text: object, why: str) -> None:
    with pytest.raises(BallotError, match=why):
        parse_fraction(text, "threshold")


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (ProposalSpec(method="choice", options=("A",)), "at least 2 options, got 1"),
        (ProposalSpec(method="ranked", options=("A", "A")), "'A' is listed twice"),
        (ProposalSpec(method="score", options=("A", " ")), "option 1 is empty"),
        (ProposalSpec(method="consent", options=("A", "B")), "has no options"),
        (ProposalSpec(method="consent", threshold="4/3"), "threshold 4/3 is above 1"),
        (ProposalSpec(method="consent", quorum="half"), "quorum must be 'a/b'"),
        (ProposalSpec(method="consent", block_limit=-1), "block_limit"),
        (ProposalSpec(method="consent", scope="regional"), "must list the chapters"),
        (
            ProposalSpec(method="consent", scope="regional", chapters=("https://a", "https://a")),
            "lists a chapter twice",
        ),
    ],
)
def test_validate_spec_rejects(spec: ProposalSpec, why: str) -> None:
    with pytest.raises(BallotError, match=why):
        validate_spec(spec)


def test_parse_spec_reads_its_fields_from_a_question_and_round_trips() -> None:
    question = {
        "type": "Question",
        "name": "Where does the grant go?",
        "method": "ranked",
        "options": ["Park", "Library", "Garden"],
        "threshold": "2/3",
        "scope": "regional",
        "rule": "double-majority",
        "chapters": ["https://a.example/actor", "https://b.example/actor"],
        "min_chapters": "1/2",
    }
    spec = parse_spec(question)
    assert spec.options == OPTIONS
    assert spec.threshold_fraction == Fraction(2, 3)
    assert parse_spec(spec_fields(spec)) == spec


@pytest.mark.parametrize(
    "bad",
    [
        {"method": "plurality", "options": ["A", "B"]},
        {"method": "choice", "options": ["A", "B"], "threshold": 0.5},
        {"method": "choice", "options": ["A", "B"], "secret": "yes"},
        {"options": ["A", "B"]},
    ],
)
def test_parse_spec_is_strict(bad: dict[str, object]) -> None:
    with pytest.raises(BallotError, match="proposal spec is invalid"):
        parse_spec(bad)


# --- ballots -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "raw", "ballot"),
    [
        ("consent", {"choice": "block"}, ConsentBallot(choice="block")),
        ("choice", {"choice": "Garden"}, ChoiceBallot(choice="Garden")),
        ("approval", {"choices": ["Park", "Garden"]}, ApprovalBallot(choices=("Park", "Garden"))),
        ("approval", {"choices": []}, ApprovalBallot(choices=())),
        ("ranked", {"ranking": ["Garden", "Park"]}, RankedBallot(ranking=("Garden", "Park"))),
        (
            "score",
            {"scores": {"Park": 0, "Library": 5}},
            ScoreBallot(scores={"Park": 0, "Library": 5}),
        ),
    ],
)
def test_valid_ballots(method: str, raw: object, ballot: object) -> None:
    assert validate_ballot(SPECS[method], raw) == ballot


@pytest.mark.parametrize(
    ("method", "raw", "why"),
    [
        ("consent", ["agree"], "must be a JSON object"),
        ("consent", {"choice": "maybe"}, "not a consent ballot"),
        ("consent", {}, "missing required field `choice`"),
        ("choice", {"choice": "Moon"}, "choice: 'Moon' is not an option"),
        ("choice", {"choice": 3}, "Expected `str`, got `int`"),
        ("choice", {"ranking": ["Park"]}, r'expected \{"choice": OPTION\}'),
        ("choice", {"choice": "Park", "extra": 1}, "unknown field `extra`"),
        ("approval", {"choices": ["Park", "Park"]}, "choices: 'Park' appears twice"),
        ("approval", {"choices": ["Moon"]}, "choices: 'Moon' is not an option"),
        ("approval", {"choices": "Park"}, "Expected `array`"),
        ("ranked", {"ranking": ["Park", "Garden", "Park"]}, "ranking: 'Park' appears twice"),
        ("ranked", {"ranking": ["Moon"]}, "ranking: 'Moon' is not an option"),
        ("score", {"scores": {"Park": 6}}, "score for 'Park' is 6"),
        ("score", {"scores": {"Park": -1}}, "score for 'Park' is -1"),
        ("score", {"scores": {"Park": 2.5}}, "Expected `int`, got `float`"),
        ("score", {"scores": {"Park": "3"}}, "Expected `int`, got `str`"),
        ("score", {"scores": {"Park": True}}, "Expected `int`, got `bool`"),
        ("score", {"scores": {"Moon": 3}}, "scores: 'Moon' is not an option"),
        ("score", {"scores": [["Park", 3]]}, "Expected `object`"),
    ],
)
def test_malformed_ballots_are_rejected_saying_what(method: str, raw: object, why: str) -> None:
    with pytest.raises(BallotError, match=why) as info:
        validate_ballot(SPECS[method], raw)
    assert info.value.status == 400


# --- receipts ------------------------------------------------------------------------

NONCE = bytes(range(32))


def test_receipt_is_sha256_of_the_documented_canonical_json() -> None:
    ballot = RankedBallot(ranking=("Garden", "Park"))
    # Computed with an independent RFC 8785 implementation, per docs/protocol.md §7.4.
    expected = hashlib.sha256(
        rfc8785.dumps(
            {"proposal": PROPOSAL, "ballot": {"ranking": ["Garden", "Park"]}, "nonce": NONCE.hex()}
        )
    ).hexdigest()
    assert ballot_receipt(PROPOSAL, ballot, NONCE) == expected


def test_receipt_changes_with_ballot_nonce_and_proposal() -> None:
    ballot = ChoiceBallot(choice="Park")
    base = ballot_receipt(PROPOSAL, ballot, NONCE)
    assert ballot_receipt(PROPOSAL, ChoiceBallot(choice="Garden"), NONCE) != base
    assert ballot_receipt(PROPOSAL, ballot, bytes(32)) != base
    assert ballot_receipt(PROPOSAL + "x", ballot, NONCE) != base


def test_receipt_needs_a_32_byte_nonce() -> None:
    with pytest.raises(BallotError, match="must be 32 bytes, got 16"):
        ballot_receipt(PROPOSAL, ChoiceBallot(choice="Park"), bytes(16))


def receipts(n: int) -> list[str]:
    return [
        ballot_receipt(PROPOSAL, ChoiceBallot(choice="Park"), bytes([i]) * 32) for i in range(n)
    ]


def test_ballots_root_is_the_rfc9162_root_of_sorted_receipts() -> None:
    rs = receipts(5)
    size, hex_root = ballots_root(rs)
    assert size == 5
    assert hex_root == root(sorted(bytes.fromhex(r) for r in rs)).hex()
    assert ballots_root([]) == (0, EMPTY_ROOT.hex())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 20).flatmap(lambda n: st.permutations(receipts(n))))
def test_ballots_root_does_not_depend_on_order(shuffled: list[str]) -> None:
    assert ballots_root(shuffled) == ballots_root(sorted(shuffled))


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (["AB" * 32], "64 lowercase hex"),
        (["ab" * 31], "64 lowercase hex"),
        ([7], "64 lowercase hex"),
        (["ab" * 32, "ab" * 32], "appears twice"),
    ],
)
def test_ballots_root_rejects_bad_receipts(bad: list[object], why: str) -> None:
    with pytest.raises(BallotError, match=why):
        ballots_root(bad)  # type: ignore[arg-type]


def test_every_receipt_proves_inclusion_and_a_flipped_byte_does_not() -> None:
    rs = receipts(7)
    _, hex_root = ballots_root(rs)
    for r in rs:
        proof = receipt_proof(reversed(rs), r)
        assert (proof.tree_size, proof.root) == (7, hex_root)
        verify_receipt(r, proof, hex_root)
        flipped = proof.path[0][:-1] + ("0" if proof.path[0][-1] != "0" else "1")
        tampered = ReceiptProof(
            leaf_index=proof.leaf_index,
            tree_size=proof.tree_size,
            root=proof.root,
            path=(flipped, *proof.path[1:]),
        )
        with pytest.raises(MerkleError):
            verify_receipt(r, tampered, hex_root)
        other = receipts(8)[7]
        with pytest.raises(MerkleError):
            verify_receipt(other, proof, hex_root)


def test_receipt_proof_of_an_absent_receipt() -> None:
    with pytest.raises(BallotError, match="is not among this tally's ballots"):
        receipt_proof(receipts(3), receipts(4)[3])
