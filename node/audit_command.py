"""`convene audit FILE_OR_URL` and `convene export --out FILE` (ARCHITECTURE.md, Command line).

``audit`` reads a bundle file in chunks through protocol/bundle.py's ``BundleDecoder``
(strict records, bounded lines), or crawls live nodes from a URL through
federation/crawl.py, hands the records to ``protocol.audit.audit_bundle`` — the same
code the nodes run — and exits 0 when everything verifies, 1 naming the first failure
(actor, seq, what, why), 2 when the input cannot be read at all (docs/auditing.md).

Proof checks and receipt recomputation dominate an audit, so they are spread over
forked worker processes running the same protocol/ functions (``fork_map``).

``export`` writes this node's bundle from its database: its actor document and chain,
the entries it received and verified, its counted ballots; and it completes the chains
of other actors it holds only in part from their outboxes.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from tqdm import tqdm

from federation.client import FederationClient
from federation.crawl import crawl, fetch_chain
from federation.documents import actor_document
from federation.errors import FederationError
from node import chain_store, regional_store
from node.clock import rfc3339, system_clock
from node.config import load_config
from node.errors import NodeError
from node.federation_glue import NodeSource
from node.services import NodeServices, build_services
from node.storage import Database
from protocol.audit import AuditReport, audit_bundle, entry_digest_or_none
from protocol.bundle import (
    ActorRecord,
    BallotRecord,
    Body,
    BundleDecoder,
    BundleError,
    EntryRecord,
    Header,
    ReceiptRecord,
    encode_record,
    header,
)
from protocol.errors import ProtocolError

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
PROGRESS_MIN_BYTES = 32 << 20  # below this an audit takes about a second: no bar
PROGRESS_MIN_RECORDS = 100_000  # the same, counted in records (a URL crawl has no file)
PARALLEL_MIN_ITEMS = 5_000  # a process pool costs more than it saves on small bundles

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]


class UnreadableInput(Exception):
    """The bundle cannot be read at all (missing file, not JSON Lines, oversized line)."""


READ_CHUNK = 8 << 20


def read_bundle_file(path: Path, *, show_progress: bool | None = None) -> list[Any]:
    """Every record of the bundle at ``path`` (header first), decoded strictly.

    Read in chunks and decoded by ``BundleDecoder``, which refuses an oversized line
    as soon as it is seen, so memory stays bounded by a chunk and one line.
    """
    try:
        size = path.stat().st_size
        stream = path.open("rb")
    except OSError as exc:
        raise UnreadableInput(f"cannot open {path}: {exc.strerror or exc}") from exc
    if show_progress is None:
        show_progress = sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES
    decoder = BundleDecoder()
    records: list[Any] = []
    with (
        stream,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc="reading",
            file=sys.stderr,
            disable=not show_progress,
        ) as bar,
    ):
        # Hundreds of thousands of small containers and no cycles among them: the
        # cyclic collector would rescan them all again and again while they pile up.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while chunk := stream.read(READ_CHUNK):
                records += decoder.feed(chunk)
                bar.update(len(chunk))
            records += decoder.finish()
        except BundleError as exc:
            raise UnreadableInput(f"{path}: {exc.detail}") from exc
        except OSError as exc:
            raise UnreadableInput(f"cannot read {path}: {exc.strerror or exc}") from exc
        finally:
            if collecting:
                gc.enable()
    return records


def crawl_bundle(url: str, *, allow_private_network: bool) -> list[Body]:
    async def run() -> list[Body]:
        async with FederationClient(
            signer=None, allow_private_network=allow_private_network
        ) as client:
            _, records = await crawl(url, client)
            return records

    try:
        return asyncio.run(run())
    except FederationError as exc:
        raise UnreadableInput(f"cannot crawl {url}: {exc}") from exc


# Work handed to forked workers. The arguments (hundreds of thousands of ballots) are
# inherited through fork() instead of being pickled to each worker: pickling them cost
# more than the checks themselves. Only slice bounds go out and small results come back.
_inherited: tuple[Callable[[Any], Any], list[Any]] | None = None


def _run_slice(bounds: tuple[int, int]) -> list[Any]:
    assert _inherited is not None, "only called in a worker forked by fork_map"
    fn, items = _inherited
    gc.disable()  # a worker lives for one map; refcounting frees what it makes
    return [fn(item) for item in items[bounds[0] : bounds[1]]]


def fork_map(fn: Callable[[Any], Any], args: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, args)`` across ``workers`` forked processes, order kept; results come
    slice by slice as they are done (so a progress bar moves)."""
    global _inherited
    items = list(args)
    if workers < 2 or len(items) < 2:
        yield from map(fn, items)
        return
    parts = min(len(items), workers * 4)  # a few slices per worker evens out the load
    step = -(-len(items) // parts)
    bounds = [(k, min(k + step, len(items))) for k in range(0, len(items), step)]
    _inherited = (fn, items)
    # Frozen objects are never scanned by a worker's collector, so their pages stay
    # shared with this process instead of being copied on the first collection.
    gc.freeze()
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for part in pool.map(_run_slice, bounds):
                yield from part
    finally:
        _inherited = None
        gc.unfreeze()


def process_mapper(jobs: int, items: int) -> Mapper[Any, Any] | None:
    """A ``map`` over forked processes when it pays off, else ``None`` (this process)."""
    workers = jobs if jobs > 0 else (os.cpu_count() or 1)
    if workers < 2 or items < PARALLEL_MIN_ITEMS:
        return None
    return functools.partial(fork_map, workers=workers)


def run_audit(
    records: list[Any], *, receipt: str | None, jobs: int, show_progress: bool = False
) -> AuditReport:
    body = records  # the header too: the audit checks the exporter's chain is there
    collecting = gc.isenabled()
    gc.disable()  # as in read_bundle_file: many containers, no cycles
    checked = sum(1 for r in body if not isinstance(r, ActorRecord | Header))  # progress
    bar = tqdm(
        total=checked, unit="rec", desc="auditing", file=sys.stderr, disable=not show_progress
    )
    try:
        return audit_bundle(
            body, receipt=receipt, mapper=process_mapper(jobs, len(body)), progress=bar.update
        )
    finally:
        bar.close()
        if collecting:
            gc.enable()


def wants_progress(records: int) -> bool:
    """A bar only where someone watches (a terminal) and only when there is a wait."""
    return sys.stderr.isatty() and records >= PROGRESS_MIN_RECORDS


def summary(source: str, report: AuditReport) -> str:
    s = report.seen
    v = report.verified
    lines = [
        f"audited {source}",
        f"  actors     {v.actors}/{s.actors} verified",
        f"  entries    {v.entries}/{s.entries} verified",
        f"  proposals  {v.proposals}/{s.proposals} verified",
        f"  tallies    {v.tallies}/{s.tallies} verified ({report.recounted} recounted from "
        "their ballots or receipts)",
        f"  decisions  {v.decisions}/{s.decisions} verified",
        f"  ballots    {v.ballots}/{s.ballots} verified",
        f"             {v.member_signed}/{s.member_signed} member-signed verified, "
        f"{s.custodial} custodial (recorded by the node without a member signature)",
        f"  receipts   {v.receipts}/{s.receipts} verified",
    ]
    if report.equivocating:
        lines.append(f"  EQUIVOCATING (two entries for one seq): {', '.join(report.equivocating)}")
    if report.receipt is not None:
        r = report.receipt
        lines.append(
            f"  receipt    {r.receipt}: "
            + (
                f"included as leaf {r.leaf_index} of {r.tree_size} in {r.actor}'s tally of "
                f"{r.proposal}"
                if r.included
                else f"NOT included: {r.why}"
            )
        )
    if report.ok:
        lines.append("VALID: every signature, link, tally and decision checks out")
    else:
        first = report.findings[0]
        lines.append(f"INVALID: {len(report.findings)} finding(s); first: {first.describe()}")
        lines += [f"  - {f.describe()}" for f in report.findings[1:20]]
        if len(report.findings) > 20:
            lines.append(f"  ... and {len(report.findings) - 20} more (see --json)")
    return "\n".join(lines)


@click.command("audit")
@click.argument("source", metavar="FILE_OR_URL")
@click.option("--receipt", help="also prove this ballot receipt is included in its tally")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--jobs", type=int, default=0, help="worker processes (default: one per core)")
@click.option(
    "--allow-private-network",
    is_flag=True,
    help="allow crawling loopback and private addresses (tests, the demo)",
)
@click.option(
    "--data", type=click.Path(path_type=Path), default=Path("./convene-data"), hidden=True
)
def audit(
    source: str,
    receipt: str | None,
    as_json: bool,
    jobs: int,
    allow_private_network: bool,
    data: Path,
) -> None:
    """Verify an audit bundle (a file, or live nodes from a URL).

    Exit 0 when everything verifies, 1 naming the first failure, 2 on unreadable input.
    """
    del data  # accepted like every command's; an audit reads no node database
    try:
        if source.startswith(("http://", "https://")):
            records: list[Any] = crawl_bundle(source, allow_private_network=allow_private_network)
        else:
            records = read_bundle_file(Path(source))
        report = run_audit(
            records, receipt=receipt, jobs=jobs, show_progress=wants_progress(len(records))
        )
    except (UnreadableInput, ProtocolError) as exc:
        if as_json:
            error = {"error": "unreadable_input", "detail": str(exc)}
            click.echo(msgspec.json.encode(error).decode(), err=True)
        else:
            click.echo(f"convene audit: unreadable input: {exc}", err=True)
        sys.exit(EXIT_UNREADABLE)
    if as_json:
        click.echo(msgspec.json.encode(report.to_json()).decode())
    else:
        click.echo(summary(source, report))
    sys.exit(EXIT_VALID if report.ok else EXIT_INVALID)


# --- export -------------------------------------------------------------------------------

# The storage modules have no query for these three; they are read-only and used by
# the export alone, so they live here (proposal_store.counted_receipts gives receipts
# only, without member, ballot and nonce).
_COUNTED_BALLOTS_SQL = (
    "SELECT p.object_id AS proposal, p.spec AS spec, b.member_id AS member,"
    " b.ballot AS ballot, b.nonce AS nonce, b.receipt AS receipt,"
    " s.counter AS counter, s.key AS key, s.signature AS signature"
    " FROM ballots b JOIN proposals p ON p.id = b.proposal_id"
    # member-signed (§7.5), unless the member revoked the key before the count: the
    # signature then vouches for nothing and the ballot is exported as custodial
    " LEFT JOIN ballot_signatures s ON s.receipt = b.receipt AND NOT EXISTS ("
    "SELECT 1 FROM member_keys k WHERE k.key = s.key AND k.revoked_seq <= p.tally_seq)"
    " WHERE b.counted = 1 AND p.tally_seq IS NOT NULL"
    " ORDER BY p.object_id, b.receipt"
)
_RECEIVED_ENTRIES_SQL = "SELECT body FROM fed_entry ORDER BY actor, seq, digest"
_REMOTE_ACTORS_SQL = "SELECT document FROM fed_actor ORDER BY id"


async def _has_table(db: Database, name: str) -> bool:
    row = await db.fetchone(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    )
    return row is not None


async def bundle_records(services: NodeServices) -> list[Body]:
    """This node's bundle body: actor documents, its own and received entries, and the
    counted ballots of every tallied proposal (secret ones as receipts only)."""
    db = services.db
    me = services.identity.actor
    records: list[Body] = [
        ActorRecord(document=actor_document(await NodeSource(services).local_actor()))
    ]
    if await _has_table(db, "fed_actor"):
        for row in await db.fetchall(_REMOTE_ACTORS_SQL):
            document = msgspec.json.decode(bytes(row["document"]))
            if isinstance(document, dict) and document.get("id") != me:
                records.append(ActorRecord(document=document))
    records += [
        EntryRecord(entry=msgspec.json.decode(blob)) for blob in await chain_store.entries(db)
    ]
    received: list[dict[str, Any]] = []
    if await _has_table(db, "fed_entry"):
        for row in await db.fetchall(_RECEIVED_ENTRIES_SQL):
            received.append(msgspec.json.decode(bytes(row["body"])))
    if await _has_table(db, "regional_questions"):
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
    for row in await db.fetchall(_COUNTED_BALLOTS_SQL):
        secret = bool(msgspec.json.decode(row["spec"]).get("secret", False))
        if secret or row["nonce"] is None:
            records.append(
                ReceiptRecord(actor=me, proposal=row["proposal"], receipt=row["receipt"])
            )
        else:
            records.append(
                BallotRecord(
                    actor=me,
                    proposal=row["proposal"],
                    member=row["member"],
                    ballot=msgspec.json.decode(row["ballot"]),
                    nonce=row["nonce"],
                    receipt=row["receipt"],
                    counter=row["counter"],
                    key=row["key"],
                    signature=row["signature"],
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


@click.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--offline",
    is_flag=True,
    help="do not fetch the rest of other actors' chains (the audit then cannot verify them)",
)
@click.option(
    "--allow-private-network",
    is_flag=True,
    default=None,
    help="let the chain fetch reach loopback and private addresses (default: the node's config)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option(
    "--data",
    default=Path("./convene-data"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the node's data folder",
)
def export(
    out: Path, offline: bool, allow_private_network: bool | None, as_json: bool, data: Path
) -> None:
    """Write an audit bundle (JSON Lines) of this node to OUT.

    Other actors' chains the node holds only in part (a received proposal or tally) are
    completed from their outboxes, so an auditor can check every proof.
    """
    try:
        lines, warnings = asyncio.run(
            export_bundle(data, out, fetch=not offline, allow_private_network=allow_private_network)
        )
    except (OSError, ProtocolError, NodeError) as exc:
        detail = str(exc)
        if as_json:
            click.echo(msgspec.json.encode({"error": "export_failed", "detail": detail}), err=True)
        else:
            click.echo(f"convene export: {detail}", err=True)
        sys.exit(1)
    for warning in warnings:
        click.echo(f"convene export: warning: {warning}", err=True)
    if as_json:
        result = {"out": str(out), "records": lines, "warnings": warnings}
        click.echo(msgspec.json.encode(result).decode())
    else:
        click.echo(f"wrote {lines} records to {out}")
