"""`convene audit FILE_OR_URL` and `convene export --out FILE` (ARCHITECTURE.md, Command line).

``audit`` reads a bundle file in chunks through protocol/bundle.py's ``BundleDecoder``
(strict records, bounded lines), or crawls live nodes from a URL through
federation/crawl.py, hands the records to ``protocol.audit.audit_bundle`` — the same
code the nodes run — and exits 0 when everything verifies, 1 naming the first failure
(actor, seq, what, why), 2 when the input cannot be read at all (docs/auditing.md).

Proof checks and receipt recomputation dominate an audit, so they are spread over
forked worker processes running the same protocol/ functions (``fork_map``).

``export`` writes this node's bundle through node/export.py (which the names
``bundle_records``, ``complete_chains``, ``export_bundle`` and ``incomplete_chains``
are re-exported from, for callers that import them from here).
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
from typing import Any

import click
import msgspec
from tqdm import tqdm

from federation.client import FederationClient
from federation.crawl import crawl
from federation.errors import FederationError
from node.errors import NodeError
from node.export import bundle_records, complete_chains, export_bundle, incomplete_chains
from protocol.audit import AuditReport, Mapper, audit_bundle
from protocol.bundle import ActorRecord, Body, BundleDecoder, BundleError, Header
from protocol.errors import ProtocolError

__all__ = [
    "audit",
    "bundle_records",
    "complete_chains",
    "crawl_bundle",
    "export",
    "export_bundle",
    "fork_map",
    "incomplete_chains",
    "read_bundle_file",
    "run_audit",
    "summary",
]

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
PROGRESS_MIN_BYTES = 32 << 20  # below this an audit takes about a second: no bar
PROGRESS_MIN_RECORDS = 100_000  # the same, counted in records (a URL crawl has no file)
PARALLEL_MIN_ITEMS = 5_000  # a process pool costs more than it saves on small bundles


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
