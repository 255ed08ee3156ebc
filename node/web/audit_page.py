"""The audit page: this node's signature chain, newest first, each entry checked.

Theory of operation (ARCHITECTURE "The signature chain"). The page does not trust the
database: every entry is checked with protocol/chain.py's `verify_next`, the same
rule `convene audit` applies — its proof by the key valid at its seq, its `prev`
link to the entry before, its seq without a gap — in order from the genesis. The
chain only grows, so the checked prefix is kept (`ChainAudit`) and each visit checks
only the entries added since, off the event loop; the last checked entry is re-read
on every visit and, if its bytes changed in the database, everything is checked
again from the genesis. After a failure, later entries hang off a broken link and
are shown as not verified. Other nodes that federation's inbox caught signing two
different entries for one seq (equivocation) are listed with the evidence's digests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from federation import store as fed_store
from node.federation_glue import FOLLOW_KEY
from node.ledger import Ledger
from node.web.page import Visit, page, render, services
from protocol.chain import ChainState, entry_digest, verify_next
from protocol.errors import ProtocolError

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditRow:
    seq: int
    type: str
    digest: str
    published: str
    status: str  # "verified" or "not verified"
    why: str


@dataclass(frozen=True)
class Checked:
    """Where checking a chain stands: the state after the last good entry, the first
    failure (once broken, nothing after it verifies), and one row per entry."""

    state: ChainState | None = None
    broken: str | None = None
    rows: tuple[AuditRow, ...] = ()


def check_more(done: Checked, entries: Sequence[dict[str, Any]]) -> Checked:
    """Check `entries`, the next ones after `done.rows`, oldest first. Pure."""
    state, broken, rows = done.state, done.broken, list(done.rows)
    for entry in entries:
        seq = entry.get("seq")
        try:
            digest = entry_digest(entry)
        except ProtocolError as exc:
            digest = f"unreadable: {exc.detail}"
        if broken is not None:
            status, why = "not verified", f"follows an entry that failed ({broken})"
        else:
            try:
                state = verify_next(state, entry)
                status, why = "verified", "proof, link and key check out"
            except ProtocolError as exc:
                broken = exc.describe()
                status, why = "not verified", broken
        row_seq = seq if isinstance(seq, int) else -1
        published = str(entry.get("published", ""))
        rows.append(AuditRow(row_seq, str(entry.get("type")), digest, published, status, why))
    return Checked(state, broken, tuple(rows))


@dataclass
class ChainAudit:
    """The checked prefix of this node's chain, shared by the page's visits."""

    done: Checked = field(default_factory=Checked)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def refresh(self, ledger: Ledger) -> Checked:
        async with self.lock:
            if self.done.rows:
                last = self.done.rows[-1]
                again = await ledger.entries(last.seq, 1)
                if not again or _digest(again[0]) != last.digest:
                    self.done = Checked()  # a checked entry changed: start over
            new = await ledger.entries(len(self.done.rows))
            if new:
                self.done = await asyncio.to_thread(check_more, self.done, new)
            return self.done


def _digest(entry: dict[str, Any]) -> str:
    try:
        return entry_digest(entry)
    except ProtocolError as exc:
        return f"unreadable: {exc.detail}"


AUDIT_KEY = web.AppKey("convene_web_audit", ChainAudit)


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
    done = await request.app[AUDIT_KEY].refresh(services(request).ledger)
    rows = list(reversed(done.rows))
    findings = [] if done.broken is None else [done.broken]
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
    app[AUDIT_KEY] = ChainAudit()
    app.router.add_get("/audit", audit)
