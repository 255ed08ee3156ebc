"""Wire forms of counts, outcomes and chapter tallies (docs/protocol.md §8.1, §8.3).

A chapter tally is the body of a chain entry of type ``Tally``: the node adds the
common entry fields of §5 (``@context``, ``id``, ``type``, ``actor``, ``seq``, ``prev``,
``published``, ``proof``) around ``tally_body``. ``parse_tally`` reads it back strictly
(exact types, no coercion; the envelope's other keys are ignored, as the signature
already covers them) and takes the chapter from the entry's ``actor``.

Counts are integers only so that they add across chapters. Whether the numbers add
up against the proposal is ``aggregate.check_tally``'s job, not the decoder's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

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
    "parse_counts",
    "parse_tally",
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
