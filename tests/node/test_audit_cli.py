"""`convene export` and `convene audit` as real processes on a real node's bundle.

A chapter node runs on loopback; members vote over the JSON API on an open and a
secret proposal; the node is stopped and exported. The audit of that file must pass,
and each edit an attacker might make to it must exit 1 naming (actor, seq, what);
unreadable input must exit 2.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner
from nodekit import ROOT, NodeProcess, add_member, call, free_port, init_node

from federation.client import FederationClient
from federation.crawl import CrawlError, CrawlLimits, crawl
from node.audit_command import read_bundle_file, run_audit
from node.cli import main
from node.export import complete_chains, incomplete_chains
from protocol.audit import audit_bundle
from protocol.ballots import ProposalSpec, spec_fields
from protocol.bundle import MAX_LINE_BYTES, ActorRecord, Body, EntryRecord
from protocol.chain import entry_digest, genesis
from protocol.entries import accept_body, key_id, make_entry, roster_change_body
from protocol.keys import SigningKey

CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]
AUDIT = [*CONVENE, "audit"]
EXPORT = [*CONVENE, "export"]


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """A real process, as a user runs it."""
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def audit_in_process(*args: str) -> Ran:
    """The same command through click's runner: same code and files, no interpreter start."""
    result = CliRunner().invoke(main, ["audit", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


async def vote(url: str, people: dict[str, Any]) -> dict[str, Any]:
    def tok(who: str) -> str:
        return str(people[who]["token"])

    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        for name, fields in (
            ("open", {"method": "choice", "options": ["north", "south"]}),
            ("secret", {"method": "consent", "secret": True}),
        ):
            body = {"title": f"{name} vote", "body": "?", **fields}
            status, p = await call(http, "POST", f"{url}/api/proposals", tok("org"), body)
            assert status == 201, p
            receipts = []
            for who, ballot in (
                ("m1", {"choice": "north"} if name == "open" else {"choice": "agree"}),
                ("m2", {"choice": "south"} if name == "open" else {"choice": "abstain"}),
                ("m3", {"choice": "north"} if name == "open" else {"choice": "agree"}),
            ):
                status, r = await call(
                    http, "POST", f"{url}/api/proposals/{p['id']}/ballots", tok(who), ballot
                )
                assert status == 201, r
                receipts.append(r["receipt"])
            status, closed = await call(
                http, "POST", f"{url}/api/proposals/{p['id']}/close", tok("org")
            )
            assert status == 200 and closed["tally"] is not None, closed
            out[name] = {"proposal": p, "receipts": receipts}
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("audit")
    data, port = base / "data", free_port()
    init_node(data, port)
    people = {
        "org": add_member(data, "Olu", "organizer"),
        "m1": add_member(data, "Mia"),
        "m2": add_member(data, "Max"),
        "m3": add_member(data, "Moe"),
    }
    proc = NodeProcess(data=data, port=port, log_path=base / "node.log")
    proc.start()
    try:
        votes = asyncio.run(vote(proc.url, people))
        bundle = base / "bundle.jsonl"
        result = run(EXPORT, "--data", str(data), "--out", str(bundle), "--json")
        assert result.returncode == 0, result.stderr
        crawl = run(AUDIT, proc.url, "--allow-private-network", "--json")
    finally:
        proc.stop()
    yield {"bundle": bundle, "votes": votes, "base": base, "crawl": crawl}


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_export_is_a_bundle_of_the_node(exported: dict[str, Any]) -> None:
    records = lines_of(exported["bundle"])
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "header" and kinds.count("header") == 1
    assert kinds.count("actor") == 1
    assert kinds.count("ballot") == 3  # the open vote's, with member, ballot and nonce
    assert kinds.count("receipt") == 3  # the secret vote's: receipts only
    secret = {r["receipt"] for r in records if r["kind"] == "receipt"}
    assert secret == set(exported["votes"]["secret"]["receipts"])
    assert all("member" not in r and "ballot" not in r for r in records if r["kind"] == "receipt")


def test_the_exported_bundle_audits_clean(exported: dict[str, Any]) -> None:
    result = run(AUDIT, str(exported["bundle"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID" in result.stdout
    assert "tallies    2/2 verified (2 recounted" in result.stdout


def test_json_report(exported: dict[str, Any]) -> None:
    result = audit_in_process(str(exported["bundle"]), "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["findings"] == []
    assert report["verified"]["ballots"] == 3 and report["verified"]["receipts"] == 3


@pytest.mark.parametrize("which", ["open", "secret"])
def test_a_members_receipt_is_proved_included(exported: dict[str, Any], which: str) -> None:
    receipt = exported["votes"][which]["receipts"][1]
    result = audit_in_process(str(exported["bundle"]), "--receipt", receipt, "--json")
    assert result.returncode == 0, result.stdout
    check = json.loads(result.stdout)["receipt"]
    assert check["included"] is True and check["tree_size"] == 3


def test_an_unknown_receipt_exits_1(exported: dict[str, Any]) -> None:
    result = audit_in_process(str(exported["bundle"]), "--receipt", "0" * 64)
    assert result.returncode == 1
    assert "receipt_not_included" in result.stdout


def test_an_edited_ballot_exits_1_naming_the_tally(exported: dict[str, Any]) -> None:
    records = lines_of(exported["bundle"])
    ballot = next(r for r in records if r["kind"] == "ballot" and r["ballot"]["choice"] == "south")
    ballot["ballot"] = {"choice": "north"}
    path = write(exported["base"] / "edited-ballot.jsonl", records)
    result = audit_in_process(str(path), "--json")
    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    tally = next(
        r["entry"] for r in records if r["kind"] == "entry" and r["entry"]["type"] == "Tally"
    )
    assert (findings[0]["actor"], findings[0]["seq"]) == (tally["actor"], tally["seq"])
    assert {"bad_ballot", "count_mismatch"} <= {f["what"] for f in findings}


def test_an_edited_tally_count_exits_1(exported: dict[str, Any]) -> None:
    records = lines_of(exported["bundle"])
    tally = next(
        r["entry"] for r in records if r["kind"] == "entry" and r["entry"]["type"] == "Tally"
    )
    tally["cast"] = 2
    path = write(exported["base"] / "edited-tally.jsonl", records)
    result = run(AUDIT, str(path))
    assert result.returncode == 1
    assert f"first: {tally['actor']} seq {tally['seq']}: bad_proof" in result.stdout


def test_a_dropped_roster_change_exits_1(exported: dict[str, Any]) -> None:
    records = lines_of(exported["bundle"])
    i = next(k for k, r in enumerate(records) if r["kind"] == "entry" and r["entry"]["seq"] == 2)
    actor = records[i]["entry"]["actor"]
    del records[i]
    result = audit_in_process(str(write(exported["base"] / "gap.jsonl", records)))
    assert result.returncode == 1
    assert f"first: {actor} seq 3: gap" in result.stdout


def test_not_json_lines_exits_2(tmp_path: Path, exported: dict[str, Any]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(exported["bundle"].read_bytes() + b"this is not json\n")
    result = run(AUDIT, str(path))
    assert result.returncode == 2
    assert "unreadable input" in result.stderr and "line" in result.stderr


def test_unknown_kind_exits_2(tmp_path: Path, exported: dict[str, Any]) -> None:
    path = tmp_path / "kind.jsonl"
    path.write_bytes(exported["bundle"].read_bytes() + b'{"kind": "vote"}\n')
    result = audit_in_process(str(path))
    assert result.returncode == 2 and "unknown record kind" in result.stderr


def test_an_oversized_line_exits_2(tmp_path: Path, exported: dict[str, Any]) -> None:
    path = tmp_path / "big.jsonl"
    pad = b'{"kind":"entry","entry":{"x":"' + b"x" * (MAX_LINE_BYTES + 10) + b'"}}\n'
    path.write_bytes(exported["bundle"].read_bytes() + pad)
    result = audit_in_process(str(path))
    assert result.returncode == 2 and "longer than the 1048576 bytes allowed" in result.stderr


def test_unreadable_input_with_json_is_a_json_error(tmp_path: Path) -> None:
    result = audit_in_process(str(tmp_path / "nope.jsonl"), "--json")
    assert result.returncode == 2
    error = json.loads(result.stderr)
    assert error["error"] == "unreadable_input" and "cannot open" in error["detail"]


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = audit_in_process(str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "cannot open" in result.stderr


def test_auditing_the_running_node_by_url(exported: dict[str, Any]) -> None:
    crawl = exported["crawl"]
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr
    report = json.loads(crawl.stdout)
    assert report["ok"] and report["verified"]["tallies"] == 2
    assert report["verified"]["entries"] == report["seen"]["entries"] > 5


def test_an_unreachable_url_exits_2() -> None:
    result = audit_in_process(f"http://127.0.0.1:{free_port()}", "--allow-private-network")
    assert result.returncode == 2 and "cannot crawl" in result.stderr


# --- the crawl behind `convene audit URL`, against small servers on loopback ----------------


def _chains(base: str) -> dict[str, list[dict[str, Any]]]:
    """A region whose chain accepts one chapter, and that chapter's chain."""
    region, chapter = f"{base}/region", f"{base}/chapter"
    out: dict[str, list[dict[str, Any]]] = {}
    for actor, kind in ((region, "region"), (chapter, "chapter")):
        key = SigningKey(hashlib.sha256(actor.encode()).digest())
        entries = [genesis(actor, kind, kind, key, "2026-11-26T14:00:00Z")]
        body = (
            accept_body(f"{chapter}/follows/1", chapter)
            if kind == "region"
            else roster_change_body("add", "m1", "member")
        )
        entries.append(
            make_entry(
                body,
                actor=actor,
                seq=1,
                prev=entry_digest(entries[0]),
                key=key,
                key_id=key_id(actor, 0),
                published="2026-11-26T14:00:00Z",
            )
        )
        out[actor] = entries
    return out


async def serve(handler: Any) -> TestServer:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_the_crawl_follows_a_region_to_its_chapters() -> None:
    chains: dict[str, list[dict[str, Any]]] = {}

    async def handler(request: web.Request) -> web.Response:
        base = f"http://127.0.0.1:{request.url.port}"
        chains.update(chains or _chains(base))
        path = request.path
        actor = base + path.removesuffix("/outbox")
        if path.endswith("/outbox"):
            page = {"type": "OrderedCollectionPage", "orderedItems": chains[actor]}
            return web.json_response({"type": "OrderedCollection", "first": page})
        key = chains[actor][0]["assertionKey"]
        return web.json_response(
            {"id": actor, "outbox": f"{actor}/outbox", "assertionMethod": [key]}
        )

    server = await serve(handler)
    try:
        async with FederationClient(signer=None, allow_private_network=True) as client:
            start, records = await crawl(str(server.make_url("/region")), client)
    finally:
        await server.close()
    assert start.endswith("/region")
    report = audit_bundle(records)
    assert report.ok and report.verified.actors == 2 and report.verified.entries == 4


async def test_the_crawl_refuses_a_page_loop() -> None:
    async def handler(request: web.Request) -> web.Response:
        me = f"http://127.0.0.1:{request.url.port}"
        if request.path == "/outbox":
            return web.json_response({"type": "OrderedCollection", "first": f"{me}/page"})
        if request.path == "/page":
            return web.json_response({"orderedItems": [], "next": f"{me}/page"})
        return web.json_response({"id": f"{me}/actor", "outbox": f"{me}/outbox"})

    server = await serve(handler)
    try:
        async with FederationClient(signer=None, allow_private_network=True) as client:
            with pytest.raises(CrawlError) as info:
                await crawl(str(server.make_url("/actor")), client)
    finally:
        await server.close()
    assert info.value.code == "page_loop"


async def test_the_crawl_bounds_the_pages_of_an_outbox() -> None:
    async def handler(request: web.Request) -> web.Response:
        me = f"http://127.0.0.1:{request.url.port}"
        if request.path == "/outbox":
            return web.json_response({"type": "OrderedCollection", "first": f"{me}/page/0"})
        if request.path.startswith("/page/"):
            n = int(request.path.rsplit("/", 1)[1])
            return web.json_response({"orderedItems": [], "next": f"{me}/page/{n + 1}"})
        return web.json_response({"id": f"{me}/actor", "outbox": f"{me}/outbox"})

    server = await serve(handler)
    try:
        async with FederationClient(signer=None, allow_private_network=True) as client:
            with pytest.raises(CrawlError) as info:
                await crawl(
                    str(server.make_url("/actor")), client, CrawlLimits(max_pages_per_outbox=5)
                )
    finally:
        await server.close()
    assert info.value.code == "too_many_pages"


async def test_the_crawl_refuses_an_actor_without_an_outbox() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"id": str(request.url), "type": "Group"})

    server = await serve(handler)
    try:
        async with FederationClient(signer=None, allow_private_network=True) as client:
            with pytest.raises(CrawlError) as info:
                await crawl(str(server.make_url("/actor")), client)
    finally:
        await server.close()
    assert info.value.code == "no_outbox"


async def test_the_export_completes_chains_it_holds_in_part() -> None:
    chains: dict[str, list[dict[str, Any]]] = {}

    async def handler(request: web.Request) -> web.Response:
        base = f"http://127.0.0.1:{request.url.port}"
        chains.update(chains or _chains(base))
        actor = base + request.path.removesuffix("/outbox")
        if request.path.endswith("/outbox"):
            return web.json_response({"type": "OrderedCollection", "orderedItems": chains[actor]})
        key = chains[actor][0]["assertionKey"]
        return web.json_response(
            {"id": actor, "outbox": f"{actor}/outbox", "assertionMethod": [key]}
        )

    server = await serve(handler)
    try:
        base = str(server.make_url("")).rstrip("/")
        chains.update(_chains(base))
        region = f"{base}/region"
        # what a chapter keeps of its region: one received entry, not the genesis
        held: list[Body] = [EntryRecord(entry=chains[region][1])]
        assert incomplete_chains(held, "https://me.example/actor") == [region]
        partial = audit_bundle(held)
        assert not partial.ok and partial.findings[0].what == "gap"
        done, warnings = await complete_chains(
            held, "https://me.example/actor", allow_private_network=True
        )
        assert warnings == []
        assert audit_bundle(done).ok
        assert sum(isinstance(r, EntryRecord) for r in done) == 2  # the held copy once
    finally:
        await server.close()
    _, warnings = await complete_chains(
        held, "https://me.example/actor", allow_private_network=True
    )
    assert len(warnings) == 1 and region in warnings[0]


def test_a_progress_bar_on_request(
    exported: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    kinds = [r["kind"] for r in lines_of(exported["bundle"])]
    checked = sum(k in ("entry", "ballot", "receipt") for k in kinds)
    records = read_bundle_file(exported["bundle"], show_progress=True)
    report = run_audit(records, receipt=None, jobs=1, show_progress=True)
    err = capsys.readouterr().err
    assert report.ok and "reading" in err and "auditing" in err and f"{checked}/{checked}" in err


def test_an_equivocation_is_shouted_in_the_summary(tmp_path: Path) -> None:
    chains = _chains("https://x.example")
    chapter = "https://x.example/chapter"
    key = SigningKey(hashlib.sha256(chapter.encode()).digest())
    fork = make_entry(
        roster_change_body("add", "m2", "member"),
        actor=chapter,
        seq=1,
        prev=entry_digest(chains[chapter][0]),
        key=key,
        key_id=key_id(chapter, 0),
        published="2026-11-26T14:00:00Z",
    )
    records = [{"kind": "entry", "entry": e} for c in chains.values() for e in c]
    records.append({"kind": "entry", "entry": fork})
    head = {"kind": "header", "format": "convene-audit-bundle", "version": 1}
    head |= {"exporter": chapter, "exported_at": "2026-11-26T14:00:00Z"}
    result = audit_in_process(str(write(tmp_path / "fork.jsonl", [head, *records])))
    assert result.returncode == 1
    assert f"EQUIVOCATING (two entries for one seq): {chapter}" in result.stdout
    assert f"first: {chapter} seq 1: equivocation" in result.stdout


def test_an_unsigned_fork_is_named_a_forgery(exported: dict[str, Any]) -> None:
    records = lines_of(exported["bundle"])
    entry = next(r["entry"] for r in records if r["kind"] == "entry" and r["entry"]["seq"] == 1)
    fork = json.loads(json.dumps(entry))
    fork["published"] = "2030-01-01T00:00:00Z"
    records.append({"kind": "entry", "entry": fork})
    result = audit_in_process(str(write(exported["base"] / "forged.jsonl", records)))
    assert result.returncode == 1
    assert "EQUIVOCATING" not in result.stdout
    assert (
        f"first: {entry['actor']} seq 1: bad_proof" in result.stdout and "forgery" in result.stdout
    )


async def test_the_crawl_follows_the_chapters_a_proposal_lists() -> None:
    chains: dict[str, list[dict[str, Any]]] = {}

    def build(base: str) -> None:
        region, chapter = f"{base}/region", f"{base}/chapter"
        both = _chains(base)
        key = SigningKey(hashlib.sha256(region.encode()).digest())
        spec = ProposalSpec(
            method="consent", scope="regional", rule="chapters", chapters=(chapter,)
        )
        question = make_entry(
            {"type": "Question", "name": "Q", **spec_fields(spec)},
            actor=region,
            seq=1,
            prev=entry_digest(both[region][0]),
            key=key,
            key_id=key_id(region, 0),
            published="2026-11-26T14:00:00Z",
        )
        chains.update({region: [both[region][0], question], chapter: both[chapter]})

    async def handler(request: web.Request) -> web.Response:
        base = f"http://127.0.0.1:{request.url.port}"
        if not chains:
            build(base)
        actor = base + request.path.removesuffix("/outbox")
        if request.path.endswith("/outbox"):
            return web.json_response({"orderedItems": chains[actor]})
        key = chains[actor][0]["assertionKey"]
        return web.json_response(
            {"id": actor, "outbox": f"{actor}/outbox", "assertionMethod": [key]}
        )

    server = await serve(handler)
    try:
        async with FederationClient(signer=None, allow_private_network=True) as client:
            _, records = await crawl(str(server.make_url("/region")), client)
    finally:
        await server.close()
    actors = {r.document["id"] for r in records if isinstance(r, ActorRecord)}
    assert {a.rsplit("/", 1)[1] for a in actors} == {"region", "chapter"}
    assert audit_bundle(records).ok


def test_export_without_a_node_exits_1_saying_why(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["export", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "b.jsonl")]
    )
    assert result.exit_code == 1 and "convene init" in result.stderr
    assert not (tmp_path / "b.jsonl").exists()


# --- a real regional vote: one chapter's own export, and a crawl from the region ----------


async def test_a_regional_vote_audits_from_one_chapters_export_and_by_url(
    tmp_path: Path,
) -> None:
    from node.demo import Cluster
    from node.export import export_bundle

    async with Cluster(tmp_path, ["Oak", "Elm"], grace_s=3) as cluster:
        await cluster.create(members_per_chapter=2)
        await cluster.start()
        await cluster.join()
        proposal = await cluster.propose(
            4, title="Regional", body="?", method="consent", rule="pooled"
        )
        oak, elm = cluster.chapters
        receipts, local = {}, {}
        for ch, picks in ((oak, ["agree", "agree"]), (elm, ["agree", "disagree"])):
            local[ch.name] = await cluster.adopted(ch, proposal["object_id"])
            ballots = [{"choice": c} for c in picks]
            receipts[ch.name] = await cluster.vote(ch, local[ch.name], ballots)
        await cluster.settled(cluster.region, proposal["id"])
        for ch in cluster.chapters:
            await cluster.settled(ch, local[ch.name])

        # Oak's own export: it holds the region's and Elm's entries only in part, so the
        # export completes their chains from their outboxes.
        bundle = tmp_path / "oak.jsonl"
        _, warnings = await export_bundle(oak.data, bundle, allow_private_network=True)
        assert warnings == []
        report = run_audit(read_bundle_file(bundle), receipt=receipts["Oak"][1], jobs=1)
        assert report.findings == ()
        assert report.verified.decisions == 1 and report.verified.tallies == 2
        assert report.recounted == 1  # Oak's own tally; Elm's ballots are Elm's to disclose
        assert report.receipt is not None and report.receipt.included

        # the same from the region's URL, the way an outsider would
        region_url = cluster.region.url

        async def crawl_region() -> list[Body]:
            async with FederationClient(signer=None, allow_private_network=True) as client:
                return (await crawl(region_url, client))[1]

        crawled = audit_bundle(await crawl_region())
        assert crawled.findings == ()
        assert crawled.verified.actors == 3 and crawled.verified.decisions == 1
        assert crawled.verified.tallies == 2


def test_after_a_key_rotation_the_export_still_audits_clean(
    exported: dict[str, Any], tmp_path: Path
) -> None:
    data = exported["base"] / "data"
    rotated = run(CONVENE, "key", "rotate", "--data", str(data), "--json")
    assert rotated.returncode == 0, rotated.stderr
    bundle = tmp_path / "rotated.jsonl"
    assert run(EXPORT, "--data", str(data), "--out", str(bundle)).returncode == 0
    records = lines_of(bundle)
    assert any(r["kind"] == "entry" and r["entry"]["type"] == "KeyRotation" for r in records)
    result = audit_in_process(str(bundle), "--json")
    assert result.returncode == 0, result.stdout
    # and the document of the old key no longer passes for the actor
    actor = next(r for r in records if r["kind"] == "actor")
    old = lines_of(exported["bundle"])
    actor["document"] = next(r for r in old if r["kind"] == "actor")["document"]
    stale = audit_in_process(str(write(tmp_path / "stale.jsonl", records)))
    assert stale.returncode == 1 and "actor_key_mismatch" in stale.stdout
