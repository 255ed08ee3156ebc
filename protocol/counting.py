"""Counting ballots into integer counts; making and checking a chapter's tally (§8.1, §8.3).

Theory of operation
-------------------
Counting is split in two so that chapters can be pooled exactly. ``count`` turns a
chapter's ballots into *integers* only — consent: one count per choice; choice and
approval: votes per option; score: per-option sum of scores and number of scores;
ranked: the pairwise matrix ``d[i][j]`` = ballots preferring option i to option j,
options in spec order. Integers add, so the counts of the union of two chapters'
ballots are the sum of their counts (``add_counts``); pooled regional counting is
exactly counting the union. ``outcome`` (defined in protocol.tally, and offered here
too) then applies the method's rule to the counts.

``count`` trusts its ballots to come from ``validate_ballot`` (it still rejects an
unknown option or consent choice cheaply, per distinct value) and counts every ballot
it is given: keeping only the last ballot of each member is the caller's job.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from operator import attrgetter

import msgspec

from protocol.ballots import CONSENT_CHOICES, MAX_SCORE, Ballot, ProposalSpec, ballots_root
from protocol.errors import BallotError, TallyError
from protocol.merkle import EMPTY_ROOT
from protocol.pairwise import pairwise_matrix
from protocol.tally import (
    ConsentCounts,
    Counts,
    OptionCounts,
    PairwiseCounts,
    ScoreCounts,
    Tally,
    counts_type,
    outcome,
    quorum_met,
    schulze_winners,
    score_means,
    strongest_paths,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_EMPTY_ROOT_HEX = EMPTY_ROOT.hex()

# outcome, quorum_met, schulze_winners, score_means and strongest_paths live in
# protocol.tally with the Outcome they produce; they are offered here as well because
# counting and deciding are used together.
__all__ = [
    "add_counts",
    "check_tally",
    "count",
    "empty_counts",
    "make_tally",
    "outcome",
    "quorum_met",
    "schulze_winners",
    "score_means",
    "strongest_paths",
]


def empty_counts(spec: ProposalSpec) -> Counts:
    """The counts of no ballots."""
    return count(spec, (), eligible=0)


# --- counting ------------------------------------------------------------------------


def count(spec: ProposalSpec, ballots: Iterable[Ballot], *, eligible: int) -> Counts:
    """Integer counts of ``ballots`` (each counted once, as given) under ``spec``."""
    items = ballots if isinstance(ballots, Sequence) else list(ballots)
    if len(items) > eligible:
        raise TallyError(f"{len(items)} ballots cast but only {eligible} members eligible")
    try:
        return _COUNTERS[spec.method](spec, items)
    except AttributeError:
        raise BallotError(f"a ballot is not a {spec.method} ballot") from None


def _count_consent(spec: ProposalSpec, ballots: Sequence[Ballot]) -> Counts:
    tally = Counter(map(attrgetter("choice"), ballots))
    _check_keys(tally, CONSENT_CHOICES, "consent choice")
    return ConsentCounts(
        agree=tally["agree"],
        abstain=tally["abstain"],
        disagree=tally["disagree"],
        block=tally["block"],
    )


def _count_choice(spec: ProposalSpec, ballots: Sequence[Ballot]) -> Counts:
    tally = Counter(map(attrgetter("choice"), ballots))
    _check_keys(tally, spec.options, "option")
    return OptionCounts(votes={o: tally[o] for o in spec.options})


def _count_approval(spec: ProposalSpec, ballots: Sequence[Ballot]) -> Counts:
    tally = Counter(chain.from_iterable(map(attrgetter("choices"), ballots)))
    _check_keys(tally, spec.options, "option")
    return OptionCounts(votes={o: tally[o] for o in spec.options})


def _count_score(spec: ProposalSpec, ballots: Sequence[Ballot]) -> Counts:
    # Counting distinct (option, score) pairs first keeps the per-ballot work in C.
    pairs = Counter(chain.from_iterable(map(dict.items, map(attrgetter("scores"), ballots))))
    sums = dict.fromkeys(spec.options, 0)
    scored = dict.fromkeys(spec.options, 0)
    for (option, score), n in pairs.items():
        if option not in sums:
            raise BallotError(f"option {option!r:.80} is not an option of this proposal")
        if type(score) is not int or not 0 <= score <= MAX_SCORE:
            raise BallotError(f"score {score!r} for {option!r:.80} is not a whole 0..5")
        sums[option] += score * n
        scored[option] += n
    return ScoreCounts(sums=sums, scored=scored)


def _count_ranked(spec: ProposalSpec, ballots: Sequence[Ballot]) -> Counts:
    rankings = list(map(attrgetter("ranking"), ballots))
    return PairwiseCounts(pairwise=pairwise_matrix(spec.options, rankings))


_COUNTERS = {
    "consent": _count_consent,
    "choice": _count_choice,
    "approval": _count_approval,
    "score": _count_score,
    "ranked": _count_ranked,
}


def _check_keys(tally: Counter[str], allowed: Sequence[str], what: str) -> None:
    unknown = set(tally) - set(allowed)
    if unknown:
        raise BallotError(f"{what} {sorted(unknown)[0]!r:.80} is not valid for this proposal")


def add_counts(spec: ProposalSpec, parts: Iterable[Counts]) -> Counts:
    """Sum counts of disjoint sets of ballots: equal to counting their union."""
    total = empty_counts(spec)
    for part in parts:
        total = _add(total, part)
    return total


def _add(a: Counts, b: Counts) -> Counts:
    match a, b:
        case ConsentCounts(), ConsentCounts():
            return ConsentCounts(
                agree=a.agree + b.agree,
                abstain=a.abstain + b.abstain,
                disagree=a.disagree + b.disagree,
                block=a.block + b.block,
            )
        case OptionCounts(), OptionCounts():
            return OptionCounts(votes={k: v + b.votes[k] for k, v in a.votes.items()})
        case ScoreCounts(), ScoreCounts():
            return ScoreCounts(
                sums={k: v + b.sums[k] for k, v in a.sums.items()},
                scored={k: v + b.scored[k] for k, v in a.scored.items()},
            )
        case PairwiseCounts(), PairwiseCounts():
            return PairwiseCounts(
                pairwise=tuple(
                    tuple(x + y for x, y in zip(ra, rb, strict=True))
                    for ra, rb in zip(a.pairwise, b.pairwise, strict=True)
                )
            )
    raise TallyError(f"cannot add {type(b).__name__} to {type(a).__name__}")


def make_tally(
    spec: ProposalSpec,
    *,
    chapter: str,
    proposal: str,
    proposal_digest: str,
    ballots: Sequence[Ballot],
    receipts: Iterable[str],
    eligible: int,
    roster_root: str,
    roster_size: int,
) -> Tally:
    """A chapter's tally: counts, outcome and the receipts' Merkle root (one per ballot)."""
    counts = count(spec, ballots, eligible=eligible)
    size, root = ballots_root(receipts)
    if size != len(ballots):
        raise TallyError(f"{size} receipts for {len(ballots)} ballots", actor=chapter)
    return Tally(
        chapter=chapter,
        proposal=proposal,
        proposal_digest=proposal_digest,
        method=spec.method,
        counts=counts,
        cast=len(ballots),
        eligible=eligible,
        ballots_root=root,
        ballots_size=size,
        roster_root=roster_root,
        roster_size=roster_size,
        outcome=outcome(spec, counts, len(ballots), eligible),
    )


# --- checking a tally ------------------------------------------------------------------------


def check_tally(
    spec: ProposalSpec,
    tally: Tally,
    *,
    proposal: str | None = None,
    proposal_digest: str | None = None,
) -> None:
    """Raise TallyError, naming the chapter, unless ``tally``'s numbers add up."""

    def fail(why: str) -> TallyError:
        return TallyError(why, actor=tally.chapter)

    if proposal is not None and tally.proposal != proposal:
        raise fail(f"tally is for proposal {tally.proposal!r:.200}, not {proposal!r:.200}")
    if proposal_digest is not None and tally.proposal_digest != proposal_digest:
        raise fail(
            f"tally counts proposal version {tally.proposal_digest:.64}, not {proposal_digest}"
        )
    if tally.method != spec.method:
        raise fail(f"tally method is {tally.method!r:.40}, the proposal's is {spec.method!r}")
    if not isinstance(tally.counts, counts_type(spec.method)):
        raise fail(f"{type(tally.counts).__name__} are not counts of a {spec.method} vote")
    for name in ("ballots_root", "roster_root", "proposal_digest"):
        if _HEX64.fullmatch(getattr(tally, name)) is None:
            raise fail(f"{name} is not 64 lowercase hex digits")
    cast, eligible = tally.cast, tally.eligible
    if cast < 0 or eligible < 0 or tally.roster_size < 0:
        raise fail("cast, eligible and roster_size must not be negative")
    if cast > eligible:
        raise fail(f"cast {cast} exceeds eligible {eligible}")
    if eligible > tally.roster_size:
        raise fail(f"eligible {eligible} exceeds roster size {tally.roster_size}")
    if tally.ballots_size != cast:
        raise fail(f"ballots_size {tally.ballots_size} differs from cast {cast}")
    if cast == 0 and tally.ballots_root != _EMPTY_ROOT_HEX:
        raise fail("no ballots cast but ballots_root is not the empty tree's root")
    _check_counts(spec, tally.counts, cast, fail)
    expected = outcome(spec, tally.counts, cast, eligible)
    # reason texts are explanations, not compared (§8.2)
    if msgspec.structs.replace(tally.outcome, reason="") != msgspec.structs.replace(
        expected, reason=""
    ):
        raise fail(
            f"outcome {tally.outcome.result!r} does not follow from the counts "
            f"({expected.result}: {expected.reason})"
        )


