"""`convene demo`: one region and three chapters on loopback, a regional vote end to end.

Every node is a real `convene serve` process with its own temporary data folder and
port; everything between them is real signed HTTP (docs/regional.md walks through
the same flow by hand). `Cluster` is also what the integration tests drive, so the
demo and the tests exercise one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click
import msgspec

from node.audit_command import read_bundle_file, run_audit, summary
from node.bootstrap import init_node
from node.clock import rfc3339
from node.config import load_config
from node.export import export_bundle
from node.services import build_services

T = TypeVar("T")
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Node:
    """One `convene serve` process and the credentials the demo made for it."""

    name: str
    kind: str
    data: Path
    port: int
    grace_s: int
    actor: str = ""
    organizer: dict[str, str] = field(default_factory=dict)
    members: list[dict[str, str]] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.data.parent / f"{self.data.name}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *CONVENE,
                "serve",
                "--data",
                str(self.data),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--allow-private-network",
                "--regional-grace-s",
                str(self.grace_s),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), or kill after 10 s."""
        self.interrupt()
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def interrupt(self) -> None:
        """Ask the process to stop without waiting for it. SIGTERM, because a process
        started in the background inherits SIGINT ignored; the node exits gracefully
        on either."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """kill -9: no goodbye, as a crash or a pulled plug."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


