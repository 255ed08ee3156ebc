"""Audit of a bundle: re-check the whole signature chain offline (docs/auditing.md).

Theory of operation. ``audit_bundle`` makes one pass over the records and asks the
module that owns each rule; it never restates a rule itself:

1. chains (protocol/chain.py ``audit_chains``): every proof by the key valid at its
   seq, links, gaps, order, equivocation, key rotations, retired keys (§5); of two
   copies of one seq, one the actor did not sign is a forgery, not an equivocation,
   and the signed one is the one checked further;
2. actor documents: the current ``assertionMethod`` key equals the chain's latest;
3. proposals (protocol/ballots.py ``parse_spec``): each ``Question`` is a valid spec;
4. tallies (protocol/aggregate.py ``check_tally``) against the proposal; against the
   roster at the tally's seq (protocol/roster.py: eligible members, roster size and
   root); against its disclosed ballots — each validated, its receipt recomputed
   (``ballot_receipt``), its member on the roster once, recounted (counting.py) and
   the receipts' root and size recomputed (``ballots_root``) — or, for a secret vote,
   its receipts' root and size; a member-signed ballot's signature is checked
   (protocol/member_ballots.py ``verify_member_ballot``) against the member's keys in
   the roster at the tally's seq (roster.py ``member_keys_at``), so a ballot the node
   altered, or signed by a key revoked before the count, is named (§7.5);
5. decisions (aggregate.py ``verify_decision``) against the proposal's rule and the
   signed tallies in the bundle that were on time (protocol/deadlines.py);
6. with a receipt: its inclusion proof against the tally's signed root (RFC 9162).

Findings are collected, never raised, so one audit names every problem; they are
sorted by (actor, seq, what) so two auditors print the same report. The expensive,
independent parts (one actor's chain, one tally's ballots) go through ``mapper``, a
``map``-like callable: the caller may pass a process pool's ``map`` (protocol/ starts
no processes itself), and the functions mapped are module-level so they pickle.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from protocol.aggregate import check_tally, verify_decision
from protocol.ballots import (
    ProposalSpec,
    ballot_receipt,
    ballots_root,
    parse_spec,
    receipt_proof,
    validate_ballot,
    verify_receipt,
)
from protocol.bundle import ActorRecord, BallotRecord, EntryRecord, Header, ReceiptRecord
from protocol.bundle import Record as BundleRecord
from protocol.chain import audit_chains, entry_digest
from protocol.counting import count
from protocol.deadlines import tallies_due, tally_lateness
from protocol.errors import ProtocolError
from protocol.member_ballots import SignedBallot, verify_member_ballot
from protocol.roster import member_keys_at, roster_at, roster_root
from protocol.tally import Tally, parse_tally

__all__ = [
    "AuditReport",
    "Finding",
    "ReceiptCheck",
    "Tallied",
    "audit_bundle",
    "entry_digest_or_none",
]

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]


class Finding(msgspec.Struct, frozen=True, order=True):
    """One problem: which actor, which seq (None: not about one entry), what, why."""

    actor: str
    seq: int | None
    what: str
    why: str

    def describe(self) -> str:
        where = self.actor + (f" seq {self.seq}" if self.seq is not None else "")
        return f"{where}: {self.what}: {self.why}"

    def sort_key(self) -> tuple[str, bool, int, str, str]:
        # per actor, by seq; what concerns no single entry comes after the entries, as
        # it usually follows from them (no valid genesis, so no key to compare)
        return (self.actor, self.seq is None, self.seq or 0, self.what, self.why)


class Tallied(msgspec.Struct, frozen=True):
    """How many of each kind of thing the bundle holds (``seen``) or that checked out."""

    actors: int = 0
    entries: int = 0
    proposals: int = 0
    tallies: int = 0
    decisions: int = 0
    ballots: int = 0
    receipts: int = 0
    member_signed: int = 0  # open ballots carrying their member's signature
    custodial: int = 0  # open ballots the node recorded without one


class ReceiptCheck(msgspec.Struct, frozen=True):
    """The answer to ``--receipt``: is this ballot among a signed tally's leaves?"""

    receipt: str
    included: bool
    actor: str | None = None
    proposal: str | None = None
    leaf_index: int | None = None
    tree_size: int | None = None
    root: str | None = None
    path: tuple[str, ...] = ()
    why: str = ""


