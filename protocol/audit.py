"""Audit of a bundle: re-check the whole signature chain offline (docs/auditing.md).

Theory of operation. ``audit_bundle`` makes one pass over the records and asks the
module that owns each rule; it never restates a rule itself:

1. chains (protocol/chain_audit.py ``audit_chains``): every proof by the key valid at its
   seq, links, gaps, order, equivocation, key rotations, retired keys (§5); of two
   copies of one seq, one the actor did not sign is a forgery, not an equivocation,
   and the signed one is the one checked further;
2. actor documents: the current ``assertionMethod`` key equals the chain's latest;
3. proposals (protocol/ballots.py ``parse_spec``): each ``Question`` is a valid spec;
4. tallies, recounted by protocol/recount.py (one job per signed tally, checked on its
   own): against the proposal, the roster at the tally's seq, and its disclosed
   ballots (validity, receipts, member signatures §7.5, the recount, the ballots
   root) or, for a secret vote, its receipts' root and size;
5. decisions (aggregate.py ``verify_decision``) against the proposal's rule and the
   signed tallies in the bundle that were on time (protocol/deadlines.py);
6. agendas (protocol/audit_agenda.py): a qualified item the region closed without a
   vote, and agenda entries that break §10.4;
7. partner facilitation (protocol/audit_facilitation.py): each ``requested_by`` against
   the request and the region's grants in force at that seq;
8. with a receipt: its inclusion proof against the tally's signed root (RFC 9162).

Findings are collected, never raised, so one audit names every problem; the report
(protocol/audit_report.py) sorts them by (actor, seq, what) so two auditors print the
same report; protocol/bundle_index.py groups the records the way the checks read them.
The expensive, independent parts (one actor's chain, one tally's ballots) go through
``mapper``, a ``map``-like callable: the caller may pass a process pool's ``map``
(protocol/ starts no processes itself), and the functions mapped are module-level so they pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from protocol.aggregate import verify_decision
from protocol.audit_agenda import agenda_findings
from protocol.audit_facilitation import facilitation_findings
from protocol.audit_nesting import check_decisions as nested_decisions
from protocol.audit_report import AuditReport, Finding, ReceiptCheck, Tallied, finding_of
from protocol.ballots import ProposalSpec, parse_spec, receipt_proof, verify_receipt
from protocol.bundle import Record as BundleRecord
from protocol.bundle_index import BundleIndex, entry_digest_or_none
from protocol.chain import entry_digest
from protocol.chain_audit import audit_chains
from protocol.deadlines import tallies_due, tally_lateness
from protocol.errors import ProtocolError
from protocol.recount import recount_tally, tally_jobs
from protocol.tally import Tally

__all__ = [
    "AuditReport",
    "Finding",
    "Mapper",
    "ReceiptCheck",
    "Tallied",
    "audit_bundle",
    "entry_digest_or_none",
]

T = TypeVar("T")
R = TypeVar("R")
# what ``audit_bundle`` runs its independent checks through: ``map`` or a pool's
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]


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
    b = BundleIndex.of(records)
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
    jobs, tallies = tally_jobs(b, specs, findings)
    recounted = 0
    tallies_ok = 0
    ballots_ok = 0
    receipts_ok = 0
    signed_ok = custodial_seen = 0
    for part in run(recount_tally, jobs):
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
        for j in jobs
        if j.entry_id in valid and _on_time(b.questions[j.tally.proposal], valid[j.entry_id])
    }
    signed = {key: value for key, value in tallies.items() if key in counted}
    decisions_ok = nested_decisions(b, specs, signed, findings, _check_decisions)  # §10.6
    findings += agenda_findings(valid.values())
    findings += facilitation_findings(valid.values())  # §10.7 requested_by

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


def _check_proposals(
    b: BundleIndex, findings: list[Finding]
) -> dict[str, tuple[ProposalSpec, str]]:
    """Each valid proposal's spec and digest, by its entry id."""
    specs: dict[str, tuple[ProposalSpec, str]] = {}
    for entry_id, entry in b.questions.items():
        try:
            tallies_due(entry)  # a deadline that is no time makes no valid proposal
            specs[entry_id] = (parse_spec(entry), entry_digest(entry))
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, "bad_proposal"))
    return specs


# --- decisions and receipts -------------------------------------------------------------------


def _on_time(question: Mapping[str, Any], tally: Mapping[str, Any]) -> bool:
    """The lateness rule of protocol/deadlines.py, as node/regional.py applies it.

    Both times are signed; ``_check_proposals`` has refused a Question whose
    ``tallies_due`` is not a time and the envelope check a malformed ``published``."""
    return tally_lateness(tallies_due(question), tally) is None


def _check_decisions(
    b: BundleIndex,
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
            findings.append(finding_of(exc, entry, "decision_mismatch"))
            continue
        ok.append(entry["id"])
    return ok


def _check_receipt(
    b: BundleIndex, tallies: Mapping[tuple[str, str], tuple[str, Tally]], receipt: str
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
    """One actor's chain through chain_audit.audit_chains: proofs, links, keys, forks."""
    actor, entries = group
    try:
        report = audit_chains(entries)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Hostile input that chain.py does not yet turn into a ChainError (e.g. an
        # unhashable "prev"): the chain is unverified and the audit says so.
        why = f"the chain could not be checked: {type(exc).__name__}: {exc}"
        finding = Finding(actor, None, "malformed", why)
        return _ChainPart(actor, len(entries), [finding], [], None, False, {})
    # Every finding of the report, not only the chain's own: an entry that cannot even
    # be canonicalized never joins a chain, and must not vanish from the audit with it.
    findings = [
        Finding(actor, f.seq, f.code, f.detail + _evidence(f.evidence)) for f in report.findings
    ]
    chain = report.actors.get(actor)
    if chain is None:
        if not findings:
            findings = [Finding(actor, None, "malformed", "no entry of this chain can be read")]
        return _ChainPart(actor, len(entries), findings, [], None, False, {})
    state = chain.state
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
