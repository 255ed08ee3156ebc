"""Proposal specs, ballots and ballot receipts (docs/protocol.md §7).

Theory of operation
-------------------
A proposal's voting rules are one frozen ``ProposalSpec``: the method, its options and
the fractions that decide (threshold, quorum, share of chapters). Fractions travel as
``"a/b"`` strings and are only ever compared as exact ``Fraction``s, never floats, so
every implementation reaches the same verdict on the same numbers.

A ballot arrives as untrusted JSON in the shape the JSON API fixes for its method and
is turned into a typed, frozen ballot by ``validate_ballot`` or rejected with a
``BallotError`` that says what is wrong with it.

A *receipt* is ``SHA-256(JCS({"ballot": B, "nonce": hex(N), "proposal": P}))`` where the
nonce N is 32 secret bytes the node draws and hands to the member (§7.4). Without N the
receipt reveals nothing about B; with it the member can show their ballot was counted.
A chapter's ballots root is the RFC 9162 Merkle root over its receipts, each taken as a
32-byte leaf, sorted ascending so that the root does not depend on arrival order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction
from itertools import pairwise
from typing import Literal

import msgspec

from protocol.canonical import canonicalize
from protocol.errors import BallotError
from protocol.merkle import MerkleTree, hashes_from_hex, verify_inclusion_data

__all__ = [
    "CONSENT_CHOICES",
    "MAX_OPTIONS",
    "MAX_OPTION_LENGTH",
    "MAX_SCORE",
    "NONCE_SIZE",
    "ApprovalBallot",
    "Ballot",
    "ChoiceBallot",
    "ConsentBallot",
    "Method",
    "ProposalSpec",
    "RankedBallot",
    "ReceiptProof",
    "ScoreBallot",
    "ballot_receipt",
    "ballot_type",
    "ballots_root",
    "parse_fraction",
    "parse_spec",
    "receipt_proof",
    "spec_fields",
    "validate_ballot",
    "validate_spec",
    "verify_receipt",
]

Method = Literal["consent", "choice", "approval", "ranked", "score"]
Scope = Literal["local", "regional"]
Rule = Literal["pooled", "chapters", "double-majority"]
ConsentChoice = Literal["agree", "abstain", "disagree", "block"]

CONSENT_CHOICES: tuple[str, ...] = ("agree", "abstain", "disagree", "block")
MAX_SCORE = 5
MAX_OPTIONS = 64
MAX_OPTION_LENGTH = 500
NONCE_SIZE = 32
_FRACTION = re.compile(r"(0|[1-9][0-9]{0,17})/([1-9][0-9]{0,17})")
_RECEIPT = re.compile(r"[0-9a-f]{64}")


class ProposalSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything that decides how a proposal's ballots are counted (§7.1)."""

    method: Method
    options: tuple[str, ...] = ()
    threshold: str = "1/2"
    quorum: str = "0/1"
    block_limit: int = 0
    secret: bool = False
    scope: Scope = "local"
    rule: Rule = "pooled"
    chapters: tuple[str, ...] = ()
    min_chapters: str = "0/1"

    @property
    def threshold_fraction(self) -> Fraction:
        return parse_fraction(self.threshold, "threshold")

    @property
    def quorum_fraction(self) -> Fraction:
        return parse_fraction(self.quorum, "quorum")

    @property
    def min_chapters_fraction(self) -> Fraction:
        return parse_fraction(self.min_chapters, "min_chapters")


SPEC_FIELDS: tuple[str, ...] = ProposalSpec.__struct_fields__


def parse_fraction(text: object, name: str = "fraction") -> Fraction:
    """Parse ``"a/b"`` with 0 <= a <= b, b > 0, into an exact Fraction."""
    if not isinstance(text, str):
        raise BallotError(f"{name} must be a string 'a/b', got {type(text).__name__}")
    m = _FRACTION.fullmatch(text)
    if m is None:
        raise BallotError(f"{name} must be 'a/b' with whole numbers, b > 0; got {text[:40]!r}")
    num, den = int(m.group(1)), int(m.group(2))
    if num > den:
        raise BallotError(f"{name} {text} is above 1; it must lie in [0, 1]")
    return Fraction(num, den)