class AuditReport(msgspec.Struct, frozen=True):
    seen: Tallied
    verified: Tallied
    recounted: int
    equivocating: tuple[str, ...]
    findings: tuple[Finding, ...]
    receipt: ReceiptCheck | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["ok"] = self.ok
        return out


# --- the pass -------------------------------------------------------------------------


def audit_bundle(
    records: Iterable[BundleRecord],
    *,
    receipt: str | None = None,
    mapper: Mapper[Any, Any] | None = None,
    progress: Callable[[int], object] | None = None,
) -> AuditReport:
    """Check every record of a bundle with the protocol/ rules; findings, never raises.

    ``progress``, if given, is called with how many more records (entries, ballots,
    receipts) have been checked, as the chains and tallies are done.
    """
    run: Mapper[Any, Any] = mapper if mapper is not None else map
    advance = progress if progress is not None else _no_progress
    b = _Sorted.of(records)
    findings = list(b.findings)

    chains = list(run(_check_chain, sorted(b.entries.items())))
    valid_entries: dict[str, set[int]] = {}
    latest_key: dict[str, tuple[str, str]] = {}
    equivocating: list[str] = []
    for part in chains:
        advance(part.size)
        findings += part.findings
        for seq, digest in part.accepted.items():
            b.prefer(part.actor, seq, digest)
        valid_entries[part.actor] = set(part.valid_seqs)
        if part.latest_key is not None:
            latest_key[part.actor] = part.latest_key
        if part.equivocating:
            equivocating.append(part.actor)

    b.classify()
    if b.exporter is not None and b.exporter not in latest_key:
        why = "the header names this actor as the exporter, but its chain is not in the bundle"
        findings.append(Finding(b.exporter, None, "exporter_without_chain", why))
    actors_ok = _check_actors(b.actors, latest_key, findings)
    valid = {
        key: entry
        for key, entry in b.by_id.items()
        if entry["seq"] in valid_entries[entry["actor"]]
    }

    specs = _check_proposals(b, findings)
    tally_jobs, tallies = _tally_jobs(b, specs, findings)
    recounted = 0
    tallies_ok = 0
    ballots_ok = 0
    receipts_ok = 0
    signed_ok = custodial_seen = 0
    for part in run(_check_tally, tally_jobs):
        advance(part.size)
        findings += part.findings
        recounted += part.recounted
        if part.entry_id in valid:  # ballots check out only against a signed tally
            tallies_ok += part.ok
            ballots_ok += part.ballots_ok
            receipts_ok += part.receipts_ok
            signed_ok += part.signed_ok
            custodial_seen += part.custodial
    # a decision is recomputed from the tallies whose signatures and chains verified
    counted = {
        (j.tally.chapter, j.tally.proposal)
        for j in tally_jobs
        if j.entry_id in valid and _on_time(b.questions[j.tally.proposal], valid[j.entry_id])
    }
    signed = {key: value for key, value in tallies.items() if key in counted}
    decisions_ok = _check_decisions(b, specs, signed, findings)

    receipt_check = None
    if receipt is not None:
        receipt_check = _check_receipt(b, tallies, receipt)
        if not receipt_check.included:
            findings.append(
                Finding(receipt_check.actor or "", None, "receipt_not_included", receipt_check.why)
            )

    seen = Tallied(
        actors=len(b.actors),
        entries=sum(len(v) for v in b.entries.values()),
        proposals=len(b.questions),
        tallies=len(b.tallies),
        decisions=len(b.decisions),
        ballots=sum(len(v) for v in b.ballots.values()),
        receipts=sum(len(v) for v in b.receipts.values()),
        member_signed=sum(r.signature is not None for v in b.ballots.values() for r in v),
        custodial=sum(r.signature is None for v in b.ballots.values() for r in v),
    )
    verified = Tallied(
        actors=actors_ok,
        entries=len(valid),
        proposals=sum(1 for p in specs if p in valid),
        tallies=tallies_ok,
        decisions=sum(1 for d in decisions_ok if d in valid),
        ballots=ballots_ok,
        receipts=receipts_ok,
        member_signed=signed_ok,
        custodial=custodial_seen,  # recorded by a verified tally, on the node's word
    )
    return AuditReport(
        seen=seen,
        verified=verified,
        recounted=recounted,
        equivocating=tuple(sorted(equivocating)),
        findings=tuple(sorted(set(findings), key=Finding.sort_key)),
        receipt=receipt_check,
    )


