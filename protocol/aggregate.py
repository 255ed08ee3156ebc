"""Checking chapter tallies and aggregating them into a regional decision (protocol.md §8.4–8.5).

Theory of operation
-------------------
A regional decision is a pure function of the signed proposal and the signed chapter
tallies (ARCHITECTURE.md "A regional decision"), so the region that publishes it, every
chapter that checks it and the auditor all call ``aggregate`` with the same inputs and
must get the same ``Decision``; ``verify_decision`` is exactly that comparison.

1. Every tally is checked on its own (``check_tally``): right proposal, method and
   shape; numbers that add up; an outcome that follows from its counts.
2. Only listed chapters count; a tally from an unlisted actor is left out (it is not
   named in the decision). Two tallies from one listed chapter are an error.
3. Regional quorum: at least ``min_chapters`` of the listed chapters reported. A chapter
   whose own turnout is below ``quorum`` is reported in the decision but not counted.
4. ``pooled``: the counted chapters' counts are summed (the same as counting the union
   of their ballots) and the method's rule is applied once. ``chapters``: each counted
   chapter's own outcome is one vote — for consent, passed chapters against failed ones
   under the threshold; for other methods, a chapter's winner gets its vote and a tied
   or failed chapter abstains. ``double-majority``: both must pass, and for multi-option
   methods both must name the same winner; otherwise there is no decision (failed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from protocol.ballots import ProposalSpec
from protocol.counting import add_counts, check_tally
from protocol.errors import TallyError
from protocol.tally import (
    Counts,
    Outcome,
    Tally,
    counts_type,
    outcome,
    quorum_met,
)

__all__ = [
    "ChapterResult",
    "Decision",
    "aggregate",
    "check_tally",
    "decision_body",
    "parse_decision",
    "verify_decision",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")

ChapterStatus = Literal["counted", "below_quorum", "missing"]


class ChapterResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One listed chapter in a decision; ``tally`` is its tally entry's digest."""

    chapter: str
    status: ChapterStatus
    tally: str | None = None
    cast: int = 0
    eligible: int = 0
    outcome: Outcome | None = None


class Decision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A regional decision (§8.5). ``outcome`` is what ``rule`` decides; ``pooled`` and
    ``by_chapters`` are both rules' verdicts, shown for every rule."""

    proposal: str
    proposal_digest: str
    method: str
    rule: str
    tallies: tuple[str, ...]
    chapters: tuple[ChapterResult, ...]
    reporting: int
    counted: int
    counts: Counts
    cast: int
    eligible: int
    pooled: Outcome
    by_chapters: Outcome
    outcome: Outcome


class _DecisionWire(msgspec.Struct, frozen=True):
    proposal: str
    proposal_digest: str
    method: str
    rule: str
    tallies: tuple[str, ...]
    chapters: tuple[ChapterResult, ...]
    reporting: int
    counted: int
    counts: dict[str, Any]
    cast: int
    eligible: int
    pooled: Outcome
    by_chapters: Outcome
    outcome: Outcome


# --- many tallies ---------------------------------------------------------------------


