"""Recounting one tally from what a bundle discloses (protocol.recount), job by job, as
the audit's worker processes do it."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import msgspec
from test_audit import CH_A, CH_B, build

from protocol.audit_report import Finding
from protocol.ballots import ProposalSpec, parse_spec
from protocol.bundle import BallotRecord, Body
from protocol.bundle_index import BundleIndex
from protocol.chain import entry_digest
from protocol.recount import TallyJob, recount_tally, tally_jobs


def jobs_of(records: list[Body]) -> tuple[list[TallyJob], list[Finding]]:
    index = BundleIndex.of(copy.deepcopy(records))
    index.classify()
    specs: dict[str, tuple[ProposalSpec, str]] = {
        entry_id: (parse_spec(q), entry_digest(q)) for entry_id, q in index.questions.items()
    }
    findings: list[Finding] = []
    jobs, _ = tally_jobs(index, specs, findings)
    return jobs, findings


def test_every_tally_of_an_honest_bundle_recounts_clean() -> None:
    jobs, findings = jobs_of(build()["records"])
    assert findings == []
    parts = sorted(
        (job.tally.chapter, job.spec.secret, recount_tally(job)) for job in jobs
    )  # two open regional tallies, one secret local one
    assert [(c, s, p.ok, p.recounted, p.ballots_ok, p.receipts_ok) for c, s, p in parts] == [
        (CH_A, False, True, 1, 3, 0),
        (CH_A, True, True, 1, 0, 2),
        (CH_B, False, True, 1, 2, 0),
    ]
    assert all(p.findings == [] for _, _, p in parts)


def _with_ballot(records: list[Body], who: str, **changes: Any) -> list[Body]:
    out = copy.deepcopy(records)
    i = next(k for k, r in enumerate(out) if isinstance(r, BallotRecord) and r.member == who)
    record = out[i]
    assert isinstance(record, BallotRecord)
    out[i] = msgspec.structs.replace(record, **changes)
    return out


def _recount_of(records: list[Body], chapter: str) -> list[tuple[str, int | None, str]]:
    jobs, _ = jobs_of(records)
    (job,) = [j for j in jobs if j.tally.chapter == chapter and not j.spec.secret]
    return [(f.actor, f.seq, f.what) for f in recount_tally(job).findings]


def test_a_changed_ballot_no_longer_has_its_receipt_and_recounts_differently() -> None:
    records = _with_ballot(build()["records"], "a1", ballot={"choice": "transit"})
    found = _recount_of(records, CH_A)
    assert {what for _, _, what in found} == {"bad_ballot", "count_mismatch"}
    assert {actor for actor, _, _ in found} == {CH_A}


def test_a_ballot_of_someone_off_the_roster_is_named() -> None:
    records = _with_ballot(build()["records"], "b2", member="stranger")
    jobs, _ = jobs_of(records)
    (job,) = [j for j in jobs if j.tally.chapter == CH_B]
    part = recount_tally(job)
    assert [f.what for f in part.findings] == ["bad_ballot"]
    assert "'stranger' is not on the roster" in part.findings[0].why


def test_jobs_and_their_results_survive_pickling_to_a_worker() -> None:
    jobs, _ = jobs_of(build()["records"])
    for job in jobs:
        shipped = pickle.loads(pickle.dumps(job))
        assert shipped == job
        assert pickle.loads(pickle.dumps(recount_tally(shipped))) == recount_tally(job)
