"""Recounting a tally from what the bundle discloses (docs/auditing.md, protocol.md §7–§8.3).

Theory of operation. Each signed tally becomes one ``TallyJob``: the tally, its
proposal's spec, the roster at the tally's seq (protocol/roster.py: member ids, size,
root), and its disclosed ballots or, for a secret vote, its receipts. ``recount_tally``
then checks, with no shared state, so jobs can run in worker processes:

- the tally against its proposal (aggregate.py ``check_tally``) and roster;
- each disclosed ballot: valid for the method, its receipt recomputed
  (``ballot_receipt``), its member on the roster once; the ballots recounted
  (counting.py) against the stated counts and ``cast``;
- a member-signed ballot's signature (member_ballots.py ``verify_member_ballot``)
  against the member's keys at the tally's seq, a key revoked before it named (§7.5);
- the receipts' Merkle root and size (``ballots_root``, RFC 9162) against the tally's.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from protocol.aggregate import check_tally
from protocol.audit_report import Finding, finding_of
from protocol.ballots import ProposalSpec, ballot_receipt, ballots_root, validate_ballot
from protocol.bundle import BallotRecord
from protocol.bundle_index import BundleIndex
from protocol.chain import entry_digest
from protocol.counting import count
from protocol.errors import ProtocolError
from protocol.member_ballots import SignedBallot, verify_member_ballot
from protocol.roster import member_keys_at, roster_at, roster_root
from protocol.tally import Tally, parse_tally

__all__ = ["Rosters", "TallyJob", "TallyPart", "recount_tally", "tally_jobs"]


class TallyJob(msgspec.Struct, frozen=True):
    entry_id: str
    seq: int
    tally: Tally
    spec: ProposalSpec
    proposal_digest: str
    roster: frozenset[str]  # member ids on the roster at ``seq``
    roster_size: int
    roster_root: str
    # (member, ballot, nonce, receipt, (counter, key, signature) or None): plain tuples
    # pickle an order of magnitude faster than Structs when a process pool ships
    # hundreds of thousands of them.
    ballots: list[tuple[str, dict[str, Any], str, str, tuple[int, str, str] | None]]
    receipts: list[str]
    # member → (keys held at ``seq``, every key registered to them up to ``seq``)
    member_keys: dict[str, tuple[frozenset[str], frozenset[str]]] = msgspec.field(
        default_factory=dict
    )


class TallyPart(msgspec.Struct, frozen=True):
    entry_id: str
    size: int  # ballots and receipts checked
    ok: bool
    recounted: int
    ballots_ok: int
    receipts_ok: int
    findings: list[Finding]
    signed_ok: int = 0
    custodial: int = 0


def tally_jobs(
    b: BundleIndex, specs: Mapping[str, tuple[ProposalSpec, str]], findings: list[Finding]
) -> tuple[list[TallyJob], dict[tuple[str, str], tuple[str, Tally]]]:
    """One job per tally that parses, names a valid proposal and is its chapter's first
    of it; and each such tally with its digest by (chapter, proposal). The rest, and
    ballots with no such tally, are appended to ``findings``."""
    jobs: list[TallyJob] = []
    tallies: dict[tuple[str, str], tuple[str, Tally]] = {}
    # one copy per seq (the signed one where a copy was forged): the chain as checked
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in b.by_id.values():
        chains[entry["actor"]].append(entry)
    rosters = Rosters(chains)
    for entry in b.tallies:
        try:
            tally = parse_tally(entry)
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry))
            continue
        actor, seq = tally.chapter, entry["seq"]
        if tally.proposal not in specs:
            findings.append(
                Finding(
                    actor,
                    seq,
                    "unknown_proposal",
                    f"the tally counts proposal {tally.proposal!r:.200}, which is not in the "
                    "bundle (or is not a valid proposal)",
                )
            )
            continue
        try:
            members, size, root = rosters.at(actor, seq)
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, "bad_roster"))
            continue
        spec, pdigest = specs[tally.proposal]
        key = (actor, tally.proposal)
        if key in tallies:
            findings.append(
                Finding(
                    actor,
                    seq,
                    "duplicate_tally",
                    f"a second tally of proposal {tally.proposal!r:.200} by this actor",
                )
            )
            continue
        try:
            tallies[key] = (entry_digest(entry), tally)
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry))
            continue
        jobs.append(
            TallyJob(
                entry_id=entry["id"],
                seq=seq,
                tally=tally,
                spec=spec,
                proposal_digest=pdigest,
                roster=members,
                roster_size=size,
                roster_root=root,
                ballots=[_ballot_tuple(r) for r in b.ballots.get(key, [])],
                receipts=b.receipts.get(key, []),
                member_keys=(
                    rosters.keys_at(actor, seq)
                    if any(r.signature is not None for r in b.ballots.get(key, []))
                    else {}
                ),
            )
        )
    for (actor, proposal), records in sorted(b.ballots.items()):
        if (actor, proposal) not in tallies:
            findings.append(
                Finding(
                    actor,
                    None,
                    "ballots_without_tally",
                    f"{len(records)} ballots of "
                    f"proposal {proposal!r:.200} but no valid tally of it by this actor",
                )
            )
    return jobs, tallies


def _ballot_tuple(
    r: BallotRecord,
) -> tuple[str, dict[str, Any], str, str, tuple[int, str, str] | None]:
    signed = None
    if r.signature is not None or r.key is not None or r.counter is not None:
        # all three or none: a partial signature is checked (and fails) as a signed one
        signed = (
            r.counter if r.counter is not None else -1,
            r.key or "",
            r.signature or "",
        )
    return (r.member, r.ballot, r.nonce, r.receipt, signed)


class Rosters:
    """The roster at a tally's seq, folded by roster.py once per distinct roster: the
    tallies of one chapter mostly share it, and its Merkle root is the costly part."""

    def __init__(self, entries: Mapping[str, list[dict[str, Any]]]) -> None:
        self._entries = entries
        self._changes: dict[str, list[int]] = {}
        self._memo: dict[tuple[str, int], tuple[frozenset[str], int, str]] = {}
        self._keys_memo: dict[tuple[str, int], dict[str, tuple[frozenset[str], frozenset[str]]]]
        self._keys_memo = {}

    def at(self, actor: str, seq: int) -> tuple[frozenset[str], int, str]:
        if actor not in self._changes:
            self._changes[actor] = sorted(
                e["seq"] for e in self._entries[actor] if e.get("type") == "RosterChange"
            )
        # the roster only changes at RosterChange entries: key on how many came before
        key = (actor, bisect_right(self._changes[actor], seq))
        if key not in self._memo:
            roster = roster_at(self._entries[actor], seq)
            size, root = roster_root(roster)
            self._memo[key] = (frozenset(roster), size, root)
        return self._memo[key]

    def keys_at(self, actor: str, seq: int) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        """Each member's keys held at ``seq`` and every key ever registered to them."""
        self.at(actor, seq)  # the RosterChange seqs, listed once per actor
        memo_key = (actor, bisect_right(self._changes[actor], seq))
        if memo_key not in self._keys_memo:
            self._keys_memo[memo_key] = self._keys_at(actor, seq)
        return self._keys_memo[memo_key]

    def _keys_at(self, actor: str, seq: int) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        held = member_keys_at(self._entries[actor], seq)
        ever: dict[str, set[str]] = defaultdict(set)
        for e in self._entries[actor]:
            is_key = e.get("type") == "RosterChange" and e.get("operation") == "key"
            if is_key and isinstance(e.get("seq"), int) and e["seq"] <= seq:
                ever[str(e.get("member"))].add(str(e.get("memberKey")))
        members = set(held) | set(ever)
        return {m: (held.get(m, frozenset()), frozenset(ever.get(m, ()))) for m in members}