async def wait_until(
    what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0
) -> T:
    """Poll `probe` until it returns something other than None (or fail naming `what`)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = await probe()
        except (aiohttp.ClientError, OSError) as exc:
            found, last = None, exc
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


class Cluster:
    """A region and its chapters on loopback, each a real node process."""

    def __init__(self, root: Path, chapters: list[str], *, grace_s: int = 5) -> None:
        self.root = root
        self.region = Node("Region", "region", root / "region", free_port(), grace_s)
        self.chapters = [
            Node(name, "chapter", root / name.lower().replace(" ", "-"), free_port(), grace_s)
            for name in chapters
        ]
        self.http: aiohttp.ClientSession | None = None

    @property
    def nodes(self) -> list[Node]:
        return [self.region, *self.chapters]

    async def __aenter__(self) -> Cluster:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.interrupt()  # all at once, then wait for each
        for node in self.nodes:
            node.stop()
        if self.http is not None:
            await self.http.close()

    # -- setting up ------------------------------------------------------------------

    async def create(self, members_per_chapter: int, *, start: bool = False) -> None:
        """Data folders, keys and members (organizers on every node); with `start`,
        each node's process starts as soon as its folder is ready, so that the nodes'
        start-up overlaps the making of the next ones."""
        for node in self.nodes:
            created = await init_node(node.data, name=node.name, url=node.url, kind=node.kind)
            node.actor = created.to_json()["actor"]
            services = build_services(load_config(node.data))
            await services.db.open()
            try:
                node.organizer = (await services.members.add("Organizer", "organizer")).to_json()
                if node.kind == "chapter":
                    for i in range(members_per_chapter):
                        added = await services.members.add(f"{node.name} member {i + 1}")
                        node.members.append(added.to_json())
            finally:
                await services.db.close()
            if start:
                node.start()
        if start:
            await self.wait_up(self.nodes)

    async def start(self, nodes: list[Node] | None = None) -> None:
        """Start `nodes` (default: all) and wait until they answer."""
        for node in nodes or self.nodes:
            node.start()
        await self.wait_up(nodes or self.nodes)

    async def wait_up(self, nodes: list[Node]) -> None:
        for node in nodes:

            async def alive(n: Node = node) -> bool | None:
                return await self._alive(n)

            await wait_until(f"{node.name} to listen", alive)

    async def _alive(self, node: Node) -> bool | None:
        if node.proc is not None and node.proc.poll() is not None:
            log = (node.data.parent / f"{node.data.name}.log").read_text()[-2000:]
            raise RuntimeError(f"{node.name} exited: {log}")
        status, _ = await self.call("GET", node, "/healthz")
        return True if status == 200 else None

    async def join(self) -> None:
        """Every chapter follows the region; wait until the region accepted them all."""
        for chapter in self.chapters:
            status, body = await self.call(
                "POST", chapter, "/api/federation/join", {"region": self.region.url}
            )
            if status != 202:
                raise RuntimeError(f"{chapter.name} could not join: {status} {body}")

        async def accepted() -> bool | None:
            _, body = await self.call("GET", self.region, "/api/federation")
            ok = {f["actor"] for f in body["followers"] if f["state"] == "accepted"}
            return True if ok >= {c.actor for c in self.chapters} else None

        await wait_until("the region to accept its chapters", accepted)
        for chapter in self.chapters:

            async def following(c: Node = chapter) -> bool | None:
                _, body = await self.call("GET", c, "/api/federation")
                return True if any(f["state"] == "accepted" for f in body["following"]) else None

            await wait_until(f"{chapter.name} to see the Accept", following)

    # -- voting ------------------------------------------------------------------------

    async def call(
        self, method: str, node: Node, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        assert self.http is not None
        token = token or node.organizer.get("token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, node.url + path, json=body, headers=headers) as r:
            text = await r.text()
            try:
                return r.status, msgspec.json.decode(text)
            except msgspec.DecodeError:
                return r.status, text

    async def propose(self, closes_in_s: int, **fields: Any) -> dict[str, Any]:
        closes = rfc3339(time.time() + closes_in_s)
        body = {"title": "Regional proposal", "closes_at": closes, "scope": "regional", **fields}
        status, view = await self.call("POST", self.region, "/api/proposals", body)
        if status != 201:
            raise RuntimeError(f"the region refused the proposal: {status} {view}")
        return dict(view)

    async def adopted(self, chapter: Node, object_id: str, timeout: float = 20.0) -> str:
        """The chapter's local id of the region's proposal, once it arrived and opened."""

        async def probe() -> str | None:
            _, body = await self.call("GET", chapter, "/api/proposals")
            for item in body["items"]:
                if item["object_id"] == object_id and item["status"] == "open":
                    return str(item["id"])
            return None

        return await wait_until(f"{chapter.name} to open {object_id}", probe, timeout)

    async def vote(
        self, chapter: Node, proposal_id: str, ballots: list[dict[str, Any]]
    ) -> list[str]:
        receipts = []
        for member, ballot in zip(chapter.members, ballots, strict=False):
            status, body = await self.call(
                "POST", chapter, f"/api/proposals/{proposal_id}/ballots", ballot, member["token"]
            )
            if status != 201:
                raise RuntimeError(f"{member['name']}'s ballot was refused: {status} {body}")
            receipts.append(str(body["receipt"]))
        return receipts

    async def regional(self, node: Node, proposal_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", node, f"/api/proposals/{proposal_id}/regional")
        if status != 200:
            raise RuntimeError(f"{node.name}: {status} {body}")
        return dict(body)

    async def settled(
        self,
        node: Node,
        proposal_id: str,
        verification: str | None = "verified",
        timeout: float = 30,
    ) -> dict[str, Any]:
        """The node's regional view once decided (and, by default, verified)."""

        async def probe() -> dict[str, Any] | None:
            view = await self.regional(node, proposal_id)
            ok = view["status"] == "decided" and view["verification"] == verification
            return view if ok else None

        return await wait_until(f"{node.name} to settle {proposal_id}", probe, timeout)


# --- the demo itself -------------------------------------------------------------------

CHAPTERS = ["Riverside", "Hillcrest", "Lakeview"]
# Riverside and Hillcrest agree, Lakeview disagrees.
BALLOTS = {
    "Riverside": ["agree", "agree", "abstain"],
    "Hillcrest": ["agree", "agree", "disagree"],
    "Lakeview": ["disagree", "disagree", "agree"],
}


