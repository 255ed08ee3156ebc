"""Counts, outcomes and the chapter tally (docs/protocol.md §8.1–8.3).

Theory of operation
-------------------
Counts are integers only, so that counts of disjoint sets of ballots add and pooled
regional counting is exactly counting the union (§8.1). ``outcome`` applies the one
rule of a method to counts, in exact ``Fraction`` arithmetic, with ties decided only by
the numbers and the spec's option order, never by who counts or in what order (§8.2).
Ranked: the Condorcet winner beats every other option head to head; without one (a
cycle), the Schulze method (Schulze 2011, §2.2) picks the options whose strongest
beatpath to every rival is at least as strong as the rival's path back, a link i→j
having strength d[i][j] (winning votes) when d[i][j] > d[j][i], else 0. A Condorcet
winner is always the only Schulze winner; several Schulze winners are a tie.

A chapter tally is the body of a chain entry of type ``Tally`` (§8.3): the node adds
the common entry fields of §5 around ``tally_body``. ``parse_tally`` reads it back
strictly (exact types, no coercion; the envelope's other keys are ignored, as the
signature already covers them) and takes the chapter from the entry's ``actor``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal

import msgspec

from protocol.ballots import ProposalSpec
from protocol.errors import TallyError

__all__ = [
    "ConsentCounts",
    "Counts",
    "OptionCounts",
    "Outcome",
    "PairwiseCounts",
    "Result",
    "ScoreCounts",
    "Tally",
    "counts_type",
    "outcome",
    "parse_counts",
    "parse_tally",
    "quorum_met",
    "schulze_winners",
    "score_means",
    "strongest_paths",
    "tally_body",
]


class ConsentCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agree: int
    abstain: int
    disagree: int
    block: int


class OptionCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """choice and approval: ballots naming each option (every option present)."""

    votes: dict[str, int]


class ScoreCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """score: per option the sum of its scores and how many ballots scored it."""

    sums: dict[str, int]
    scored: dict[str, int]


class PairwiseCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """ranked: ``pairwise[i][j]`` ballots prefer option i to option j (spec order)."""

    pairwise: tuple[tuple[int, ...], ...]


Counts = ConsentCounts | OptionCounts | ScoreCounts | PairwiseCounts

_COUNTS_TYPES: dict[str, type[Counts]] = {
    "consent": ConsentCounts,
    "choice": OptionCounts,
    "approval": OptionCounts,
    "score": ScoreCounts,
    "ranked": PairwiseCounts,
}

Result = Literal["passed", "failed", "winner", "tie"]


class Outcome(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What counts decide. consent: passed / failed; other methods: winner / tie / failed."""

    result: Result
    quorum_met: bool
    winner: str | None = None
    tied: tuple[str, ...] = ()
    reason: str = ""


def counts_type(method: str) -> type[Counts]:
    try:
        return _COUNTS_TYPES[method]
    except KeyError:
        raise TallyError(f"unknown voting method {method!r:.40}") from None


# --- outcome -------------------------------------------------------------------------


def quorum_met(spec: ProposalSpec, cast: int, eligible: int) -> bool:
    """cast / eligible >= quorum, exactly; never met with no eligible members."""
    if eligible <= 0:
        return False
    q = spec.quorum_fraction
    return cast * q.denominator >= q.numerator * eligible


def outcome(spec: ProposalSpec, counts: Counts, cast: int, eligible: int) -> Outcome:
    """Apply the method's rule (§8.2) to ``counts`` of ``cast`` ballots."""
    if not isinstance(counts, counts_type(spec.method)):
        raise TallyError(f"{type(counts).__name__} are not counts of a {spec.method} vote")
    if eligible <= 0:
        return Outcome(result="failed", quorum_met=False, reason="no eligible members")
    met = quorum_met(spec, cast, eligible)
    if not met:
        return Outcome(
            result="failed",
            quorum_met=False,
            reason=f"quorum not met: {cast} of {eligible} eligible voted, {spec.quorum} needed",
        )
    if cast == 0:
        return Outcome(result="failed", quorum_met=True, reason="no ballots cast")
    match counts:
        case ConsentCounts():
            return _consent_outcome(spec, counts)
        case OptionCounts():
            return _plurality(spec.options, counts.votes, "votes")
        case ScoreCounts():
            return _score_outcome(spec, counts)
        case PairwiseCounts():
            return _ranked_outcome(spec, counts)
    raise TallyError(f"unknown counts {type(counts).__name__}")  # pragma: no cover