def recount_tally(job: TallyJob) -> TallyPart:
    """One tally against its proposal, the roster at its seq and its disclosed ballots."""
    t, spec = job.tally, job.spec
    out: list[Finding] = []

    def fail(what: str, why: str) -> None:
        out.append(Finding(t.chapter, job.seq, what, why))

    try:
        check_tally(spec, t, proposal=t.proposal, proposal_digest=job.proposal_digest)
    except ProtocolError as exc:
        fail(exc.code, exc.detail)
    size, root = job.roster_size, job.roster_root
    if (t.roster_size, t.roster_root) != (size, root):
        fail(
            "roster_mismatch",
            f"tally states roster size {t.roster_size} root {t.roster_root}; the chain's "
            f"RosterChange entries up to seq {job.seq} give size {size} root {root}",
        )
    if t.eligible != size:
        fail("eligible_mismatch", f"tally states {t.eligible} eligible; the roster has {size}")
    ballots_ok = receipts_ok = recounted = signed_ok = custodial = 0
    if job.ballots:
        ballots_ok = _recount(job, fail)
        signed_ok = _check_member_signatures(job, fail)
        custodial = sum(b[4] is None for b in job.ballots)
        recounted = 1
        if spec.secret:
            fail("secret_ballot_disclosed", "a secret vote's ballots are in the bundle")
    elif job.receipts:
        receipts_ok = _check_leaves(job, job.receipts, fail)
        recounted = 1
    elif t.cast == 0:
        recounted = 1  # nothing to disclose: check_tally has checked the empty root
    size = len(job.ballots) + len(job.receipts)
    return TallyPart(
        job.entry_id, size, not out, recounted, ballots_ok, receipts_ok, out, signed_ok, custodial
    )