def aggregate(
    spec: ProposalSpec,
    tallies: Sequence[tuple[str, Tally]],
    *,
    proposal: str,
    proposal_digest: str,
) -> Decision:
    """The regional decision from ``(tally entry digest, tally)`` pairs, by ``spec.rule``."""
    listed = spec.chapters
    if not listed:
        raise TallyError("a regional proposal must list its chapters")
    by_chapter: dict[str, tuple[str, Tally]] = {}
    for entry_digest, tally in tallies:
        if tally.chapter not in listed:
            continue  # only listed chapters count
        if _HEX64.fullmatch(entry_digest) is None:
            raise TallyError("tally digest is not 64 lowercase hex digits", actor=tally.chapter)
        if tally.chapter in by_chapter:
            raise TallyError(
                f"two tallies from one chapter ({by_chapter[tally.chapter][0]} and {entry_digest})",
                actor=tally.chapter,
            )
        check_tally(spec, tally, proposal=proposal, proposal_digest=proposal_digest)
        by_chapter[tally.chapter] = (entry_digest, tally)

    results: list[ChapterResult] = []
    counted: list[Tally] = []
    for chapter in listed:
        if chapter not in by_chapter:
            results.append(ChapterResult(chapter=chapter, status="missing"))
            continue
        entry_digest, t = by_chapter[chapter]
        ok = quorum_met(spec, t.cast, t.eligible)
        results.append(
            ChapterResult(
                chapter=chapter,
                status="counted" if ok else "below_quorum",
                tally=entry_digest,
                cast=t.cast,
                eligible=t.eligible,
                outcome=t.outcome,
            )
        )
        if ok:
            counted.append(t)

    counts = add_counts(spec, (t.counts for t in counted))
    cast = sum(t.cast for t in counted)
    eligible = sum(t.eligible for t in counted)
    pooled = _pooled(spec, counts, cast, eligible, len(counted))
    by_chapters = _by_chapters(spec, [t.outcome for t in counted])
    final = _final(spec, pooled, by_chapters, len(by_chapter))
    return Decision(
        proposal=proposal,
        proposal_digest=proposal_digest,
        method=spec.method,
        rule=spec.rule,
        tallies=tuple(sorted(d for d, _ in by_chapter.values())),
        chapters=tuple(results),
        reporting=len(by_chapter),
        counted=len(counted),
        counts=counts,
        cast=cast,
        eligible=eligible,
        pooled=pooled,
        by_chapters=by_chapters,
        outcome=final,
    )


def _pooled(spec: ProposalSpec, counts: Counts, cast: int, eligible: int, n: int) -> Outcome:
    if n == 0:
        return Outcome(result="failed", quorum_met=False, reason="no chapter met quorum")
    return outcome(spec, counts, cast, eligible)


def _by_chapters(spec: ProposalSpec, outcomes: list[Outcome]) -> Outcome:
    if not outcomes:
        return Outcome(result="failed", quorum_met=False, reason="no chapter met quorum")
    n = len(outcomes)
    if spec.method == "consent":
        # The consent rule once more, with chapters as voters: passed chapters agree,
        # failed ones disagree; blocks were already applied inside each chapter.
        passed = sum(1 for o in outcomes if o.result == "passed")
        t = spec.threshold_fraction
        ok = passed * t.denominator >= t.numerator * n and passed > n - passed
        return Outcome(
            result="passed" if ok else "failed",
            quorum_met=True,
            reason=f"{passed} of {n} counted chapters passed it; "
            f"{'meets' if ok else 'does not meet'} threshold {spec.threshold} "
            "with more passed than failed",
        )
    votes = dict.fromkeys(spec.options, 0)
    for o in outcomes:
        if o.result == "winner" and o.winner in votes:
            votes[o.winner] += 1
    best = max(votes.values())
    if best == 0:
        return Outcome(result="failed", quorum_met=True, reason="no counted chapter had a winner")
    top = tuple(opt for opt in spec.options if votes[opt] == best)
    if len(top) == 1:
        return Outcome(
            result="winner",
            quorum_met=True,
            winner=top[0],
            reason=f"won in {best} of {n} counted chapters, more than any other option",
        )
    return Outcome(
        result="tie",
        quorum_met=True,
        tied=top,
        reason=f"{len(top)} options each won in {best} of {n} counted chapters",
    )


def _final(spec: ProposalSpec, pooled: Outcome, chapters: Outcome, reporting: int) -> Outcome:
    listed = len(spec.chapters)
    m = spec.min_chapters_fraction
    if reporting * m.denominator < m.numerator * listed:
        return Outcome(
            result="failed",
            quorum_met=False,
            reason=f"only {reporting} of {listed} listed chapters reported; "
            f"{spec.min_chapters} must",
        )
    if spec.rule == "pooled":
        return pooled
    if spec.rule == "chapters":
        return chapters
    # double-majority
    met = pooled.quorum_met and chapters.quorum_met
    if spec.method == "consent":
        if pooled.result == "passed" and chapters.result == "passed":
            return Outcome(result="passed", quorum_met=met, reason="passed pooled and by chapters")
        which = [
            w for w, o in (("pooled", pooled), ("by chapters", chapters)) if o.result != "passed"
        ]
        return Outcome(result="failed", quorum_met=met, reason=f"failed {' and '.join(which)}")
    if (
        pooled.result == "winner"
        and chapters.result == "winner"
        and pooled.winner == chapters.winner
    ):
        return Outcome(
            result="winner",
            quorum_met=met,
            winner=pooled.winner,
            reason="the same winner pooled and by chapters",
        )
    return Outcome(
        result="failed",
        quorum_met=met,
        reason=f"no decision: pooled {_says(pooled)}, by chapters {_says(chapters)}",
    )


