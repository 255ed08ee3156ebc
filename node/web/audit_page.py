"""The audit page: this chapter's signature chain, newest first, each entry checked.

The page re-verifies the whole chain with protocol/chain.py's `audit_chains` — the
same code `convene audit` runs — rather than trusting the database: an entry shows
"verified" only if its proof, its `prev` link and its key check out from the genesis
on. Two different entries with one `seq` are flagged as an equivocation
(ARCHITECTURE "The signature chain"), and so are the other nodes that federation's
inbox caught signing two entries for one seq: their evidence is listed by digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from federation import store as fed_store
from node.federation_glue import FOLLOW_KEY
from node.web.page import Visit, page, render, services
from protocol.chain import audit_chains, entry_digest
from protocol.errors import ProtocolError

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditRow:
    seq: int
    type: str
    digest: str
    published: str
    status: str  # "verified", "equivocation" or "not verified"
    why: str


def audit_rows(entries: list[dict[str, Any]]) -> tuple[list[AuditRow], list[str]]:
    """Rows newest first, and the report's findings as sentences."""
    report = audit_chains(entries)
    problems: dict[int | None, str] = {}
    for finding in report.findings:
        problems.setdefault(finding.seq, str(finding))
    rows = []
    for entry in entries:
        actor, seq = str(entry.get("actor")), int(entry.get("seq", -1))
        chain = report.actors.get(actor)
        through = chain.verified_through if chain is not None else None
        equivocal = chain is not None and seq in chain.equivocations
        try:
            digest = entry_digest(entry)
        except ProtocolError as exc:
            digest = f"unreadable: {exc.detail}"
        if equivocal:
            status, why = "equivocation", problems.get(seq, "two entries claim this seq")
        elif through is not None and seq <= through:
            status, why = "verified", "proof, link and key check out"
        else:
            status, why = "not verified", problems.get(seq, "follows an entry that failed")
        published = str(entry.get("published", ""))
        rows.append(AuditRow(seq, str(entry.get("type")), digest, published, status, why))
    rows.sort(key=lambda r: r.seq, reverse=True)
    return rows, [str(f) for f in report.findings]


@dataclass(frozen=True)
class CaughtEquivocating:
    actor: str
    seq: int
    digests: tuple[str, ...]


async def remote_equivocations(request: web.Request) -> list[CaughtEquivocating]:
    """Evidence the inbox kept of other actors' equivocations, read through federation."""
    follow = request.app.get(FOLLOW_KEY)
    if follow is None:  # federation not running (e.g. a tool building only the pages)
        return []
    found = await follow.host.write(lambda conn: fed_store.equivocations(conn))
    out = []
    for item in found:
        digests = []
        for body in item.entries:
            try:
                digests.append(entry_digest(msgspec.json.decode(body)))
            except (ProtocolError, msgspec.DecodeError):
                digests.append("unreadable entry")
        out.append(CaughtEquivocating(item.actor, item.seq, tuple(digests)))
    return out


@page
async def audit(request: web.Request, visit: Visit) -> web.Response:
    entries = await services(request).ledger.entries()
    rows, findings = audit_rows(entries)
    try:
        before = int(request.query.get("before", ""))
    except ValueError:
        before = None
    shown = [r for r in rows if before is None or r.seq < before][:PAGE_SIZE]
    older = shown[-1].seq if shown and shown[-1].seq > 0 else None
    context = {"rows": shown, "findings": findings, "total": len(rows), "older": older}
    context["caught"] = await remote_equivocations(request)
    return render(request, visit, "audit.html", context)


def add_audit_routes(app: web.Application) -> None:
    app.router.add_get("/audit", audit)