def _check_member_signatures(job: TallyJob, fail: Callable[[str, str], None]) -> int:
    """Each member-signed ballot against the member's keys at the tally's seq (§7.5)."""
    ok = 0
    for member, raw, _nonce, receipt, signed in job.ballots:
        if signed is None:
            continue  # custodial: the node's word only, counted as such in the report
        counter, key, signature = signed
        held, ever = job.member_keys.get(member, (frozenset(), frozenset()))
        if key not in held and key in ever:
            fail(
                "revoked_member_key",
                f"ballot {receipt:.64} of member {member!r:.100} is signed by key {key:.60}, "
                f"revoked before the tally at seq {job.seq}",
            )
            continue
        try:
            verify_member_ballot(
                SignedBallot(job.tally.proposal, member, counter, raw, key, signature),
                proposal=job.tally.proposal,
                member=member,
                member_keys=held,
            )
        except ProtocolError as exc:
            fail(exc.code, f"ballot {receipt:.64}: {exc.detail}")
            continue
        ok += 1
    return ok


def _recount(job: TallyJob, fail: Callable[[str, str], None]) -> int:
    t, spec = job.tally, job.spec
    ballots = []
    receipts: list[str] = []
    voters: set[str] = set()
    ok = 0
    for member, raw, nonce_hex, receipt, _signed in job.ballots:
        try:
            ballot = validate_ballot(spec, raw)
            nonce = bytes.fromhex(nonce_hex) if len(nonce_hex) == 64 else b""
            recomputed = ballot_receipt(t.proposal, ballot, nonce)
        except (ProtocolError, ValueError) as exc:
            fail("bad_ballot", f"ballot of member {member!r:.100}: {exc}")
            continue
        problem = None
        if recomputed != receipt:
            problem = f"receipt {receipt:.64} is not the ballot's receipt {recomputed}"
        elif member not in job.roster:
            problem = f"member {member!r:.100} is not on the roster at seq {job.seq}"
        elif member in voters:
            problem = f"member {member!r:.100} has two ballots"
        if problem is not None:
            fail("bad_ballot", problem)
        else:
            ok += 1
        voters.add(member)
        ballots.append(ballot)
        receipts.append(receipt)
    if len(ballots) == len(job.ballots):
        counts = count(spec, ballots, eligible=t.eligible)
        if counts != t.counts:
            fail(
                "count_mismatch",
                f"recounting {len(ballots)} ballots gives {_show(counts)}; "
                f"the tally states {_show(t.counts)}",
            )
        if len(ballots) != t.cast:
            fail(
                "count_mismatch",
                f"{len(ballots)} ballots disclosed; the tally states cast {t.cast}",
            )
    _check_leaves(job, receipts, fail)
    return ok


def _check_leaves(job: TallyJob, receipts: Sequence[str], fail: Callable[[str, str], None]) -> int:
    t = job.tally
    try:
        size, root = ballots_root(receipts)
    except ProtocolError as exc:
        fail("ballots_root_mismatch", exc.detail)
        return 0
    if (size, root) != (t.ballots_size, t.ballots_root):
        fail(
            "ballots_root_mismatch",
            f"the {size} receipts give root {root}; the tally states size {t.ballots_size} "
            f"root {t.ballots_root}",
        )
        return 0
    return size


def _show(value: object) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."
