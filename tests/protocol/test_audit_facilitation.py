"""The audit's facilitation check (protocol.audit_facilitation, protocol.md §10.7): every
`requested_by` judged against the request and the region's grants, as findings."""

from __future__ import annotations

import hashlib
from typing import Any

from protocol.audit import audit_bundle
from protocol.audit_facilitation import facilitation_findings
from protocol.ballots import ProposalSpec, spec_fields
from protocol.bundle import ActorRecord, Body, EntryRecord
from protocol.canonical import digest
from protocol.chain import entry_digest, genesis
from protocol.entries import key_id, make_entry, multikey
from protocol.facilitation import grant_body, request_body, revoke_body
from protocol.keys import SigningKey

REGION = "https://region.example/actor"
PARTNER = "https://partner.example/actor"
WHEN = "2026-11-26T15:00:00Z"
ASK = {"title": "Rent freeze", "body": "Freeze rents", "method": "consent"}


def sign(body: dict[str, Any], actor: str, seq: int) -> dict[str, Any]:
    key = SigningKey.from_seed(actor.encode().ljust(32, b"\0")[:32])
    return make_entry(
        body, actor=actor, seq=seq, prev="00" * 32, key=key,
        key_id=f"{actor}#ed25519-0", published=WHEN,
    )  # fmt: skip


def question(seq: int, cited: str, name: str = "Rent freeze") -> dict[str, Any]:
    body = {"type": "Question", "name": name, "content": "Freeze rents", "method": "consent"}
    return sign({**body, "requested_by": cited}, REGION, seq)


def whats(entries: list[dict[str, Any]]) -> list[tuple[str, int | None, str]]:
    return [(f.actor, f.seq, f.what) for f in facilitation_findings(entries)]


def test_an_honest_region_has_no_finding_and_each_tampering_is_named() -> None:
    g = sign(grant_body(PARTNER), REGION, 2)
    req = sign(request_body(REGION, digest(g), "propose", ASK), PARTNER, 5)
    assert whats([g, req, question(3, digest(req))]) == []
    # carried out after the revocation
    late = [g, req, sign(revoke_body(digest(g)), REGION, 3), question(4, digest(req))]
    assert whats(late) == [(REGION, 4, "facilitation_revoked")]
    # carried out twice
    twice = [g, req, question(3, digest(req)), question(4, digest(req))]
    assert whats(twice) == [(REGION, 4, "facilitation_replayed")]
    # not what was asked
    assert whats([g, req, question(3, digest(req), "Other")]) == [
        (REGION, 3, "facilitation_not_as_requested")
    ]
    # no grant at all
    assert whats([req, question(3, digest(req))]) == [(REGION, 3, "facilitation_not_granted")]
    # a request for another region, cited here
    other = sign(request_body(PARTNER, digest(g), "propose", ASK), PARTNER, 6)
    assert whats([g, other, question(3, digest(other))]) == [
        (REGION, 3, "facilitation_misaddressed")
    ]


def test_what_cannot_be_judged_is_left_alone_and_bad_entries_are_named() -> None:
    g = sign(grant_body(PARTNER), REGION, 2)
    assert whats([g, question(3, "ab" * 32)]) == []  # the request is not in the bundle
    assert whats([g, question(3, "not a digest")]) == [(REGION, 3, "facilitation_malformed")]
    bad = sign({"type": "FacilitatorGrant", "facilitator": 7}, REGION, 4)
    assert whats([bad]) == [(REGION, 4, "bad_facilitation_entry")]
    # A tampered request (one byte of its body changed) no longer matches the citation.
    req = sign(request_body(REGION, digest(g), "propose", ASK), PARTNER, 5)
    q = question(3, digest(req))
    tampered = {**req, "body": {**ASK, "title": "Rent freezE"}}
    assert whats([g, tampered, q]) == []  # cited digest absent: not judged, not passed off
    assert whats([g, req, q]) == []


class Chain:
    """One actor's chain, appended with the real builders."""

    def __init__(self, actor: str, kind: str) -> None:
        self.actor = actor
        self.key = SigningKey(hashlib.sha256(actor.encode()).digest())
        self.entries = [genesis(actor, actor, kind, self.key, WHEN)]

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = make_entry(
            body, actor=self.actor, seq=len(self.entries), prev=entry_digest(self.entries[-1]),
            key=self.key, key_id=key_id(self.actor, 0), published=WHEN,
        )  # fmt: skip
        self.entries.append(entry)
        return entry

    def records(self) -> list[Body]:
        document = {
            "id": self.actor,
            "type": "Group",
            "outbox": f"{self.actor}/outbox",
            "assertionMethod": [multikey(self.actor, 0, self.key.verify_key)],
        }
        return [ActorRecord(document=document), *(EntryRecord(entry=e) for e in self.entries)]


def audited(revoke_first: bool) -> list[tuple[str, int | None, str]]:
    region, partner = Chain(REGION, "region"), Chain(PARTNER, "chapter")
    g = region.append(grant_body(PARTNER))
    req = partner.append(request_body(REGION, entry_digest(g), "propose", ASK))
    if revoke_first:
        region.append(revoke_body(entry_digest(g)))
    fields = spec_fields(ProposalSpec(method="consent"))
    body = {"type": "Question", "name": "Rent freeze", "content": "Freeze rents", **fields}
    region.append({**body, "requested_by": entry_digest(req)})
    report = audit_bundle([*region.records(), *partner.records()])
    return [(f.actor, f.seq, f.what) for f in report.findings]


def test_audit_bundle_checks_requested_by() -> None:
    assert audited(revoke_first=False) == []
    assert audited(revoke_first=True) == [(REGION, 3, "facilitation_revoked")]