def _check_counts(
    spec: ProposalSpec, counts: Counts, cast: int, fail: Callable[[str], TallyError]
) -> None:
    options = list(spec.options)
    match counts:
        case ConsentCounts(agree=a, abstain=b, disagree=c, block=d):
            if min(a, b, c, d) < 0:
                raise fail("a consent count is negative")
            if a + b + c + d != cast:
                raise fail(f"consent counts sum to {a + b + c + d}, not cast {cast}")
        case OptionCounts(votes=votes):
            _check_names(votes, options, "votes", fail)
            if min(votes.values()) < 0:
                raise fail("a vote count is negative")
            total = sum(votes.values())
            if spec.method == "choice" and total != cast:
                raise fail(f"choice votes sum to {total}, not cast {cast}")
            for o, v in votes.items():
                if v > cast:
                    raise fail(f"option {o!r:.80} has {v} approvals, more than cast {cast}")
        case ScoreCounts(sums=sums, scored=scored):
            _check_names(sums, options, "sums", fail)
            _check_names(scored, options, "scored", fail)
            for o in options:
                if not 0 <= scored[o] <= cast:
                    raise fail(f"option {o!r:.80} scored {scored[o]} times; cast is {cast}")
                if not 0 <= sums[o] <= 5 * scored[o]:
                    raise fail(f"option {o!r:.80} has score sum {sums[o]} from {scored[o]} scores")
        case PairwiseCounts(pairwise=d):
            n = len(options)
            if len(d) != n or any(len(row) != n for row in d):
                raise fail(f"pairwise matrix is not {n}x{n}")
            for i in range(n):
                if d[i][i] != 0:
                    raise fail(f"pairwise[{i}][{i}] is {d[i][i]}, not 0")
                for j in range(n):
                    if d[i][j] < 0 or d[i][j] + d[j][i] > cast:
                        raise fail(
                            f"pairwise[{i}][{j}] + pairwise[{j}][{i}] = "
                            f"{d[i][j] + d[j][i]} is outside 0..cast {cast}"
                        )


def _check_names(
    got: Mapping[str, int], options: list[str], name: str, fail: Callable[[str], TallyError]
) -> None:
    if set(got) != set(options):
        extra = sorted(set(got) - set(options))
        missing = sorted(set(options) - set(got))
        raise fail(f"{name} must name exactly the options (extra {extra}, missing {missing})")
