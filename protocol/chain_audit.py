"""Auditing many actors' chains at once (docs/protocol.md §5.2 "Audits").

Theory of operation. Entries of any actors, in any order, are grouped by actor and seq;
identical copies count once. Each actor's chain is verified with protocol/chain.py's
``verify_next``, trying first, where several entries claim one seq, the one the next
seq's ``prev`` points at. A failure ends that actor's verification (what follows hangs
off a broken link) but never another actor's. Then the seqs with several copies are
judged: an *equivocation* needs two copies validly signed by the key valid at that seq;
a copy without that signature is a forgery (``bad_proof``), so nobody can frame an actor
by adding a line to a bundle. The inbox applies the same rule: it keeps no entry as
evidence before its proof verified with the key valid at its seq.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.chain import (
    ChainState,
    KeySpan,
    check_entry,
    entry_digest,
    key_history,
    state_before,
    verify_next,
)
from protocol.errors import ChainError, ProtocolError

__all__ = ["ActorChain", "ChainReport", "Finding", "audit_chains"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong: ``code`` is one of CODES; ``evidence`` holds digests kept as proof."""

    actor: str | None
    seq: int | None
    code: str
    detail: str
    evidence: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ChainError(self.detail, actor=self.actor, seq=self.seq, code=self.code).describe()


@dataclass(frozen=True, slots=True)
class ActorChain:
    """What the audit found for one actor."""

    actor: str
    entry_count: int
    state: ChainState | None  # after the last entry that verified
    findings: tuple[Finding, ...]
    # seq -> the copies the actor signed, where it signed more than one (§5.2)
    equivocations: Mapping[int, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    # seq -> digest of the one copy the actor signed, where the other copies are forged
    genuine: Mapping[int, str] = field(default_factory=dict)

    @property
    def verified_through(self) -> int | None:
        return None if self.state is None else self.state.next_seq - 1


@dataclass(frozen=True, slots=True)
class ChainReport:
    actors: Mapping[str, ActorChain]
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return not self.findings

    def key_at(self, actor: str, seq: int) -> KeySpan:
        """The key valid at ``seq`` of ``actor``'s chain (ChainError if not verified)."""
        chain = self.actors.get(actor)
        if chain is None or chain.state is None:
            raise ChainError("no verified chain for this actor", actor=actor, seq=seq)
        return chain.state.key_at(seq)


def audit_chains(entries: Iterable[Mapping[str, Any]]) -> ChainReport:
    """Group entries by actor, keep equivocations as evidence, verify every chain.

    A failure ends the verification of that actor's chain (later entries hang off a
    broken link) but never of another actor's. Identical copies of one entry count once.
    """
    by_actor: dict[str, dict[int, dict[str, Mapping[str, Any]]]] = {}
    loose: list[Finding] = []
    for entry in entries:
        actor = entry.get("actor") if isinstance(entry, Mapping) else None
        seq = entry.get("seq") if isinstance(entry, Mapping) else None
        if not isinstance(actor, str) or type(seq) is not int:
            loose.append(Finding(None, None, "malformed", "an entry without actor or integer seq"))
            continue
        try:
            d = entry_digest(entry)
        except ChainError as exc:
            loose.append(Finding(actor, seq, "malformed", exc.detail))
            continue
        by_actor.setdefault(actor, {}).setdefault(seq, {})[d] = entry
    actors = {a: _audit_actor(a, seqs) for a, seqs in sorted(by_actor.items())}
    findings = tuple(loose) + tuple(f for c in actors.values() for f in c.findings)
    return ChainReport(actors, findings)


def _audit_actor(actor: str, seqs: dict[int, dict[str, Mapping[str, Any]]]) -> ActorChain:
    findings: list[Finding] = []
    state: ChainState | None = None
    for seq in sorted(seqs):
        candidates = list(seqs[seq].items())
        following = {str(e.get("prev")) for e in seqs.get(seq + 1, {}).values()}
        candidates.sort(key=lambda c: c[0] not in following)  # the branch that continues first
        first_error: ChainError | None = None
        for _, entry in candidates:
            try:
                state = verify_next(state, entry)
                break
            except ChainError as exc:
                first_error = first_error or exc
        else:
            assert first_error is not None
            findings.append(Finding(actor, first_error.seq, first_error.code, first_error.detail))
            break
    forks, equivocations, genuine = _judge_forks(actor, seqs, state)
    count = sum(len(c) for c in seqs.values())
    return ActorChain(actor, count, state, tuple(forks + findings), equivocations, genuine)


def _judge_forks(
    actor: str, seqs: Mapping[int, Mapping[str, Mapping[str, Any]]], state: ChainState | None
) -> tuple[list[Finding], dict[int, tuple[Mapping[str, Any], ...]], dict[int, str]]:
    """Of several entries claiming one seq, which the actor signed (§5.2).

    An equivocation needs two of them validly signed by the key valid at that seq; a
    copy without that signature is a forgery (``bad_proof``), so a stranger cannot
    frame an honest actor by adding a line to a bundle. Where the chain broke before
    the seq, the key it names for that seq (its unverified claims) stands in.
    """
    findings: list[Finding] = []
    equivocations: dict[int, tuple[Mapping[str, Any], ...]] = {}
    genuine: dict[int, str] = {}
    for seq, copies in sorted(seqs.items()):
        if len(copies) < 2:
            continue
        signed = sorted(d for d, e in copies.items() if _signed_at(e, actor, seq, state, seqs))
        for d in sorted(set(copies) - set(signed)):
            why = (
                f"another entry claiming seq {seq} is not signed by the key valid at that "
                "seq: a forgery, ignored, not an equivocation"
            )
            findings.append(Finding(actor, seq, "bad_proof", why, (d,)))
        if len(signed) == 1:
            genuine[seq] = signed[0]
        elif len(signed) > 1:
            equivocations[seq] = tuple(copies[d] for d in signed)
            why = f"{len(signed)} different entries signed by the actor claim seq {seq}"
            findings.append(Finding(actor, seq, "equivocation", why, tuple(signed)))
    return findings, equivocations, genuine


def _signed_at(
    entry: Mapping[str, Any],
    actor: str,
    seq: int,
    state: ChainState | None,
    seqs: Mapping[int, Mapping[str, Mapping[str, Any]]],
) -> bool:
    if state is not None and seq < state.next_seq:
        span = state.key_at(seq)
        kid, key = span.key_id, span.key
    else:
        claims = key_history(e for s in sorted(seqs) if s < max(seq, 1) for e in seqs[s].values())
        if seq == 0 or not claims:
            return False  # no verified genesis: nobody's key is established
        try:
            before = state_before(actor, seq, "", claims)
        except ChainError:
            return False
        kid, key = before.key_id, before.key
    try:
        checked = check_entry(entry, {kid: key})
    except ProtocolError:
        return False
    return checked.method == kid and checked.verified_with == key
