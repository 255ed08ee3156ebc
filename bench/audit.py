"""Auditing a region: 100 chapters x 200 members x 20 proposals, every ballot open.

Builds (not timed) a region whose chain holds 20 regional proposals and their
decisions, and 100 chapters whose chains hold 200 roster changes and 20 signed
tallies each, plus every open ballot (400,000 at full size), all with the real
protocol/ builders, and writes it as a bundle file. Then times:

1. ``audit_bundle`` on the decoded records in one process: entries + ballots verified
   per second, beside raw PyNaCl Ed25519 verifies per second measured in the same run
   (the floor: one signature check of a 64-byte message, nothing else) and their ratio;
2. the whole bundle the way ``convene audit FILE`` does it — read and decode the file,
   audit with proof checks and recounts spread over a process pool with both cores.

Targets: ratio >= 0.6 single-process; the whole bundle in under 10 s.
Ends with one ``RESULT`` line.

    python bench/audit.py [--quick] [--chapters N] [--members M] [--proposals P]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nacl.signing

from node.audit_command import read_bundle_file, run_audit
from protocol.aggregate import aggregate, decision_body
from protocol.ballots import ChoiceBallot, ProposalSpec, ballot_receipt, spec_fields
from protocol.bundle import (
    ActorRecord,
    BallotRecord,
    EntryRecord,
    encode_record,
    header,
)
from protocol.chain import entry_digest, genesis
from protocol.counting import make_tally
from protocol.entries import accept_body, key_id, make_entry, multikey, roster_change_body
from protocol.keys import SigningKey
from protocol.roster import roster_root
from protocol.tally import parse_tally, tally_body

T0 = "2026-11-26T14:00:00Z"
REGION = "https://region.example/actor"
OPTIONS = ("parks", "transit", "housing")


def seed(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Chain:
    def __init__(self, actor: str, kind: str) -> None:
        self.actor = actor
        self.key = SigningKey(seed(actor))
        self.kid = key_id(actor, 0)
        self.entries: list[dict[str, Any]] = [genesis(actor, actor, kind, self.key, T0)]
        self.head = entry_digest(self.entries[0])

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = make_entry(
            body,
            actor=self.actor,
            seq=len(self.entries),
            prev=self.head,
            key=self.key,
            key_id=self.kid,
            published=T0,
        )
        self.entries.append(entry)
        self.head = entry_digest(entry)
        return entry

    def actor_document(self) -> dict[str, Any]:
        return {
            "id": self.actor,
            "type": "Group",
            "assertionMethod": [multikey(self.actor, 0, self.key.verify_key)],
        }


def chapter_id(i: int) -> str:
    return f"https://chapter{i}.example/actor"


def build_chapter(args: tuple[int, int, list[dict[str, Any]], ProposalSpec]) -> list[bytes]:
    """One chapter's actor, chain and ballots, as encoded bundle lines (runs in a worker)."""
    i, members, questions, spec = args
    ch = Chain(chapter_id(i), "chapter")
    roster = {}
    for m in range(members):
        member = f"c{i}-m{m}"
        ch.append(roster_change_body("add", member, "member"))
        roster[member] = "member"
    size, root = roster_root(roster)
    lines: list[bytes] = []
    for q in questions:
        proposal = q["id"]
        ballots, receipts = [], []
        for m, member in enumerate(roster):
            raw = {"choice": OPTIONS[(m * 7 + i + len(proposal)) % len(OPTIONS)]}
            nonce = seed(member + proposal)
            receipt = ballot_receipt(proposal, ChoiceBallot(**raw), nonce)
            ballots.append(ChoiceBallot(**raw))
            receipts.append(receipt)
            lines.append(
                encode_record(
                    BallotRecord(
                        actor=ch.actor,
                        proposal=proposal,
                        member=member,
                        ballot=raw,
                        nonce=nonce.hex(),
                        receipt=receipt,
                    )
                )
            )
        tally = make_tally(
            spec,
            chapter=ch.actor,
            proposal=proposal,
            proposal_digest=entry_digest(q),
            ballots=ballots,
            receipts=receipts,
            eligible=size,
            roster_root=root,
            roster_size=size,
        )
        ch.append({"type": "Tally", **tally_body(tally)})
    head = [encode_record(ActorRecord(document=ch.actor_document()))]
    head += [encode_record(EntryRecord(entry=e)) for e in ch.entries]
    return head + lines


