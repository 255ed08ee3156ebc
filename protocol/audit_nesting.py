"""Nested regions in the chain and in the audit: the ``Level`` entry and the check of
decisions level by level (docs/protocol.md §10.6).

Theory of operation
-------------------
A state region's ``Question`` lists its members: chapters and lower (city) regions. A
city listed there signs a ``Level`` entry that names the members of *its* level for
that proposal (its own chapters) and carries the state's Question verbatim, proof and
all, so its chapters can hold the proposal without following the state. Everything
below follows from the signed entries alone:

- a chapter tally of the proposal counts at the level whose ``Level`` lists the
  chapter, or at the top when the Question itself lists it;
- a lower region's ``Decision`` is §8.5 under ``level_spec(spec, level.chapters)``
  from its chapters' on-time tallies;
- the upper region's ``Decision`` is §8.5 under the Question's own spec from its
  directly listed chapters' tallies and, for each listed lower region, the upward
  input of that region's first signed ``Decision`` (protocol/nesting.py
  ``upward_input``), whose digest is the lower Decision entry's.

A chapter may stand at one level only (it would otherwise be counted twice), and a
lower region must be listed by the Question it refines.

A lower decision counts upward only if its signed ``published`` is no later than
``decisions_due``: ``tallies_due`` plus the Question's own grace once more (the time
from ``closesAt`` to ``tallies_due``), so the upper region, its chapters and the
auditor leave out the same late decisions, whenever they arrived.

``check_decisions`` is what protocol/audit.py runs on a bundle's decisions: the ones
of a nested proposal are judged here, level by level, and a tampered lower decision
is named at its own level; the rest go to the plain §8.5 check it is handed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from protocol.aggregate import verify_decision
from protocol.audit_report import Finding, finding_of
from protocol.ballots import ProposalSpec, parse_spec
from protocol.chain import entry_digest
from protocol.errors import ProtocolError
from protocol.events import ConveningError, read_body
from protocol.nesting import level_spec, upward_input
from protocol.tally import Tally

__all__ = [
    "Level",
    "check_decisions",
    "check_level",
    "decision_lateness",
    "decisions_due",
    "level_body",
    "parse_level",
]


class Level(msgspec.Struct, frozen=True):
    """A ``Level`` entry's body: ``chapters`` vote on ``proposal`` at this region's level."""

    proposal: str
    proposal_digest: str
    chapters: tuple[str, ...]
    question: dict[str, Any]


def level_body(question: Mapping[str, Any], digest: str, chapters: Sequence[str]) -> dict[str, Any]:
    """The body of a lower region's ``Level`` entry for the (verified) ``question``."""
    return {
        "type": "Level",
        "proposal": str(question.get("id")),
        "proposal_digest": digest,
        "chapters": sorted(chapters),
        "question": dict(question),
    }


def parse_level(entry: Mapping[str, Any]) -> Level:
    """Strictly decode a ``Level`` entry (ConveningError naming its actor and seq)."""
    _, level = read_body(entry, Level, "Level")
    assert isinstance(level, Level)
    return level


def check_level(entry: Mapping[str, Any], question_digest: str) -> tuple[Level, ProposalSpec]:
    """The ``Level`` entry and its level's spec, once it is consistent with the Question
    it carries (whose proof the caller verified to have ``question_digest``)."""
    level = parse_level(entry)
    actor, seq = str(entry.get("actor")), entry.get("seq")
    where: dict[str, Any] = {"actor": actor, "seq": seq if type(seq) is int else None}
    question = level.question
    if question.get("id") != level.proposal:
        raise ConveningError(
            f"carries question {question.get('id')!r:.200}, not {level.proposal!r:.200}", **where
        )
    if question_digest != level.proposal_digest:
        raise ConveningError(
            f"proposal_digest {level.proposal_digest:.64} is not the carried question's "
            f"digest {question_digest}",
            **where,
        )
    if question.get("actor") == actor:
        raise ConveningError("a region cannot be a level of its own proposal", **where)
    try:
        spec = parse_spec(question)
    except ProtocolError as exc:
        raise ConveningError(f"the carried question is invalid: {exc.detail}", **where) from None
    if spec.scope != "regional" or actor not in spec.chapters:
        raise ConveningError(
            f"{actor} is not listed by {level.proposal}, so it has no level of it", **where
        )
    if len(set(level.chapters)) != len(level.chapters) or actor in level.chapters:
        raise ConveningError("a level lists each chapter once, and not itself", **where)
    both = sorted(set(level.chapters) & set(spec.chapters))
    if both:
        raise ConveningError(
            f"{', '.join(both)} already stand at the level above; a chapter counts once",
            **where,
        )
    try:
        return level, level_spec(spec, level.chapters)
    except ConveningError as exc:
        raise ConveningError(exc.detail, **where) from None


def decisions_due(question: Mapping[str, Any]) -> datetime | None:
    """When lower decisions of ``question`` are due: ``tallies_due`` plus the time from
    its close to ``tallies_due``; None (no deadline) without both times."""
    due, closes = question.get("tallies_due"), question.get("closesAt")
    if not isinstance(due, str) or not isinstance(closes, str):
        return None
    try:
        end, start = datetime.fromisoformat(due), datetime.fromisoformat(closes)
        if end.tzinfo is None or start.tzinfo is None:
            return None
        return end + max(end - start, timedelta(0))
    except (ValueError, TypeError):
        return None  # protocol/deadlines.py names a malformed time where it matters