def _no_progress(done: int) -> None:
    pass


# --- sorting the records ----------------------------------------------------------------


class _Sorted:
    """The bundle's records grouped the way the checks need them."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.actors: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.by_id: dict[str, dict[str, Any]] = {}
        self.questions: dict[str, dict[str, Any]] = {}
        self.tallies: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.ballots: dict[tuple[str, str], list[BallotRecord]] = defaultdict(list)
        self.receipts: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.exporter: str | None = None

    @classmethod
    def of(cls, records: Iterable[BundleRecord]) -> _Sorted:
        b = cls()
        for record in records:
            match record:
                case EntryRecord(entry=entry):
                    b._entry(entry)
                case ActorRecord(document=document):
                    b._actor(document)
                case BallotRecord():
                    b.ballots[(record.actor, record.proposal)].append(record)
                case ReceiptRecord():
                    b.receipts[(record.actor, record.proposal)].append(record.receipt)
                case Header(exporter=exporter):
                    b.exporter = exporter
        return b

    def _actor(self, document: dict[str, Any]) -> None:
        actor = document.get("id")
        if not isinstance(actor, str) or not actor:
            self.findings.append(Finding("", None, "bad_actor", "an actor document has no id"))
            return
        if actor in self.actors and self.actors[actor] != document:
            self.findings.append(
                Finding(actor, None, "bad_actor", "two different actor documents for one actor")
            )
        self.actors[actor] = document

    def _entry(self, entry: dict[str, Any]) -> None:
        actor, seq = entry.get("actor"), entry.get("seq")
        if not isinstance(actor, str) or not isinstance(seq, int) or isinstance(seq, bool):
            self.findings.append(
                Finding(
                    actor if isinstance(actor, str) else "",
                    None,
                    "malformed_entry",
                    "an entry without an actor string and an integer seq "
                    f"(id {entry.get('id')!r:.200})",
                )
            )
            return
        entry_id = entry.get("id")
        if not isinstance(entry_id, str):
            self.entries[actor].append(entry)
            return  # the chain check names it
        known = self.by_id.get(entry_id)
        if known == entry:
            return  # an identical copy (the node's own and a relayed one) counts once
        self.entries[actor].append(entry)
        if known is None:
            self.by_id[entry_id] = entry  # for two copies, the chain check picks one

    def prefer(self, actor: str, seq: int, digest: str) -> None:
        """Of two entries claiming one seq, use the one with ``digest`` (the signed one)."""
        for entry in self.entries[actor]:
            if entry.get("seq") == seq and entry_digest_or_none(entry) == digest:
                self.by_id[str(entry.get("id"))] = entry

    def classify(self) -> None:
        # in chain order, so that which of two tallies is "the second" does not depend
        # on the order of the bundle's lines
        ordered = sorted(self.by_id.items(), key=lambda kv: (kv[1]["actor"], kv[1]["seq"]))
        for entry_id, entry in ordered:
            kind = entry.get("type")
            if kind == "Question":
                self.questions[entry_id] = entry
            elif kind == "Tally":
                self.tallies.append(entry)
            elif kind == "Decision":
                self.decisions.append(entry)


def entry_digest_or_none(entry: Mapping[str, Any]) -> str | None:
    """The entry's digest, or None for one that cannot be canonicalized (the chain
    check names it)."""
    try:
        return entry_digest(entry)
    except ProtocolError:
        return None


# --- actors and proposals -----------------------------------------------------------------


def _check_actors(
    actors: Mapping[str, Mapping[str, Any]],
    latest_key: Mapping[str, tuple[str, str]],
    findings: list[Finding],
) -> int:
    """Each actor document's current key must be its chain's latest (§5)."""
    ok = 0
    for actor, document in actors.items():
        if actor not in latest_key:
            findings.append(
                Finding(
                    actor,
                    None,
                    "actor_without_chain",
                    "no verified chain for this actor, so its key cannot be checked",
                )
            )
            continue
        want_id, want = latest_key[actor]
        methods = document.get("assertionMethod")
        listed = methods if isinstance(methods, list) else [methods]
        keys = {
            m.get("id"): m.get("publicKeyMultibase")
            for m in listed
            if isinstance(m, Mapping) and m.get("type") == "Multikey"
        }
        if keys.get(want_id) == want and len(keys) == 1:
            ok += 1
            continue
        shown = ", ".join(f"{k}={v}" for k, v in sorted(keys.items(), key=str)) or "none"
        findings.append(
            Finding(
                actor,
                None,
                "actor_key_mismatch",
                f"the actor document's assertionMethod ({shown:.300}) is not the chain's "
                f"latest key {want_id}={want}",
            )
        )
    return ok


def _check_proposals(b: _Sorted, findings: list[Finding]) -> dict[str, tuple[ProposalSpec, str]]:
    """Each valid proposal's spec and digest, by its entry id."""
    specs: dict[str, tuple[ProposalSpec, str]] = {}
    for entry_id, entry in b.questions.items():
        try:
            tallies_due(entry)  # a deadline that is no time makes no valid proposal
            specs[entry_id] = (parse_spec(entry), entry_digest(entry))
        except ProtocolError as exc:
            findings.append(_finding(exc, entry, "bad_proposal"))
    return specs


