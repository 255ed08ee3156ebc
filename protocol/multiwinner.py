"""A list of demands: "choose N" by approval or score (docs/protocol.md §10.5).

Theory of operation
-------------------
A list of demands is an approval or score proposal (§7) whose ``Question`` also
carries ``seats`` = N, the number of demands to adopt. Ballots, counts, chapter
tallies and their checks are exactly §7–§8: nothing is counted twice in two ways.
The list is then read off the counts:

- approval: options ordered by approvals, more first;
- score: options ordered by exact mean score, higher first, then by how many ballots
  scored them, more first (the §8.2 score order);
- an option nobody approved or scored has no support and is never adopted;
- equal support shares a place (1, 2, 2, 4); the first N places are adopted, and
  when the N-th place is shared across the cut the options holding it are reported
  as ``tied`` (result ``tie``) — never broken by option order or by who counts.
  Fewer than N options with support: result ``short``, every supported one adopted.

A region decides the list from the *pooled* sums (§8.4 step 5): ``aggregate`` checks
and sums the chapter tallies, and the list is read from its pooled counts, so a region
of regions (protocol.nesting) works the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any, Literal

import msgspec

from protocol.aggregate import aggregate
from protocol.ballots import ProposalSpec
from protocol.events import ConveningError
from protocol.tally import Counts, OptionCounts, ScoreCounts, Tally, quorum_met, score_means

__all__ = [
    "Demand",
    "DemandList",
    "check_seats",
    "parse_seats",
    "rank_demands",
    "regional_demands",
]

ListResult = Literal["complete", "tie", "short", "failed"]


class Demand(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One option with the support behind it. approval: ``support`` = approvals;
    score: ``support`` = sum of scores, ``scored`` = ballots scoring it, ``mean`` = a/b."""

    option: str
    place: int
    support: int
    scored: int | None = None
    mean: str | None = None
    adopted: bool = False


class DemandList(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``items``: every option in order of support; ``adopted``: the first N places
    (fewer on a tie at the cut); ``tied``: the options sharing the place at the cut."""

    result: ListResult
    quorum_met: bool
    seats: int
    adopted: tuple[str, ...]
    tied: tuple[str, ...]
    items: tuple[Demand, ...]
    reason: str


def check_seats(spec: ProposalSpec, seats: object) -> int:
    """``seats`` as a whole number 1..len(options) of an approval or score spec."""
    if spec.method not in ("approval", "score"):
        raise ConveningError(f"a list of demands is chosen by approval or score, not {spec.method}")
    if type(seats) is not int or not 1 <= seats <= len(spec.options):
        raise ConveningError(
            f"seats must be a whole number from 1 to {len(spec.options)}, got {seats!r:.40}"
        )
    return seats


def parse_seats(spec: ProposalSpec, question: Mapping[str, Any]) -> int:
    """The ``seats`` of a list-of-demands ``Question`` entry, checked against its spec."""
    actor, seq = question.get("actor"), question.get("seq")
    try:
        return check_seats(spec, question.get("seats"))
    except ConveningError as exc:
        raise ConveningError(
            exc.detail,
            actor=actor if isinstance(actor, str) else None,
            seq=seq if type(seq) is int else None,
        ) from None


def _ranked(spec: ProposalSpec, counts: Counts) -> list[tuple[tuple[Fraction, int], Demand]]:
    """(sort key, demand) per supported option, best first; spec order among equals."""
    rows: list[tuple[tuple[Fraction, int], Demand]] = []
    if isinstance(counts, ScoreCounts):
        for option, m in score_means(counts).items():
            if m is not None:
                demand = Demand(
                    option=option,
                    place=0,
                    support=counts.sums[option],
                    scored=counts.scored[option],
                    mean=f"{m.numerator}/{m.denominator}",
                )
                rows.append(((m, counts.scored[option]), demand))
    elif isinstance(counts, OptionCounts):
        for option, n in counts.votes.items():
            if n > 0:
                rows.append(((Fraction(n), 0), Demand(option=option, place=0, support=n)))
    else:
        raise ConveningError(f"{type(counts).__name__} are not approval or score counts")
    order = {o: i for i, o in enumerate(spec.options)}
    rows.sort(key=lambda r: (-r[0][0], -r[0][1], order[r[1].option]))
    return rows


def rank_demands(
    spec: ProposalSpec, seats: int, counts: Counts, cast: int, eligible: int
) -> DemandList:
    """The list of demands from (pooled) counts of ``cast`` ballots."""
    check_seats(spec, seats)
    if eligible <= 0 or not quorum_met(spec, cast, eligible):
        return _failed(seats, f"quorum not met: {cast} of {eligible} eligible voted")
    if cast == 0:
        return _failed(seats, "no ballots cast", quorum=True)
    rows = _ranked(spec, counts)
    if not rows:
        return _failed(seats, "no option has any support", quorum=True)
    places: list[int] = []
    for i, (key, _) in enumerate(rows):
        places.append(places[-1] if i and rows[i - 1][0] == key else i + 1)
    if len(rows) <= seats:
        adopted = tuple(d.option for _, d in rows)
        tied: tuple[str, ...] = ()
        result: ListResult = "short" if len(rows) < seats else "complete"
    else:
        cut = rows[seats - 1][0]
        above = tuple(d.option for k, d in rows if k > cut)
        at = tuple(d.option for k, d in rows if k == cut)
        if len(above) + len(at) == seats:
            adopted, tied, result = above + at, (), "complete"
        else:
            adopted, tied, result = above, at, "tie"
    items = tuple(
        msgspec.structs.replace(d, place=p, adopted=d.option in adopted)
        for (_, d), p in zip(rows, places, strict=True)
    )
    if result == "tie":
        reason = f"{len(tied)} options tie for the last {seats - len(adopted)} of {seats} seats"
    elif result == "short":
        reason = f"only {len(rows)} options have support, fewer than {seats} seats"
    else:
        reason = f"the {seats} demands with most support"
    return DemandList(
        result=result,
        quorum_met=True,
        seats=seats,
        adopted=adopted,
        tied=tied,
        items=items,
        reason=reason,
    )


def _failed(seats: int, reason: str, *, quorum: bool = False) -> DemandList:
    return DemandList(
        result="failed",
        quorum_met=quorum,
        seats=seats,
        adopted=(),
        tied=(),
        items=(),
        reason=reason,
    )


def regional_demands(
    spec: ProposalSpec,
    seats: int,
    tallies: Sequence[tuple[str, Tally]],
    *,
    proposal: str,
    proposal_digest: str,
) -> DemandList:
    """The region's list from ``(tally entry digest, tally)`` pairs, pooled (§8.4)."""
    check_seats(spec, seats)
    if spec.rule != "pooled":
        raise ConveningError(f"a list of demands is decided pooled, not by rule {spec.rule!r}")
    decision = aggregate(spec, tallies, proposal=proposal, proposal_digest=proposal_digest)
    m = spec.min_chapters_fraction
    if decision.reporting * m.denominator < m.numerator * len(spec.chapters):
        return _failed(seats, decision.outcome.reason)
    if decision.counted == 0:
        return _failed(seats, "no chapter met quorum")
    return rank_demands(spec, seats, decision.counts, decision.cast, decision.eligible)
