"""The audit's report: findings, counts of what was seen and verified, a receipt's
answer (docs/auditing.md "The report").

A ``Finding`` says who (actor), where (seq, or None when it concerns no single entry),
what (a finding code) and why. Reports sort their findings by (actor, seq, what) so two
auditors print the same report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from protocol.errors import ProtocolError

__all__ = ["AuditReport", "Finding", "ReceiptCheck", "Tallied", "finding_of"]


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


def finding_of(exc: ProtocolError, entry: Mapping[str, Any], what: str | None = None) -> Finding:
    """The finding for ``exc`` raised while checking ``entry`` (``what`` overrides its code)."""
    actor = exc.actor if exc.actor is not None else str(entry.get("actor", ""))
    seq = exc.seq if exc.seq is not None else entry.get("seq")
    return Finding(actor, seq if isinstance(seq, int) else None, what or exc.code, exc.detail)