def _finding(exc: ProtocolError, entry: Mapping[str, Any], what: str | None = None) -> Finding:
    actor = exc.actor if exc.actor is not None else str(entry.get("actor", ""))
    seq = exc.seq if exc.seq is not None else entry.get("seq")
    return Finding(actor, seq if isinstance(seq, int) else None, what or exc.code, exc.detail)


# --- tallies ----------------------------------------------------------------------------


class _TallyJob(msgspec.Struct, frozen=True):
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


class _TallyPart(msgspec.Struct, frozen=True):
    entry_id: str
    size: int  # ballots and receipts checked
    ok: bool
    recounted: int
    ballots_ok: int
    receipts_ok: int
    findings: list[Finding]
    signed_ok: int = 0
    custodial: int = 0


def _tally_jobs(
    b: _Sorted, specs: Mapping[str, tuple[ProposalSpec, str]], findings: list[Finding]
) -> tuple[list[_TallyJob], dict[tuple[str, str], tuple[str, Tally]]]:
    jobs: list[_TallyJob] = []
    tallies: dict[tuple[str, str], tuple[str, Tally]] = {}
    # one copy per seq (the signed one where a copy was forged): the chain as checked
    chains: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in b.by_id.values():
        chains[entry["actor"]].append(entry)
    rosters = _Rosters(chains)
    for entry in b.tallies:
        try:
            tally = parse_tally(entry)
        except ProtocolError as exc:
            findings.append(_finding(exc, entry))
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
            findings.append(_finding(exc, entry, "bad_roster"))
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
            findings.append(_finding(exc, entry))
            continue
        jobs.append(
            _TallyJob(
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


class _Rosters:
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


def _check_tally(job: _TallyJob) -> _TallyPart:
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
    return _TallyPart(
        job.entry_id, size, not out, recounted, ballots_ok, receipts_ok, out, signed_ok, custodial
    )


def _check_member_signatures(job: _TallyJob, fail: Callable[[str, str], None]) -> int:
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


def _recount(job: _TallyJob, fail: Callable[[str, str], None]) -> int:
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


def _check_leaves(job: _TallyJob, receipts: Sequence[str], fail: Callable[[str, str], None]) -> int:
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


# --- decisions and receipts -------------------------------------------------------------------


def _on_time(question: Mapping[str, Any], tally: Mapping[str, Any]) -> bool:
    """The lateness rule of protocol/deadlines.py, as node/regional.py applies it.

    Both times are signed; ``_check_proposals`` has refused a Question whose
    ``tallies_due`` is not a time and the envelope check a malformed ``published``."""
    return tally_lateness(tallies_due(question), tally) is None


def _check_decisions(
    b: _Sorted,
    specs: Mapping[str, tuple[ProposalSpec, str]],
    tallies: Mapping[tuple[str, str], tuple[str, Tally]],
    findings: list[Finding],
) -> list[str]:
    ok: list[str] = []
    for entry in b.decisions:
        proposal = entry.get("proposal")
        if not isinstance(proposal, str) or proposal not in specs:
            findings.append(
                Finding(
                    entry["actor"],
                    entry["seq"],
                    "unknown_proposal",
                    f"the decision is for proposal {proposal!r:.200}, not in the bundle",
                )
            )
            continue
        spec, pdigest = specs[proposal]
        counted = [v for (_, p), v in sorted(tallies.items()) if p == proposal]
        try:
            verify_decision(spec, counted, entry, proposal=proposal, proposal_digest=pdigest)
        except ProtocolError as exc:
            findings.append(_finding(exc, entry, "decision_mismatch"))
            continue
        ok.append(entry["id"])
    return ok


def _check_receipt(
    b: _Sorted, tallies: Mapping[tuple[str, str], tuple[str, Tally]], receipt: str
) -> ReceiptCheck:
    groups: dict[tuple[str, str], list[str]] = {
        key: [r.receipt for r in records] for key, records in b.ballots.items()
    }
    groups.update(b.receipts)
    for key, receipts in sorted(groups.items()):
        if receipt not in receipts:
            continue
        actor, proposal = key
        if key not in tallies:
            return ReceiptCheck(receipt, False, actor, proposal, why="its tally is not valid")
        tally = tallies[key][1]
        try:
            proof = receipt_proof(receipts, receipt)
            verify_receipt(receipt, proof, tally.ballots_root)
            if proof.tree_size != tally.ballots_size:
                raise ProtocolError(
                    f"tree size {proof.tree_size} is not the tally's {tally.ballots_size}"
                )
        except ProtocolError as exc:
            return ReceiptCheck(receipt, False, actor, proposal, why=exc.detail)
        return ReceiptCheck(
            receipt,
            True,
            actor,
            proposal,
            proof.leaf_index,
            proof.tree_size,
            proof.root,
            proof.path,
        )
    return ReceiptCheck(
        receipt, False, why="no tally in the bundle has this receipt among its leaves"
    )


# --- chains -------------------------------------------------------------------------------


class _ChainPart(msgspec.Struct, frozen=True):
    actor: str
    size: int  # entries checked
    findings: list[Finding]
    valid_seqs: list[int]
    latest_key: tuple[str, str] | None
    equivocating: bool
    accepted: dict[int, str]  # seq -> digest of the one signed copy where others are forged


def _check_chain(group: tuple[str, list[dict[str, Any]]]) -> _ChainPart:
    """One actor's chain through chain.audit_chains: proofs, links, keys, forks."""
    actor, entries = group
    try:
        chain = audit_chains(entries).actors[actor]
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Hostile input that chain.py does not yet turn into a ChainError (e.g. an
        # unhashable "prev"): the chain is unverified and the audit says so.
        why = f"the chain could not be checked: {type(exc).__name__}: {exc}"
        finding = Finding(actor, None, "malformed", why)
        return _ChainPart(actor, len(entries), [finding], [], None, False, {})
    state = chain.state
    findings = [
        Finding(actor, f.seq, f.code, f.detail + _evidence(f.evidence)) for f in chain.findings
    ]
    through = chain.verified_through
    real = chain.equivocations
    valid = [] if through is None else [s for s in range(through + 1) if s not in real]
    return _ChainPart(
        actor=actor,
        size=len(entries),
        findings=findings,
        valid_seqs=valid,
        latest_key=None if state is None else (state.key_id, state.key.multibase),
        equivocating=bool(real),
        accepted=dict(chain.genuine),
    )


def _evidence(digests: tuple[str, ...]) -> str:
    return f" (entry digests {', '.join(digests)})" if digests else ""