def validate_spec(spec: ProposalSpec) -> ProposalSpec:
    """Check a spec is countable; return it unchanged or raise BallotError saying why."""
    for name in ("threshold", "quorum", "min_chapters"):
        parse_fraction(getattr(spec, name), name)
    if spec.method == "consent":
        if spec.options:
            raise BallotError("a consent proposal has no options; its choices are fixed")
    else:
        _check_options(spec.options, spec.method)
    if isinstance(spec.block_limit, bool) or spec.block_limit < 0:
        raise BallotError(f"block_limit must be a whole number >= 0, got {spec.block_limit}")
    if spec.scope == "regional":
        if not spec.chapters:
            raise BallotError("a regional proposal must list the chapters expected to vote")
        if len(set(spec.chapters)) != len(spec.chapters):
            raise BallotError("a regional proposal lists a chapter twice")
        for chapter in spec.chapters:
            if not chapter:
                raise BallotError("a regional proposal lists an empty chapter id")
    return spec


def _check_options(options: tuple[str, ...], method: str) -> None:
    if len(options) < 2:
        raise BallotError(f"a {method} proposal needs at least 2 options, got {len(options)}")
    if len(options) > MAX_OPTIONS:
        raise BallotError(f"a proposal may have at most {MAX_OPTIONS} options")
    seen: set[str] = set()
    for i, option in enumerate(options):
        if not option.strip():
            raise BallotError(f"option {i} is empty")
        if len(option) > MAX_OPTION_LENGTH:
            raise BallotError(f"option {i} is longer than {MAX_OPTION_LENGTH} characters")
        if option in seen:
            raise BallotError(f"option {option[:80]!r} is listed twice")
        seen.add(option)


