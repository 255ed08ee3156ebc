"""Member-signed ballots: what checking members' own signatures costs.

Builds (not timed) one chapter whose members each registered a ballot key, P open
proposals and one member-signed ballot per member and proposal, with the real
protocol/ builders. Then times, single process:

1. ``verify_member_ballot`` alone (decode the signed ballot, canonical payload, one
   Ed25519 check) per second, beside raw PyNaCl Ed25519 verifies per second in the same
   run (the floor: one signature check, nothing else) and their ratio;
2. ``audit_bundle`` of the chapter's bundle with every ballot member-signed, against
   the same bundle with the signatures left out (all custodial): the extra time the
   member signatures cost the audit, per signed ballot, as a ratio to the floor.

Targets: (1) ratio >= 0.5; (2) the signature part of the audit >= 0.5 of the floor.
Ends with one ``RESULT`` line.

    python bench/member_ballots.py [--quick] [--members M] [--proposals P]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
import nacl.signing

from protocol.audit import audit_bundle
from protocol.ballots import ChoiceBallot, ProposalSpec, ballot_receipt, spec_fields
from protocol.bundle import ActorRecord, BallotRecord, EntryRecord
from protocol.chain import entry_digest, genesis
from protocol.counting import make_tally
from protocol.entries import key_id, make_entry, multikey, roster_change_body
from protocol.keys import SigningKey
from protocol.member_ballots import (
    decode_signed_ballot,
    sign_member_ballot,
    verify_member_ballot,
)
from protocol.roster import key_change_body, roster_at, roster_root
from protocol.tally import tally_body

T0 = "2026-11-26T14:00:00Z"
ACTOR = "https://chapter.example/actor"
OPTIONS = ("parks", "transit", "housing")


def seed(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def build(members: int, proposals: int) -> tuple[list[Any], list[Any], list[bytes]]:
    """(signed bundle records, custodial records, encoded signed ballots)."""
    key = SigningKey(seed(ACTOR))
    entries: list[dict[str, Any]] = [genesis(ACTOR, "Chapter", "chapter", key, T0)]

    def append(body: dict[str, Any]) -> dict[str, Any]:
        entry = make_entry(
            body,
            actor=ACTOR,
            seq=len(entries),
            prev=entry_digest(entries[-1]),
            key=key,
            key_id=key_id(ACTOR, 0),
            published=T0,
        )
        entries.append(entry)
        return entry

    keys = {f"m{i}": SigningKey(seed(f"m{i}")) for i in range(members)}
    for m in keys:
        append(roster_change_body("add", m, "member"))
    for m, k in keys.items():
        append(key_change_body("key", m, k.verify_key.multibase))
    spec = ProposalSpec(method="choice", options=OPTIONS)
    signed_records: list[Any] = []
    custodial: list[Any] = []
    encoded: list[bytes] = []
    for p in range(proposals):
        question = append({"type": "Question", "name": f"P{p}", **spec_fields(spec)})
        typed, receipts = [], []
        for i, (m, k) in enumerate(keys.items()):
            raw = {"choice": OPTIONS[(i + p) % 3]}
            signed = sign_member_ballot(k, question["id"], m, 1, raw)
            encoded.append(msgspec.json.encode(signed))
            nonce = seed(m + question["id"])
            receipt = ballot_receipt(question["id"], ChoiceBallot(**raw), nonce)
            typed.append(ChoiceBallot(**raw))
            receipts.append(receipt)
            common = {
                "actor": ACTOR,
                "proposal": question["id"],
                "member": m,
                "ballot": raw,
                "nonce": nonce.hex(),
                "receipt": receipt,
            }
            custodial.append(BallotRecord(**common))
            signed_records.append(
                BallotRecord(**common, counter=1, key=signed.key, signature=signed.signature)
            )
        size, root = roster_root(roster_at(entries))
        tally = make_tally(
            spec,
            chapter=ACTOR,
            proposal=question["id"],
            proposal_digest=entry_digest(question),
            ballots=typed,
            receipts=receipts,
            eligible=size,
            roster_root=root,
            roster_size=size,
        )
        append({"type": "Tally", **tally_body(tally)})
    doc = {"id": ACTOR, "type": "Group", "assertionMethod": [multikey(ACTOR, 0, key.verify_key)]}
    head: list[Any] = [ActorRecord(document=doc), *(EntryRecord(entry=e) for e in entries)]
    return head + signed_records, head + custodial, encoded


def floor_rate(n: int) -> float:
    sk = nacl.signing.SigningKey(seed("floor"))
    vk = sk.verify_key
    msg = b"x" * 150  # about the size of a canonical ballot statement
    sig = sk.sign(msg).signature
    start = time.perf_counter()
    for _ in range(n):
        vk.verify(msg, sig)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--members", type=int)
    parser.add_argument("--proposals", type=int)
    args = parser.parse_args()
    members = args.members or (500 if args.quick else 2000)
    proposals = args.proposals or (4 if args.quick else 10)
    signed_bundle, custodial_bundle, encoded = build(members, proposals)
    n = len(encoded)
    floor = floor_rate(max(2000, n // 2))

    keysets = {f"m{i}": frozenset({SigningKey(seed(f"m{i}")).verify_key.multibase})
               for i in range(members)}  # fmt: skip
    start = time.perf_counter()
    for raw in encoded:
        sb = decode_signed_ballot(raw)
        verify_member_ballot(
            sb, proposal=sb.proposal, member=sb.member, member_keys=keysets[sb.member]
        )
    verify_rate = n / (time.perf_counter() - start)

    start = time.perf_counter()
    plain = audit_bundle(custodial_bundle)
    t_custodial = time.perf_counter() - start
    start = time.perf_counter()
    report = audit_bundle(signed_bundle)
    t_signed = time.perf_counter() - start
    assert plain.ok and report.ok, (plain.findings[:3], report.findings[:3])
    assert report.verified.member_signed == n
    extra = max(t_signed - t_custodial, 1e-9)
    audit_sig_rate = n / extra

    print(f"{n} member-signed ballots ({members} members x {proposals} proposals)")
    print(f"floor: raw Ed25519 verify          {floor:10.0f} /s")
    ratio = verify_rate / floor
    print(f"verify_member_ballot               {verify_rate:10.0f} /s  ratio {ratio:.2f}")
    print(f"audit, all custodial               {t_custodial:10.2f} s")
    print(f"audit, all member-signed           {t_signed:10.2f} s")
    sig_ratio = audit_sig_rate / floor
    print(f"signature part of the audit        {audit_sig_rate:10.0f} /s  ratio {sig_ratio:.2f}")
    print(
        f"RESULT ballots={n} floor_verify_per_s={floor:.0f} member_verify_per_s={verify_rate:.0f}"
        f" verify_ratio={verify_rate / floor:.2f} audit_custodial_s={t_custodial:.2f}"
        f" audit_signed_s={t_signed:.2f} audit_signature_ratio={audit_sig_rate / floor:.2f}"
    )


if __name__ == "__main__":
    main()
