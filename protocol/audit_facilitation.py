"""The audit's facilitation check: every region entry that says a facilitator asked for
it (``requested_by``) is checked against the request and the region's grants
(docs/protocol.md §10.7).

Theory of operation. A region carries out a facilitator's signed request and cites its
digest; whether the facilitator held a grant in force is decided on the region's own
chain (protocol/facilitation.py), so an auditor holding that chain and the request
re-judges it exactly as the region had to. Findings are against the region entry that
cites: a request it could not carry out (misaddressed, not granted, revoked), an entry
that is not what was asked, a request carried out twice. A region's malformed grant or
revocation is a finding against that entry. A cited request that is not in the bundle
cannot be judged (the facilitator's chain was not exported with it) and is left alone.

Only entries whose chains verified are passed in. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from protocol.audit_report import Finding, finding_of
from protocol.errors import ProtocolError
from protocol.events import source
from protocol.facilitation import (
    GRANT_TYPE,
    REQUEST_TYPE,
    REQUESTED_BY,
    REVOKE_TYPE,
    FacilitationError,
    check_requested,
    parse_grant,
    parse_revoke,
)

__all__ = ["BAD_ENTRY", "facilitation_findings"]

BAD_ENTRY = "bad_facilitation_entry"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def facilitation_findings(entries: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """Findings about every ``requested_by`` in ``entries`` (chain-verified, any type)."""
    findings: list[Finding] = []
    requests: dict[str, Mapping[str, Any]] = {}
    grants: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    citing: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        kind = entry.get("type")
        try:
            if kind == REQUEST_TYPE:
                requests[source(entry).digest] = entry
            elif kind in (GRANT_TYPE, REVOKE_TYPE):
                (parse_grant if kind == GRANT_TYPE else parse_revoke)(entry)
                grants[str(entry["actor"])].append(entry)
            elif REQUESTED_BY in entry:
                citing[str(entry.get("actor"))].append(entry)
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, BAD_ENTRY))
    for region, cited in sorted(citing.items()):
        findings += _check_region(grants.get(region, []), cited, requests)
    return findings


def _check_region(
    grants: list[Mapping[str, Any]],
    cited: list[Mapping[str, Any]],
    requests: Mapping[str, Mapping[str, Any]],
) -> list[Finding]:
    findings: list[Finding] = []
    first: dict[str, int] = {}
    for entry in sorted(cited, key=lambda e: int(e.get("seq", -1))):
        digest = entry.get(REQUESTED_BY)
        request = requests.get(digest) if isinstance(digest, str) else None
        if request is None and isinstance(digest, str) and _HEX64.fullmatch(digest):
            continue  # the facilitator's chain is not in the bundle: cannot be judged
        try:
            check_requested([*grants, entry], [] if request is None else [request])
        except FacilitationError as exc:
            findings.append(finding_of(exc, entry, f"facilitation_{exc.code}"))
            continue
        except ProtocolError as exc:
            findings.append(finding_of(exc, entry, BAD_ENTRY))
            continue
        seq = int(entry["seq"])
        if str(digest) in first:
            why = f"carries out request {digest} again (first at seq {first[str(digest)]})"
            findings.append(Finding(str(entry["actor"]), seq, "facilitation_replayed", why))
        else:
            first[str(digest)] = seq
    return findings