def parse_spec(raw: Mapping[str, object]) -> ProposalSpec:
    """Read a spec from a mapping holding its fields (other keys, e.g. a Question's, are
    ignored), with strict types, then validate it."""
    picked = {k: raw[k] for k in SPEC_FIELDS if k in raw}
    try:
        spec = msgspec.convert(picked, ProposalSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise BallotError(f"proposal spec is invalid: {exc}") from None
    return validate_spec(spec)


def spec_fields(spec: ProposalSpec) -> dict[str, object]:
    """The spec's fields as plain JSON values, to embed in a Question entry (§7.1)."""
    out: dict[str, object] = msgspec.json.decode(msgspec.json.encode(spec))
    return out


# --- ballots (§7.2): the JSON API shapes, one frozen Struct per method ---------------


class ConsentBallot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    choice: ConsentChoice


class ChoiceBallot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    choice: str


class ApprovalBallot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    choices: tuple[str, ...]


class RankedBallot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ranking: tuple[str, ...]


class ScoreBallot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scores: dict[str, int]


Ballot = ConsentBallot | ChoiceBallot | ApprovalBallot | RankedBallot | ScoreBallot

_BALLOT_TYPES: dict[str, type[Ballot]] = {
    "consent": ConsentBallot,
    "choice": ChoiceBallot,
    "approval": ApprovalBallot,
    "ranked": RankedBallot,
    "score": ScoreBallot,
}
_SHAPES: dict[str, str] = {
    "consent": '{"choice": "agree" | "abstain" | "disagree" | "block"}',
    "choice": '{"choice": OPTION}',
    "approval": '{"choices": [OPTION, ...]}',
    "ranked": '{"ranking": [OPTION, ...]}',
    "score": '{"scores": {OPTION: 0..5}}',
}


def ballot_type(method: str) -> type[Ballot]:
    return _BALLOT_TYPES[method]


def validate_ballot(spec: ProposalSpec, raw: object) -> Ballot:
    """Turn an untrusted JSON value into the ballot for ``spec``'s method.

    Rejects, with a BallotError naming the problem: the wrong shape for the method,
    unknown fields, an unknown option, an option twice in a ranking or approval, a
    score that is not a whole number from 0 to 5.
    """
    method = spec.method
    if not isinstance(raw, Mapping):
        raise BallotError(
            f"a {method} ballot must be a JSON object {_SHAPES[method]}, got {type(raw).__name__}"
        )
    try:
        ballot = msgspec.convert(raw, _BALLOT_TYPES[method], strict=True)
    except msgspec.ValidationError as exc:
        raise BallotError(f"not a {method} ballot ({exc}); expected {_SHAPES[method]}") from None
    known = frozenset(spec.options)
    match ballot:
        case ChoiceBallot(choice=choice):
            _check_known(choice, known, "choice")
        case ApprovalBallot(choices=choices):
            _check_list(choices, known, "choices")
        case RankedBallot(ranking=ranking):
            _check_list(ranking, known, "ranking")
        case ScoreBallot(scores=scores):
            for option, score in scores.items():
                _check_known(option, known, "scores")
                if isinstance(score, bool) or not 0 <= score <= MAX_SCORE:
                    raise BallotError(
                        f"score for {option[:80]!r} is {score!r}; scores are whole "
                        f"numbers from 0 to {MAX_SCORE}"
                    )
        case _:
            pass  # consent: the Literal type already admits only the four choices
    return ballot


def _check_known(option: str, known: frozenset[str], field: str) -> None:
    if option not in known:
        raise BallotError(f"{field}: {option[:80]!r} is not an option of this proposal")


def _check_list(items: tuple[str, ...], known: frozenset[str], field: str) -> None:
    seen: set[str] = set()
    for option in items:
        _check_known(option, known, field)
        if option in seen:
            raise BallotError(f"{field}: {option[:80]!r} appears twice")
        seen.add(option)


# --- receipts and the ballots root (§7.4) --------------------------------------------


def ballot_receipt(proposal_id: str, ballot: Ballot, nonce: bytes) -> str:
    """Lowercase hex SHA-256 of JCS({"ballot", "nonce" (hex), "proposal"})."""
    if len(nonce) != NONCE_SIZE:
        raise BallotError(f"a receipt nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
    body = {
        "proposal": proposal_id,
        "ballot": msgspec.json.decode(msgspec.json.encode(ballot)),
        "nonce": nonce.hex(),
    }
    return hashlib.sha256(canonicalize(body)).hexdigest()


def _receipt_leaves(receipts: Iterable[str]) -> list[bytes]:
    leaves: list[bytes] = []
    for i, receipt in enumerate(receipts):
        if not isinstance(receipt, str) or _RECEIPT.fullmatch(receipt) is None:
            raise BallotError(f"receipt {i} is not 64 lowercase hex digits: {receipt!r:.80}")
        leaves.append(bytes.fromhex(receipt))
    leaves.sort()
    for a, b in pairwise(leaves):
        if a == b:
            raise BallotError(f"receipt {a.hex()} appears twice")
    return leaves


def ballots_root(receipts: Iterable[str]) -> tuple[int, str]:
    """(size, root hex) of the RFC 9162 tree over the receipts, sorted ascending."""
    tree = MerkleTree(_receipt_leaves(receipts))
    return tree.size, tree.root.hex()


class ReceiptProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """RFC 9162 inclusion proof of one receipt, in the JSON API's shape."""

    leaf_index: int
    tree_size: int
    root: str
    path: tuple[str, ...]


def receipt_proof(receipts: Iterable[str], receipt: str) -> ReceiptProof:
    """The inclusion proof of ``receipt`` among ``receipts`` (BallotError if absent)."""
    leaves = _receipt_leaves(receipts)
    leaf = bytes.fromhex(receipt) if _RECEIPT.fullmatch(receipt) else b""
    # leaves are sorted, so the index is a bisection; a plain scan is clearer and O(n)
    # is already the cost of building the tree.
    try:
        index = leaves.index(leaf)
    except ValueError:
        raise BallotError(f"receipt {receipt[:80]!r} is not among this tally's ballots") from None
    tree = MerkleTree(leaves)
    return ReceiptProof(
        leaf_index=index,
        tree_size=tree.size,
        root=tree.root.hex(),
        path=tuple(h.hex() for h in tree.inclusion_proof(index)),
    )


def verify_receipt(receipt: str, proof: ReceiptProof, root: str) -> None:
    """Check ``receipt`` is in the tree whose root is ``root``; MerkleError if not."""
    if _RECEIPT.fullmatch(receipt) is None:
        raise BallotError(f"receipt is not 64 lowercase hex digits: {receipt[:80]!r}")
    (root_hash,) = hashes_from_hex([root], "root")
    verify_inclusion_data(
        bytes.fromhex(receipt),
        proof.leaf_index,
        proof.tree_size,
        hashes_from_hex(proof.path, "path"),
        root_hash,
    )