def decision_table(view: dict[str, Any], names: dict[str, str]) -> str:
    """The decision as a table: one row per chapter, then both rules and the outcome."""
    decision = view["decision"]
    by_chapter = {t["chapter"]: t for t in view["tallies"]}
    rows = [("chapter", "cast/eligible", "agree", "abstain", "disagree", "block", "outcome")]
    for result in decision["chapters"]:
        tally = by_chapter.get(result["chapter"], {})
        counts = tally.get("counts") or {}
        outcome = (result.get("outcome") or {}).get("result", "-")
        rows.append(
            (
                names.get(result["chapter"], result["chapter"]),
                f"{result['cast']}/{result['eligible']}",
                *(str(counts.get(k, "-")) for k in ("agree", "abstain", "disagree", "block")),
                f"{outcome} ({result['status']})",
            )
        )
    c = decision["counts"]
    rows.append(
        (
            "pooled",
            f"{decision['cast']}/{decision['eligible']}",
            *(str(c.get(k, "-")) for k in ("agree", "abstain", "disagree", "block")),
            decision["pooled"]["result"],
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        "",
        f"by chapters: {decision['by_chapters']['result']} — {decision['by_chapters']['reason']}",
        f"rule {view['rule']}: {decision['outcome']['result'].upper()} — "
        f"{decision['outcome']['reason']}",
    ]
    return "\n".join(lines)


async def run_demo(root: Path, out: Path | None, wait: bool, echo: Callable[[str], None]) -> int:
    started = time.monotonic()
    async with Cluster(root, CHAPTERS, grace_s=5) as cluster:
        echo(f"creating a region and {len(CHAPTERS)} chapters in {root}")
        await cluster.create(members_per_chapter=3, start=True)
        for node in cluster.nodes:
            echo(f"  {node.kind:8} {node.name:10} {node.url}  actor {node.actor}")
        await cluster.join()
        echo("every chapter follows the region (signed Follow, Accept entry)")
        proposal = await cluster.propose(
            5,
            title="Join the regional tenants' union campaign",
            body="Each chapter votes; the region aggregates the signed tallies.",
            method="consent",
            rule="double-majority",
            quorum="1/2",
        )
        object_id = proposal["object_id"]
        echo(f"the region published {object_id} (consent, double majority, closes in 5 s)")
        local: dict[str, str] = {}
        receipts: dict[str, list[str]] = {}
        for chapter in cluster.chapters:
            local[chapter.name] = await cluster.adopted(chapter, object_id)
            ballots = [{"choice": c} for c in BALLOTS[chapter.name]]
            receipts[chapter.name] = await cluster.vote(chapter, local[chapter.name], ballots)
            echo(f"  {chapter.name}: {', '.join(BALLOTS[chapter.name])}")
        echo("waiting for the close, the chapters' signed tallies and the region's decision")
        region_view = await cluster.settled(cluster.region, proposal["id"])
        views = {c.name: await cluster.settled(c, local[c.name]) for c in cluster.chapters}
        names = {n.actor: n.name for n in cluster.nodes}
        echo("")
        echo(decision_table(region_view, names))
        echo("")
        for name, view in views.items():
            same = view["decision"]["outcome"] == region_view["decision"]["outcome"]
            echo(f"  {name} computed it itself: {view['verification']} (same outcome: {same})")
        # One chapter's own export is enough: it kept the region's entries and the
        # other chapters' tallies as they arrived, and the export completes their
        # chains from the outboxes, so it re-checks the decision on its own.
        bundle = out or root / "demo-bundle.jsonl"
        first = cluster.chapters[0]
        lines, warnings = await export_bundle(first.data, bundle, allow_private_network=True)
        receipt = receipts[first.name][0]
        report = run_audit(read_bundle_file(bundle, show_progress=False), receipt=receipt, jobs=1)
        echo("")
        echo(f"convene export of {first.name} alone: {lines} records in {bundle}")
        for warning in warnings:
            echo(f"  warning: {warning}")
        echo(summary(str(bundle), report))
        echo(f"done in {time.monotonic() - started:.1f} s")
        if not report.ok:
            return 1
        if wait:
            echo("")
            echo("web pages (Ctrl-C to stop):")
            for node in cluster.nodes:
                echo(
                    f"  {node.name:10} {node.url}/  organizer login: {node.organizer['login_url']}"
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
            echo("stopping the nodes")
    return 0


@click.command("demo")
@click.option("--no-wait", is_flag=True, help="exit when done instead of serving the pages")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write the bundle")
@click.option("--json", "as_json", is_flag=True, hidden=True)
@click.option("--data", type=click.Path(path_type=Path), default=None, hidden=True)
def demo_command(no_wait: bool, out: Path | None, as_json: bool, data: Path | None) -> None:
    """One region and three chapters on loopback: a regional vote end to end, the
    decision and the audit printed; the web pages stay up until Ctrl-C."""
    del as_json, data  # every command takes them; the demo uses temporary folders
    with tempfile.TemporaryDirectory(prefix="convene-demo-") as tmp:
        try:
            code = asyncio.run(run_demo(Path(tmp), out, not no_wait, click.echo))
        except KeyboardInterrupt:
            code = 0
    sys.exit(code)