def _consent_outcome(spec: ProposalSpec, c: ConsentCounts) -> Outcome:
    t = spec.threshold_fraction
    if c.block > spec.block_limit:
        return Outcome(
            result="failed",
            quorum_met=True,
            reason=f"blocked: {c.block} blocks, at most {spec.block_limit} allowed",
        )
    decisive = c.agree + c.disagree
    share = f"{c.agree} agree of {decisive} agree+disagree"
    if c.agree * t.denominator >= t.numerator * decisive and c.agree > c.disagree:
        return Outcome(
            result="passed", quorum_met=True, reason=f"{share} meets threshold {spec.threshold}"
        )
    if c.agree <= c.disagree:
        why = f"{share}: agree is not more than disagree"
    else:
        why = f"{share} is below threshold {spec.threshold}"
    return Outcome(result="failed", quorum_met=True, reason=why)


def _plurality(options: Sequence[str], votes: dict[str, int], unit: str) -> Outcome:
    best = max(votes[o] for o in options)
    if best == 0:
        return Outcome(result="failed", quorum_met=True, reason=f"no option received {unit}")
    top = tuple(o for o in options if votes[o] == best)
    if len(top) == 1:
        return Outcome(
            result="winner", quorum_met=True, winner=top[0], reason=f"most {unit}: {best}"
        )
    return Outcome(
        result="tie", quorum_met=True, tied=top, reason=f"{len(top)} options tie at {best} {unit}"
    )


def score_means(counts: ScoreCounts) -> dict[str, Fraction | None]:
    """Exact mean score per option; None for an option no ballot scored."""
    return {
        o: Fraction(s, counts.scored[o]) if counts.scored[o] else None
        for o, s in counts.sums.items()
    }


def _score_outcome(spec: ProposalSpec, c: ScoreCounts) -> Outcome:
    means = score_means(c)
    ranked = [(m, c.scored[o], o) for o, m in means.items() if m is not None]
    if not ranked:
        return Outcome(result="failed", quorum_met=True, reason="no option was scored")
    best_key = max((m, n) for m, n, _ in ranked)
    top = tuple(o for o in spec.options if (means[o], c.scored[o]) == best_key)
    mean, n = best_key
    detail = f"mean {mean.numerator}/{mean.denominator} from {n} scores"
    if len(top) == 1:
        return Outcome(result="winner", quorum_met=True, winner=top[0], reason=f"highest {detail}")
    return Outcome(
        result="tie", quorum_met=True, tied=top, reason=f"{len(top)} options tie at {detail}"
    )


def strongest_paths(d: Sequence[Sequence[int]]) -> list[list[int]]:
    """p[i][j]: strength of the strongest beatpath from option i to j (Schulze 2011, §2.2).

    A link i→j exists when d[i][j] > d[j][i] and has strength d[i][j] (winning
    votes); a path is as strong as its weakest link; no path means 0.
    """
    n = len(d)
    p = [[d[i][j] if i != j and d[i][j] > d[j][i] else 0 for j in range(n)] for i in range(n)]
    for k in range(n):  # widest paths, Floyd–Warshall style (Schulze 2011, §2.3)
        pk = p[k]
        for i in range(n):
            pik = p[i][k]
            if i == k or pik == 0:
                continue
            pi = p[i]
            for j in range(n):
                if j != i and j != k:
                    w = pik if pik < pk[j] else pk[j]
                    if w > pi[j]:
                        pi[j] = w
    return p


def schulze_winners(d: Sequence[Sequence[int]]) -> list[int]:
    """Indices of the options whose strongest path to every rival is at least as
    strong as the rival's path back: the Schulze winners (more than one is a tie)."""
    p = strongest_paths(d)
    n = len(p)
    return [i for i in range(n) if all(p[i][j] >= p[j][i] for j in range(n) if j != i)]


