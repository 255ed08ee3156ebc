"""A bundle's records grouped the way the audit's checks need them (docs/auditing.md).

Entries by actor (every copy, for the chain check) and by id (one copy per seq: the
signed one where another copy was forged, protocol/chain_audit.py ``genuine``); proposals,
tallies and decisions in chain order, so which of two tallies is "the second" does not
depend on the order of the bundle's lines; ballots and receipts by (actor, proposal).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from protocol.audit_report import Finding
from protocol.bundle import ActorRecord, BallotRecord, EntryRecord, Header, ReceiptRecord
from protocol.bundle import Record as BundleRecord
from protocol.chain import entry_digest
from protocol.errors import ProtocolError

__all__ = ["BundleIndex", "entry_digest_or_none"]


class BundleIndex:
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
    def of(cls, records: Iterable[BundleRecord]) -> BundleIndex:
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