def build(
    path: Path, chapters: int, members: int, proposals: int, pool: ProcessPoolExecutor
) -> None:
    region = Chain(REGION, "region")
    listed = tuple(chapter_id(i) for i in range(chapters))
    for c in listed:
        region.append(accept_body(f"{c}/follows/1", c))
    spec = ProposalSpec(
        method="choice", options=OPTIONS, scope="regional", rule="pooled", chapters=listed
    )
    questions = [
        region.append({"type": "Question", "name": f"Proposal {p}", **spec_fields(spec)})
        for p in range(proposals)
    ]
    jobs = [(i, members, questions, spec) for i in range(chapters)]
    tallies: dict[str, list[tuple[str, Any]]] = {q["id"]: [] for q in questions}
    with path.open("wb") as f:
        f.write(encode_record(header(REGION, T0)))
        for lines in pool.map(build_chapter, jobs):
            f.writelines(lines)
            for line in lines:
                if b'"type":"Tally"' in line:
                    from msgspec.json import decode

                    entry = decode(line)["entry"]
                    tallies[entry["proposal"]].append((entry_digest(entry), parse_tally(entry)))
        for q in questions:
            decision = aggregate(
                spec, tallies[q["id"]], proposal=q["id"], proposal_digest=entry_digest(q)
            )
            region.append({"type": "Decision", **decision_body(decision)})
        f.write(encode_record(ActorRecord(document=region.actor_document())))
        f.writelines(encode_record(EntryRecord(entry=e)) for e in region.entries)


def raw_verify_rate(n: int) -> float:
    """The floor: PyNaCl verifying n distinct 64-byte messages, one process."""
    key = nacl.signing.SigningKey(seed("floor"))
    messages = [seed(str(i)) + seed(str(-i)) for i in range(n)]
    signed = [key.sign(m).signature for m in messages]
    verify = key.verify_key.verify
    start = time.perf_counter()
    for m, s in zip(messages, signed, strict=True):
        verify(m, s)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a bundle about 1/40 the size")
    parser.add_argument("--chapters", type=int)
    parser.add_argument("--members", type=int)
    parser.add_argument("--proposals", type=int)
    args = parser.parse_args()
    chapters = args.chapters or (20 if args.quick else 100)
    members = args.members or (50 if args.quick else 200)
    proposals = args.proposals or (10 if args.quick else 20)
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(cores) as pool:
        path = Path(tmp) / "bundle.jsonl"
        t = time.perf_counter()
        build(path, chapters, members, proposals, pool)
        size_mb = path.stat().st_size / 1e6
        print(
            f"built {chapters} chapters x {members} members x {proposals} proposals: "
            f"{size_mb:.1f} MB in {time.perf_counter() - t:.1f} s (not timed)"
        )

        raw = raw_verify_rate(3000 if args.quick else 20000)

        records = read_bundle_file(path, show_progress=False)
        t = time.perf_counter()
        report = run_audit(records, receipt=None, jobs=1)  # audit_bundle, one process
        single_s = time.perf_counter() - t
        assert report.ok, report.findings[:3]
        items = report.verified.entries + report.verified.ballots
        del records, report

        before = os.times()
        t = time.perf_counter()
        full = run_audit(read_bundle_file(path, show_progress=False), receipt=None, jobs=cores)
        full_s = time.perf_counter() - t
        after = os.times()
        main_cpu = after.user - before.user + after.system - before.system
        worker_cpu = (
            after.children_user
            - before.children_user
            + after.children_system
            - before.children_system
        )
        assert full.ok, full.findings[:3]
        assert full.verified.entries + full.verified.ballots == items

    rate = items / single_s
    ratio = rate / raw
    print(f"raw PyNaCl verify (floor):      {raw:10.0f} /s")
    print(
        f"audit, one process:             {rate:10.0f} /s  ({items} entries + ballots "
        f"in {single_s:.2f} s)  ratio {ratio:.2f} (target >= 0.6)"
    )
    print(
        f"whole bundle, {cores} processes:     {full_s:10.2f} s  (read, decode, audit; "
        "target < 10 s at full size)"
    )
    print(
        f"  CPU: {main_cpu:.2f} s in the main process, {worker_cpu:.2f} s in the workers; "
        f"load average {os.getloadavg()[0]:.1f} on {cores} cores"
    )
    print(
        f"RESULT verified_per_s={rate:.0f} raw_verify_per_s={raw:.0f} ratio={ratio:.2f} "
        f"full_bundle_s={full_s:.2f}"
    )


if __name__ == "__main__":
    main()