def _ranked_outcome(spec: ProposalSpec, c: PairwiseCounts) -> Outcome:
    d = c.pairwise
    n = len(d)
    if not any(any(row) for row in d):
        return Outcome(result="failed", quorum_met=True, reason="no preferences expressed")
    for i in range(n):
        if all(d[i][j] > d[j][i] for j in range(n) if j != i):
            return Outcome(
                result="winner",
                quorum_met=True,
                winner=spec.options[i],
                reason="Condorcet winner: beats every other option head to head",
            )
    winners = schulze_winners(d)
    if len(winners) == 1:
        return Outcome(
            result="winner",
            quorum_met=True,
            winner=spec.options[winners[0]],
            reason="no Condorcet winner; Schulze winner by strongest beatpaths",
        )
    return Outcome(
        result="tie",
        quorum_met=True,
        tied=tuple(spec.options[i] for i in winners),
        reason=f"no Condorcet winner; {len(winners)} Schulze winners tie",
    )


# --- the tally on the wire ---------------------------------------------------------


class Tally(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A chapter's signed tally of one proposal (§8.3). ``chapter`` is the entry's actor."""

    chapter: str
    proposal: str
    proposal_digest: str
    method: str
    counts: Counts
    cast: int
    eligible: int
    ballots_root: str
    ballots_size: int
    roster_root: str
    roster_size: int
    outcome: Outcome


class _TallyWire(msgspec.Struct, frozen=True):
    # counts stay raw here: their type depends on ``method``.
    proposal: str
    proposal_digest: str
    method: str
    counts: dict[str, Any]
    cast: int
    eligible: int
    ballots_root: str
    ballots_size: int
    roster_root: str
    roster_size: int
    outcome: Outcome


def tally_body(tally: Tally) -> dict[str, object]:
    """The tally's own fields, as plain JSON values, for a ``Tally`` chain entry."""
    # through JSON so that every array is a list, as a decoder on the other side sees it
    body: dict[str, object] = msgspec.json.decode(msgspec.json.encode(tally))
    del body["chapter"]  # carried by the entry's ``actor``
    return body


def parse_counts(method: str, raw: object, *, actor: str | None = None) -> Counts:
    """Strictly decode counts of ``method`` from plain JSON values."""
    try:
        return msgspec.convert(raw, counts_type(method), strict=True)
    except msgspec.ValidationError as exc:
        raise TallyError(f"counts of a {method} tally are malformed: {exc}", actor=actor) from None


def parse_tally(entry: Mapping[str, object]) -> Tally:
    """Strictly decode a ``Tally`` entry (or a bare body plus ``actor``) into a Tally."""
    actor = entry.get("actor")
    seq = entry.get("seq")
    where_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    if not isinstance(actor, str) or not actor:
        raise TallyError("a tally entry needs its chapter's actor id in 'actor'", seq=where_seq)
    if "type" in entry and entry["type"] != "Tally":
        raise TallyError(
            f"entry type is {entry['type']!r:.40}, not 'Tally'", actor=actor, seq=where_seq
        )
    picked = {k: entry[k] for k in _TallyWire.__struct_fields__ if k in entry}
    try:
        wire = msgspec.convert(picked, _TallyWire, strict=True)
    except msgspec.ValidationError as exc:
        raise TallyError(f"tally is malformed: {exc}", actor=actor, seq=where_seq) from None
    try:
        counts = msgspec.convert(wire.counts, counts_type(wire.method), strict=True)
    except msgspec.ValidationError as exc:
        raise TallyError(
            f"counts of a {wire.method} tally are malformed: {exc}", actor=actor, seq=where_seq
        ) from None
    except TallyError as exc:
        raise TallyError(exc.detail, actor=actor, seq=where_seq) from None
    return Tally(
        chapter=actor,
        proposal=wire.proposal,
        proposal_digest=wire.proposal_digest,
        method=wire.method,
        counts=counts,
        cast=wire.cast,
        eligible=wire.eligible,
        ballots_root=wire.ballots_root,
        ballots_size=wire.ballots_size,
        roster_root=wire.roster_root,
        roster_size=wire.roster_size,
        outcome=wire.outcome,
    )