def _says(o: Outcome) -> str:
    if o.result == "winner":
        return f"winner {o.winner!r}"
    if o.result == "tie":
        return f"tie {list(o.tied)}"
    return o.result


# --- wire -----------------------------------------------------------------------------


def decision_body(decision: Decision) -> dict[str, object]:
    """The decision's fields as plain JSON values, for a ``Decision`` chain entry."""
    # through JSON so that every array is a list, as a decoder on the other side sees it
    body: dict[str, object] = msgspec.json.decode(msgspec.json.encode(decision))
    return body


def parse_decision(entry: Mapping[str, object]) -> Decision:
    """Strictly decode a ``Decision`` entry (common entry fields are ignored)."""
    actor = entry.get("actor")
    where = actor if isinstance(actor, str) else None
    picked = {k: entry[k] for k in _DecisionWire.__struct_fields__ if k in entry}
    try:
        wire = msgspec.convert(picked, _DecisionWire, strict=True)
        counts = msgspec.convert(wire.counts, counts_type(wire.method), strict=True)
    except msgspec.ValidationError as exc:
        raise TallyError(f"decision is malformed: {exc}", actor=where) from None
    fields = {f: getattr(wire, f) for f in _DecisionWire.__struct_fields__}
    fields["counts"] = counts
    return Decision(**fields)


def verify_decision(
    spec: ProposalSpec,
    tallies: Sequence[tuple[str, Tally]],
    decision: Mapping[str, object],
    *,
    proposal: str | None = None,
    proposal_digest: str | None = None,
) -> None:
    """Recompute the decision from ``tallies`` and raise TallyError at the first field
    where the published ``decision`` body differs (or if it names other tallies)."""
    actor = decision.get("actor")
    where = actor if isinstance(actor, str) else None
    claimed = parse_decision(decision)
    if proposal is not None and claimed.proposal != proposal:
        raise TallyError(f"decision is for proposal {claimed.proposal!r:.200}", actor=where)
    if proposal_digest is not None and claimed.proposal_digest != proposal_digest:
        raise TallyError(
            f"decision is for proposal version {claimed.proposal_digest:.64}", actor=where
        )
    ours = aggregate(
        spec, tallies, proposal=claimed.proposal, proposal_digest=claimed.proposal_digest
    )
    if set(claimed.tallies) != set(ours.tallies):
        unknown = sorted(set(claimed.tallies) - set(ours.tallies))
        left_out = sorted(set(ours.tallies) - set(claimed.tallies))
        raise TallyError(
            f"decision uses tallies {unknown} not supplied here and leaves out {left_out}",
            actor=where,
        )
    for field in Decision.__struct_fields__:
        if _decisive(getattr(claimed, field)) != _decisive(getattr(ours, field)):
            raise TallyError(
                f"decision field {field!r} differs from the recount "
                f"(published {_short(getattr(claimed, field))}, recounted "
                f"{_short(getattr(ours, field))})",
                actor=where,
            )


def _decisive(value: object) -> object:
    """A value as compared: the explanatory ``reason`` texts are left out (§8.2), so a
    second implementation need not reproduce this one's wording."""
    if isinstance(value, Outcome):
        return msgspec.structs.replace(value, reason="")
    if isinstance(value, ChapterResult) and value.outcome is not None:
        return msgspec.structs.replace(value, outcome=_decisive(value.outcome))
    if isinstance(value, tuple):
        return tuple(_decisive(v) for v in value)
    return value


def _short(value: object) -> str:
    text = repr(msgspec.to_builtins(value))
    return text if len(text) <= 200 else text[:197] + "..."