def decision_lateness(question: Mapping[str, Any], decision: Mapping[str, Any]) -> str | None:
    """Why the lower ``decision`` does not count upward because it is late, or None."""
    due = decisions_due(question)
    published = decision.get("published")
    if due is None:
        return None
    try:
        when = datetime.fromisoformat(str(published))
        if when.tzinfo is not None and when <= due:
            return None
    except ValueError:
        pass  # an unreadable time cannot show it was on time: judged late, below
    shown = due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"published {published!r:.40}, after lower decisions were due at {shown}"


# --- the audit's view -------------------------------------------------------------------


class _Index(Protocol):
    """What ``check_decisions`` reads of protocol/bundle_index.py's BundleIndex."""

    by_id: dict[str, dict[str, Any]]
    decisions: list[dict[str, Any]]


Plain = Callable[[Any, Mapping[str, tuple[ProposalSpec, str]], Any, list[Finding]], list[str]]


def check_decisions(
    b: _Index,
    specs: Mapping[str, tuple[ProposalSpec, str]],
    tallies: Mapping[tuple[str, str], tuple[str, Tally]],
    findings: list[Finding],
    plain: Plain,
) -> list[str]:
    """Ids of the decisions that verify: nested proposals' level by level, the others
    through ``plain`` (§8.5). ``tallies`` are the signed, on-time tallies by (chapter,
    proposal), as ``plain`` takes them."""
    levels = _levels(b.by_id, specs, findings)
    nested = {proposal for proposal, _ in levels}
    ok: list[str] = []
    lower_first: dict[tuple[str, str], dict[str, Any]] = {}
    uppers: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for entry in b.decisions:
        proposal, actor = entry.get("proposal"), entry.get("actor")
        if proposal not in nested or not isinstance(proposal, str):
            rest.append(entry)
        elif (proposal, actor) in levels:
            key = (proposal, str(actor))
            if key in lower_first:
                findings.append(
                    Finding(
                        str(actor),
                        entry.get("seq"),
                        "duplicate_decision",
                        f"a second decision of {proposal:.200} at this level; the first counts",
                    )
                )
                continue
            lower_first[key] = entry
        else:
            uppers.append(entry)
    for (proposal, region), entry in sorted(lower_first.items()):
        spec, pdigest = specs[proposal]
        level = levels[(proposal, region)]
        counted = [v for (c, p), v in sorted(tallies.items()) if p == proposal and c in level]
        try:
            verify_decision(
                level_spec(spec, level), counted, entry, proposal=proposal, proposal_digest=pdigest
            )
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, "decision_mismatch"))
            continue
        ok.append(str(entry["id"]))
    for entry in uppers:
        proposal = str(entry["proposal"])
        spec, pdigest = specs[proposal]
        pairs = [v for (c, p), v in sorted(tallies.items()) if p == proposal and c in spec.chapters]
        question = b.by_id.get(proposal, {})
        for (p, region), lower in sorted(lower_first.items()):
            if p != proposal or region not in spec.chapters:
                continue
            if decision_lateness(question, lower) is not None:
                continue  # valid at its own level, too late to count above
            with_tallies = [
                v for (c, q), v in sorted(tallies.items()) if q == p and c in levels[(p, region)]
            ]
            try:
                pairs.append(upward_input(spec, lower, with_tallies))
            except ProtocolError:
                continue  # named above, at its own level; it sends nothing up
        try:
            verify_decision(spec, pairs, entry, proposal=proposal, proposal_digest=pdigest)
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, "decision_mismatch"))
            continue
        ok.append(str(entry["id"]))
    view = copy.copy(b)
    view.decisions = rest
    return ok + plain(view, specs, tallies, findings)


def _levels(
    entries: Mapping[str, Mapping[str, Any]],
    specs: Mapping[str, tuple[ProposalSpec, str]],
    findings: list[Finding],
) -> dict[tuple[str, str], tuple[str, ...]]:
    """(proposal, lower region) → the chapters of its level, from valid ``Level`` entries
    (a region's first for a proposal counts)."""
    found: dict[tuple[str, str], tuple[str, ...]] = {}
    ordered = sorted(
        (e for e in entries.values() if e.get("type") == "Level"),
        key=lambda e: (str(e.get("actor")), e.get("seq") if type(e.get("seq")) is int else -1),
    )
    for entry in ordered:
        try:
            level = parse_level(entry)
            if level.proposal not in specs:
                raise ConveningError(
                    f"the level is of proposal {level.proposal!r:.200}, not in the bundle"
                )
            _, digest = specs[level.proposal]
            check_level(entry, entry_digest(level.question))
            if entry_digest(level.question) != digest:
                raise ConveningError("the carried question is not the proposal's signed entry")
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, "bad_level"))
            continue
        found.setdefault((level.proposal, str(entry["actor"])), level.chapters)
    return found
