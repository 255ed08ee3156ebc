"""Nested regions: a lower region's result as one input of the region above (§10.6).

Theory of operation
-------------------
A state region aggregates city regions exactly as a city aggregates chapters: the
same ``aggregate`` (§8.4) runs at every level. What goes up from a lower region is a
``Tally`` whose chapter is the lower region, built from the lower region's signed
``Decision`` (or, equivalently, from the chapter tallies it was computed from):

- ``counts``, ``cast``, ``eligible``: the lower decision's pooled sums over its
  counted chapters (§8.5). Counts are integers that add, so pooling the upward tallies
  equals pooling every counted chapter of every lower region directly;
- a lower region whose own decision failed for too few chapters reporting (§8.4 step
  3) sends nothing up: zero counts, cast 0, eligible 0, so the level above lists it
  ``below_quorum``;
- ``ballots_root`` (and ``roster_root``) is the RFC 9162 root over the sorted digests
  of the lower tally entries used, so the upward input commits to exactly those
  signed tallies; ``ballots_size`` = ``cast`` and ``roster_size`` = ``eligible`` keep
  §8.3's arithmetic. A receipt is proved against the chapter tally that holds it,
  never against an upward tally;
- ``outcome`` is §8.2 applied to the sums under the upper spec, as §8.3 requires.

Each level's spec is the one signed proposal with that level's list of ``chapters``
(``level_spec``); quorum applies to each chapter at the bottom and to each lower
region's sums above it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from protocol.aggregate import Decision, aggregate, parse_decision, verify_decision
from protocol.ballots import ProposalSpec, validate_spec
from protocol.counting import empty_counts
from protocol.errors import BallotError, ProtocolError
from protocol.events import ConveningError, source
from protocol.merkle import EMPTY_ROOT, root
from protocol.tally import Tally, outcome

__all__ = ["level_spec", "upward_input", "upward_tally"]


def level_spec(spec: ProposalSpec, chapters: Sequence[str]) -> ProposalSpec:
    """The signed proposal's spec as one level applies it: its own members listed."""
    try:
        return validate_spec(
            msgspec.structs.replace(spec, scope="regional", chapters=tuple(chapters))
        )
    except BallotError as exc:
        raise ConveningError(f"level spec: {exc.detail}") from None


def upward_tally(
    spec: ProposalSpec,
    lower: Decision | Sequence[tuple[str, Tally]],
    *,
    region: str,
    chapters: Sequence[str] = (),
    proposal: str | None = None,
    proposal_digest: str | None = None,
) -> Tally:
    """The lower ``region``'s input to the level above, from its decision or from
    ``(tally entry digest, tally)`` pairs of its ``chapters`` (then ``proposal`` and
    ``proposal_digest`` are required). ``spec`` is the upper level's spec."""
    if isinstance(lower, Decision):
        decision = lower
    else:
        if proposal is None or proposal_digest is None or not chapters:
            raise ConveningError(
                "from tallies, upward_tally needs the lower region's chapters, the proposal "
                "and its digest",
                actor=region,
            )
        decision = aggregate(
            level_spec(spec, chapters),
            lower,
            proposal=proposal,
            proposal_digest=proposal_digest,
        )
    if decision.method != spec.method:
        raise ConveningError(
            f"lower decision is a {decision.method} vote, this level's is {spec.method}",
            actor=region,
        )
    m = spec.min_chapters_fraction
    listed = len(decision.chapters)
    if decision.reporting * m.denominator < m.numerator * listed:
        counts, cast, eligible = empty_counts(spec), 0, 0
    else:
        counts, cast, eligible = decision.counts, decision.cast, decision.eligible
    leaves = sorted(bytes.fromhex(d) for d in decision.tallies)
    commit = (root(leaves) if cast else EMPTY_ROOT).hex()
    return Tally(
        chapter=region,
        proposal=decision.proposal,
        proposal_digest=decision.proposal_digest,
        method=decision.method,
        counts=counts,
        cast=cast,
        eligible=eligible,
        ballots_root=commit,
        ballots_size=cast,
        roster_root=commit,
        roster_size=eligible,
        outcome=outcome(spec, counts, cast, eligible),
    )


def upward_input(
    spec: ProposalSpec,
    decision_entry: Mapping[str, Any],
    lower_tallies: Sequence[tuple[str, Tally]] | None = None,
) -> tuple[str, Tally]:
    """``(digest, upward tally)`` from a lower region's signed ``Decision`` entry, ready
    for the upper level's ``aggregate``. With ``lower_tallies`` the decision is first
    recomputed from them (§8.5) and refused (TallyError) where it differs."""
    src = source(decision_entry)
    if decision_entry.get("type") != "Decision":
        raise ConveningError(
            f"entry type is {decision_entry.get('type')!r:.40}, not 'Decision'",
            actor=src.actor,
            seq=src.seq,
        )
    decision = parse_decision(decision_entry)
    try:
        if lower_tallies is not None:
            lower = level_spec(spec, [c.chapter for c in decision.chapters])
            verify_decision(lower, lower_tallies, decision_entry)
        return src.digest, upward_tally(spec, decision, region=src.actor)
    except ProtocolError as exc:
        raise type(exc)(exc.detail, actor=src.actor, seq=src.seq, code=exc.code) from None
