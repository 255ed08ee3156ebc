"""`convene export`: this node's audit bundle (ARCHITECTURE.md, Command line; docs/auditing.md).

The bundle holds this node's actor document and chain, the entries of other actors it
received and verified (the inbox's and the regional ones), and the counted ballots of
every tallied proposal: open ones in full with any member signature (§7.5), secret ones
as receipts only. A node keeps only the entries it received from others, so the export
completes those chains from the actors' outboxes, letting an auditor check every proof.
The SQL it reads is in node/export_store.py; the bundle format is protocol/bundle.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from federation.client import FederationClient
from federation.crawl import fetch_chain
from federation.documents import actor_document
from federation.errors import FederationError
from node import chain_store, export_store, regional_store
from node.clock import rfc3339, system_clock
from node.config import load_config
from node.federation_glue import NodeSource
from node.services import NodeServices, build_services
from protocol.audit import entry_digest_or_none
from protocol.bundle import (
    ActorRecord,
    BallotRecord,
    Body,
    EntryRecord,
    ReceiptRecord,
    encode_record,
    header,
)

__all__ = ["bundle_records", "complete_chains", "export_bundle", "incomplete_chains"]


async def bundle_records(services: NodeServices) -> list[Body]:
    """This node's bundle body: actor documents, its own and received entries, and the
    counted ballots of every tallied proposal (secret ones as receipts only)."""
    db = services.db
    me = services.identity.actor
    records: list[Body] = [
        ActorRecord(document=actor_document(await NodeSource(services).local_actor()))
    ]
    for blob in await export_store.remote_actor_documents(db):
        document = msgspec.json.decode(blob)
        if isinstance(document, dict) and document.get("id") != me:
            records.append(ActorRecord(document=document))
    records += [
        EntryRecord(entry=msgspec.json.decode(blob)) for blob in await chain_store.entries(db)
    ]
    received: list[dict[str, Any]] = [
        msgspec.json.decode(blob) for blob in await export_store.received_entries(db)
    ]
    if await export_store.holds_regional(db):
        # the regional proposals, tallies and decisions this node verified and holds
        for question in await regional_store.questions(db):
            received.append(question.entry)
            for held in await regional_store.tallies(db, question.object_id):
                received.append(held.entry)
            for held in await regional_store.decisions(db, question.object_id):
                received.append(held.entry)
    seen: set[str | None] = set()
    for entry in received:
        if not isinstance(entry, dict) or entry.get("actor") == me:
            continue
        digest = entry_digest_or_none(entry)
        if digest not in seen:  # held both as an activity and as a regional entry
            seen.add(digest)
            records.append(EntryRecord(entry=entry))
    for b in await export_store.counted_ballots(db):
        secret = bool(msgspec.json.decode(b.spec).get("secret", False))
        if secret or b.nonce is None:
            records.append(ReceiptRecord(actor=me, proposal=b.proposal, receipt=b.receipt))
        else:
            records.append(
                BallotRecord(
                    actor=me,
                    proposal=b.proposal,
                    member=b.member,
                    ballot=msgspec.json.decode(b.ballot),
                    nonce=b.nonce,
                    receipt=b.receipt,
                    counter=b.counter,
                    key=b.key,
                    signature=b.signature,
                )
            )
    return records


def incomplete_chains(records: list[Body], me: str) -> list[str]:
    """Other actors whose entries in ``records`` do not run from seq 0 without a gap.

    A node keeps only the entries it received from others (a proposal, a tally, a
    decision); an auditor needs each such chain from its genesis to check a single
    proof, so the export completes them from the actors' outboxes when it can.
    """
    seqs: dict[str, set[int]] = {}
    for r in records:
        if isinstance(r, EntryRecord) and r.entry.get("actor") != me:
            actor, seq = r.entry.get("actor"), r.entry.get("seq")
            if isinstance(actor, str) and isinstance(seq, int):
                seqs.setdefault(actor, set()).add(seq)
    return sorted(a for a, s in seqs.items() if s != set(range(max(s) + 1)))


async def complete_chains(
    records: list[Body], me: str, *, allow_private_network: bool
) -> tuple[list[Body], list[str]]:
    """``records`` plus the full chains (and documents) of the actors they hold only in
    part, fetched over HTTP; and a warning for each actor that could not be fetched."""
    missing = incomplete_chains(records, me)
    if not missing:
        return records, []
    have_doc = {r.document.get("id") for r in records if isinstance(r, ActorRecord)}
    have_entry = {
        (r.entry.get("actor"), r.entry.get("seq"), entry_digest_or_none(r.entry))
        for r in records
        if isinstance(r, EntryRecord)
    }
    warnings: list[str] = []
    added: list[Body] = []
    async with FederationClient(signer=None, allow_private_network=allow_private_network) as client:
        for actor in missing:
            try:
                document, chain = await fetch_chain(client, actor)
            except FederationError as exc:
                warnings.append(
                    f"the chain of {actor} is incomplete and could not be fetched: {exc}"
                )
                continue
            if actor not in have_doc:
                added.append(ActorRecord(document=document))
            for entry in chain:
                key = (entry.get("actor"), entry.get("seq"), entry_digest_or_none(entry))
                if key not in have_entry:
                    have_entry.add(key)
                    added.append(EntryRecord(entry=entry))
    return records + added, warnings


async def export_bundle(
    data: Path,
    out: Path,
    *,
    fetch: bool = True,
    allow_private_network: bool | None = None,
    clock: Callable[[], float] = system_clock,
) -> tuple[int, list[str]]:
    """Write the bundle of the node in ``data`` to ``out``: how many records, and
    warnings about chains of other actors that could not be completed."""
    config = load_config(data)
    services = build_services(config)
    await services.db.open()
    try:
        records = await bundle_records(services)
    finally:
        await services.db.close()
    me = services.identity.actor
    warnings: list[str] = []
    if fetch:
        private = (
            config.allow_private_network if allow_private_network is None else allow_private_network
        )
        records, warnings = await complete_chains(records, me, allow_private_network=private)
    elif incomplete_chains(records, me):
        warnings = [
            f"the chain of {a} is incomplete (not fetched)" for a in incomplete_chains(records, me)
        ]
    head = header(services.identity.actor, rfc3339(clock()))
    tmp = out.with_name(out.name + ".part")
    with tmp.open("wb") as f:  # written aside and renamed: never a half bundle under `out`
        f.write(encode_record(head))
        for record in records:
            f.write(encode_record(record))
    tmp.replace(out)
    return len(records) + 1, warnings
