"""Regional votes between real `convene serve` processes on loopback: one region and
three chapters (Alder, Birch, Cedar), each with its own SQLite file, talking signed
HTTP. The tests run in order on one cluster; the ones that craft bad entries come
last because they spend chain positions the honest nodes would otherwise use."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from regionkit import entry_body, post_answered, post_signed, sign_next, stored_anywhere

from node.bootstrap import init_node
from node.clock import parse_rfc3339, rfc3339
from node.config import DATABASE_FILE
from node.demo import Cluster, Node, free_port, wait_until
from node.regional_store import REFUSAL_LOG_ROWS

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRACE = 10  # seconds after close that tallies still count (--regional-grace-s)
CLOSES_IN = 5  # seconds; time for three chapters to open it and vote, under load
CONTEXT = Path(__file__).parents[2] / "federation" / "context.jsonld"
AS2_TERMS = {
    *("@context", "id", "type", "actor", "published", "proof", "name", "content"),
    *("summary", "oneOf", "anyOf", "endTime", "closed", "votersCount", "to", "cc"),
    *("attributedTo", "url", "sensitive", "mediaType"),
}
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]
SEEN: dict[str, Any] = {}  # what earlier tests made, for the later ones


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("region")
    async with Cluster(root, ["Alder", "Birch", "Cedar"], grace_s=GRACE) as c:
        await c.create(members_per_chapter=2, start=True)
        await c.join()
        yield c


def chapter(c: Cluster, name: str) -> Node:
    return next(n for n in c.chapters if n.name == name)


async def open_everywhere(c: Cluster, **fields: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A regional proposal from the region, held open by every chapter."""
    proposal = await c.propose(CLOSES_IN, **fields)
    local = {ch.name: await c.adopted(ch, proposal["object_id"]) for ch in c.chapters}
    return proposal, local


async def sleep_past(rfc: str, extra: float = 0.5) -> None:
    await asyncio.sleep(max(0.0, parse_rfc3339(rfc, field="t") + extra - time.time()))


def consent(*choices: str) -> list[dict[str, str]]:
    return [{"choice": c} for c in choices]


async def test_a_regional_vote_end_to_end(cluster: Cluster) -> None:
    proposal, local = await open_everywhere(
        cluster, method="choice", options=["tram", "bus"], rule="chapters"
    )
    assert proposal["scope"] == "regional" and proposal["rule"] == "chapters"
    region_view = await cluster.regional(cluster.region, proposal["id"])
    assert set(region_view["chapters"]) == {ch.actor for ch in cluster.chapters}
    votes = {"Alder": ["tram", "tram"], "Birch": ["bus", "bus"], "Cedar": ["tram", "bus"]}
    votes["Cedar"] = ["tram", "tram"]
    for name, picks in votes.items():
        await cluster.vote(chapter(cluster, name), local[name], [{"choice": p} for p in picks])

    decided = await cluster.settled(cluster.region, proposal["id"])
    decision = decided["decision"]
    assert decision["outcome"]["result"] == "winner" and decision["outcome"]["winner"] == "tram"
    assert decision["reporting"] == 3 and decision["counted"] == 3
    assert decision["counts"] == {"votes": {"tram": 4, "bus": 2}}
    for ch in cluster.chapters:
        view = await cluster.settled(ch, local[ch.name])
        assert view["decision"]["outcome"] == decision["outcome"]
        assert view["decision"]["tallies"] == decision["tallies"]
        assert view["decision"]["region_decision"] == decision["region_decision"]
        assert len(view["tallies"]) == 3 and view["rejected"] == []
        # the contract view: tally, decision {outcome, ...}, verification
        status, api = await cluster.call("GET", ch, f"/api/proposals/{local[ch.name]}")
        assert status == 200 and api["status"] == "decided"
        assert api["tally"]["cast"] == 2 and api["tally"]["ballots_root"]
        assert api["decision"]["outcome"]["winner"] == "tram"
        assert api["verification"] == "verified"
    SEEN["p1"] = (proposal, local, decided)


async def test_the_regional_view_asks_what_the_proposal_view_asks(cluster: Cluster) -> None:
    _, local, _ = SEEN["p1"]
    alder = chapter(cluster, "Alder")
    path = f"/api/proposals/{local['Alder']}"
    member = alder.members[0]["token"]
    for suffix in ("", "/regional"):
        # `call` falls back to the organizer's token: a bad token stands for none.
        status, body = await cluster.call("GET", alder, path + suffix, token="cvn_" + "A" * 43)
        assert (status, body["error"]) == (401, "unauthorized"), (suffix, body)
        status, body = await cluster.call("GET", alder, path + suffix, token=member)
        assert status == 200, (suffix, body)
    async with aiohttp.ClientSession() as http, http.get(alder.url + path + "/regional") as r:
        assert r.status == 401 and (await r.json())["error"] == "unauthorized"


def convene(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVENE, *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_one_chapters_own_export_verifies_the_regional_decision(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Birch kept the region's Question and Decision and the other chapters' tallies
    # as they arrived (bare entries included), so its export alone re-checks the
    # decision; `convene export` completes the other chains from their outboxes.
    _, _, decided = SEEN["p1"]
    birch = chapter(cluster, "Birch")
    bundle = tmp_path / "birch.jsonl"
    done = convene("export", "--data", str(birch.data), "--out", str(bundle), "--offline")
    assert done.returncode == 0, done.stderr
    held = [msgspec.json.decode(line) for line in bundle.read_bytes().splitlines()]
    entries = [r.get("entry") or {} for r in held]
    ids = {e.get("id") for e in entries}
    assert decided["decision"]["region_decision"] in ids
    assert {e.get("actor") for e in entries if e.get("type") == "Tally"} == {
        ch.actor for ch in cluster.chapters
    }
    # Every field the region signed in its Question is a term of our context or of
    # ActivityStreams / the entry envelope, tallies_due included.
    (question,) = [e for e in entries if e.get("type") == "Question"]
    ours = set(msgspec.json.decode(CONTEXT.read_bytes())["@context"])
    assert "tallies_due" in question and not set(question) - ours - AS2_TERMS, sorted(
        set(question) - ours - AS2_TERMS
    )

    done = convene(
        "export", "--data", str(birch.data), "--out", str(bundle), "--allow-private-network"
    )
    assert done.returncode == 0, done.stderr
    audited = convene("audit", str(bundle), "--jobs", "1", "--json")
    assert audited.returncode == 0, audited.stdout[-3000:] + audited.stderr
    report = msgspec.json.decode(audited.stdout)
    assert report["ok"] and report["verified"]["decisions"] >= 1
    assert report["verified"]["decisions"] == report["seen"]["decisions"]


async def test_chapters_decide_without_the_region(cluster: Cluster) -> None:
    proposal, local = await open_everywhere(cluster, method="consent", rule="double-majority")
    cluster.region.stop()  # the Question is out; the region's server goes away
    votes = {
        "Alder": consent("agree", "agree"),
        "Birch": consent("agree", "disagree"),
        "Cedar": consent("disagree", "disagree"),
    }
    for name, ballots in votes.items():
        await cluster.vote(chapter(cluster, name), local[name], ballots)
    views = [await cluster.settled(ch, local[ch.name], None) for ch in cluster.chapters]
    first = views[0]["decision"]
    assert first["reporting"] == 3 and first["region_decision"] is None
    # pooled 3 agree / 3 disagree fails; by chapters 1 passed of 3 fails
    assert first["outcome"]["result"] == "failed"
    for view in views[1:]:
        assert view["decision"] == {**first, "computed_by": view["decision"]["computed_by"]}

    await cluster.start([cluster.region])  # back: it pulls the tallies and decides
    decided = await cluster.settled(cluster.region, proposal["id"])
    assert decided["decision"]["tallies"] == first["tallies"]
    for ch in cluster.chapters:
        view = await cluster.settled(ch, local[ch.name])
        assert view["decision"]["region_decision"] == decided["decision"]["region_decision"]


async def test_a_chapter_down_at_close_catches_up(cluster: Cluster) -> None:
    proposal, local = await open_everywhere(cluster, method="consent", rule="pooled")
    for ch in cluster.chapters:
        await cluster.vote(ch, local[ch.name], consent("agree", "abstain"))
    cedar = chapter(cluster, "Cedar")
    cedar.stop()
    await sleep_past(proposal["closes_at"])
    await cluster.start([cedar])  # closes on start, well within the grace period
    decided = await cluster.settled(cluster.region, proposal["id"])
    assert decided["decision"]["reporting"] == 3 and decided["rejected"] == []
    assert decided["decision"]["outcome"]["result"] == "passed"
    view = await cluster.settled(cedar, local["Cedar"])
    assert len(view["tallies"]) == 3  # its own, and the two it pulled on start
    assert view["decision"]["outcome"] == decided["decision"]["outcome"]


async def test_a_late_tally_is_rejected_and_named(cluster: Cluster) -> None:
    proposal, local = await open_everywhere(cluster, method="consent", rule="chapters")
    for ch in cluster.chapters:
        await cluster.vote(ch, local[ch.name], consent("agree", "agree"))
    cedar = chapter(cluster, "Cedar")
    cedar.stop()
    decided = await cluster.settled(cluster.region, proposal["id"])  # at close + grace
    assert decided["decision"]["reporting"] == 2
    await cluster.start([cedar])

    async def named_late(node: Node, pid: str) -> dict[str, Any] | None:
        view = await cluster.regional(node, pid)
        late = [r for r in view["rejected"] if r["code"] == "late"]
        return late[0] if late else None

    for node, pid in (
        (cluster.region, proposal["id"]),
        (chapter(cluster, "Alder"), local["Alder"]),
    ):

        async def probe(n: Node = node, p: str = pid) -> dict[str, Any] | None:
            return await named_late(n, p)

        late = await wait_until("the late tally to be named", probe)
        assert late["actor"] == cedar.actor and isinstance(late["seq"], int)
        assert "after tallies were due" in late["reason"]
    view = await cluster.settled(cedar, local["Cedar"])  # it still checks the region
    assert view["decision"]["reporting"] == 2
    assert (await cluster.regional(cluster.region, proposal["id"]))["decision"] == decided[
        "decision"
    ]


def last_tally(node: Node) -> dict[str, Any]:
    conn = sqlite3.connect(node.data / DATABASE_FILE)
    try:
        (blob,) = conn.execute(
            "SELECT entry FROM chain_entries WHERE type = 'Tally' ORDER BY seq LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    entry: dict[str, Any] = msgspec.json.decode(blob)
    return entry


async def rejection(c: Cluster, node: Node, pid: str, code: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        view = await c.regional(node, pid)
        return next((r for r in view["rejected"] if r["code"] == code), None)

    return await wait_until(f"{node.name} to reject a {code} tally", probe)


async def test_bad_tallies_are_rejected_and_named(cluster: Cluster, tmp_path: Path) -> None:
    proposal, local, _ = SEEN["p1"]
    alder, birch, cedar = cluster.chapters
    real = last_tally(birch)  # Birch's signed tally for the first proposal
    assert real["proposal"] == proposal["object_id"]
    body = entry_body(real)

    duplicate = sign_next(birch, body, real["published"])  # a second, valid tally
    assert await post_signed(birch, alder, duplicate) == 202
    # The inbox refuses what it cannot verify, says what and where, and stores nothing
    # of it; only its metadata goes to the refusal log, which the view reads.
    forged = {**duplicate, "proof": {**duplicate["proof"], "proofValue": "z" + "1" * 87}}
    status, answer = await post_answered(birch, cedar, forged)
    assert (status, answer["error"]) == (400, "bad_proof"), answer
    assert f"actor {birch.actor}" in answer["detail"] and f"seq {forged['seq']}" in answer["detail"]
    assert stored_anywhere(cedar, forged) == []
    late = sign_next(birch, body, rfc3339(time.time() + 3600))
    assert await post_signed(birch, cluster.region, late) == 202
    unsigned = {k: v for k, v in sign_next(birch, body, real["published"], skip=1).items()}
    del unsigned["proof"]
    status, answer = await post_answered(birch, alder, unsigned)
    assert (status, answer["error"]) == (400, "unsigned"), answer
    assert birch.actor in answer["detail"] and f"seq {unsigned['seq']}" in answer["detail"]
    assert stored_anywhere(alder, unsigned) == []
    # without an HTTP signature the inbox takes nothing at all
    status, refused = await cluster.call("POST", alder, "/inbox", duplicate)
    assert status == 401 and refused["error"]

    outsider = Node("Outsider", "chapter", tmp_path / "outsider", free_port(), GRACE)
    created = await init_node(outsider.data, name="Outsider", url=outsider.url)
    outsider.actor = created.to_json()["actor"]
    await cluster.start([outsider])
    try:
        stranger = sign_next(outsider, body, real["published"])
        assert await post_signed(outsider, alder, stranger) == 202
        not_follower = await rejection(cluster, alder, local["Alder"], "not_follower")
    finally:
        outsider.stop()

    dup = await rejection(cluster, alder, local["Alder"], "duplicate")
    assert dup["actor"] == birch.actor and dup["seq"] == duplicate["seq"]
    assert f"seq {real['seq']}" in dup["reason"]
    bad = await rejection(cluster, cedar, local["Cedar"], "forged")
    assert bad["actor"] == birch.actor and bad["seq"] == forged["seq"]
    assert bad["type"] == "Tally" and "proof" in bad["reason"]
    gone = await rejection(cluster, cluster.region, proposal["id"], "late")
    assert gone["actor"] == birch.actor and gone["seq"] == late["seq"]
    nosig = await rejection(cluster, alder, local["Alder"], "unsigned")
    assert nosig["actor"] == birch.actor and nosig["seq"] == unsigned["seq"]
    assert stored_anywhere(cedar, forged) == [] and stored_anywhere(alder, unsigned) == []
    assert not_follower["actor"] == outsider.actor and "not among" in not_follower["reason"]
    for node, pid in ((alder, local["Alder"]), (cedar, local["Cedar"])):
        view = await cluster.regional(node, pid)
        assert len(view["tallies"]) == 3 and view["verification"] == "verified"


async def test_tallies_that_do_not_add_up_and_foreign_decisions_are_rejected(
    cluster: Cluster,
) -> None:
    proposal, local, decided = SEEN["p1"]
    alder, birch, cedar = cluster.chapters
    real = last_tally(alder)
    counts = {"votes": {"tram": 9, "bus": 0}}  # more votes than ballots cast
    wrong = sign_next(alder, {**entry_body(real), "counts": counts}, real["published"])
    assert await post_signed(alder, birch, wrong) == 202
    bad = await rejection(cluster, birch, local["Birch"], "bad_tally")
    assert bad["actor"] == alder.actor and bad["seq"] == wrong["seq"]

    ours = ("computed_by", "region_decision")
    body = {k: v for k, v in decided["decision"].items() if k not in ours}
    usurped = sign_next(alder, {"type": "Decision", **body}, rfc3339(time.time()))
    assert await post_signed(alder, cedar, usurped) == 202
    foreign = await rejection(cluster, cedar, local["Cedar"], "not_region")
    assert foreign["actor"] == alder.actor and proposal["object_id"] in foreign["reason"]
    for node, pid in ((birch, local["Birch"]), (cedar, local["Cedar"])):
        assert (await cluster.regional(node, pid))["verification"] == "verified"


async def test_a_wrong_decision_is_disputed(cluster: Cluster) -> None:
    _, local, decided = SEEN["p1"]
    alder, birch, _ = cluster.chapters
    body = {
        k: v for k, v in decided["decision"].items() if k not in ("computed_by", "region_decision")
    }
    body["outcome"] = {**body["outcome"], "winner": "bus", "reason": "bus, says the region"}
    wrong = sign_next(cluster.region, {"type": "Decision", **body}, rfc3339(time.time()))
    assert await post_signed(cluster.region, alder, wrong) == 202
    view = await cluster.settled(alder, local["Alder"], "disputed")
    assert "outcome" in view["decision"]["dispute"]
    assert view["decision"]["outcome"]["winner"] == "tram"  # its own count stands
    assert (await cluster.regional(birch, local["Birch"]))["verification"] == "verified"


async def test_a_flood_of_forged_entries_keeps_the_refusal_log_capped(cluster: Cluster) -> None:
    # Runs last: the flood pushes the earlier refusals out of Cedar's log.
    _, local, _ = SEEN["p1"]
    _, birch, cedar = cluster.chapters
    template = sign_next(birch, entry_body(last_tally(birch)), rfc3339(time.time()))
    template["proposal"] = f"{cluster.region.actor}/flood"
    flood = [
        {**template, "proof": {**template["proof"], "proofValue": f"z{n:0>87}".replace("0", "1")}}
        for n in range(REFUSAL_LOG_ROWS + 50)
    ]
    # Eight senders at once, as a flood would come; every one is refused.
    answers = await asyncio.gather(*(post_answered(birch, cedar, *flood[i::8]) for i in range(8)))
    assert {(status, a["error"]) for status, a in answers} == {(400, "bad_proof")}
    with sqlite3.connect(cedar.data / DATABASE_FILE) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM inbox_refusals").fetchone()
        assert rows == REFUSAL_LOG_ROWS
        (flooded,) = conn.execute(
            "SELECT COUNT(*) FROM inbox_refusals WHERE proposal = ?", (template["proposal"],)
        ).fetchone()
        assert flooded == REFUSAL_LOG_ROWS  # the oldest rows went first
        (columns,) = [{c[1] for c in conn.execute("PRAGMA table_info(inbox_refusals)").fetchall()}]
        assert "body" not in columns and "entry" not in columns  # metadata only
    assert stored_anywhere(cedar, template) == []
    view = await cluster.regional(cedar, local["Cedar"])
    assert [r for r in view["rejected"] if r["code"] == "forged"] == []


async def test_a_partners_question_is_taken_only_with_a_sound_citation(cluster: Cluster) -> None:
    # Runs after the crafted entries, between nodes none of them confused (Cedar signed
    # none; Birch got none from the region): Cedar, granted the facilitator role, asks
    # the region for a proposal for Birch; Birch checks the citation (the grant it
    # holds, Cedar's request from Cedar's outbox) and opens it. Then a Question the
    # region signs citing a request nobody made is refused by Birch as bad_citation.
    _, birch, cedar = cluster.chapters
    region = cluster.region
    status, grant = await cluster.call("POST", region, "/api/facilitators", {"actor": cedar.actor})
    assert status == 201, grant

    async def cedar_holds() -> bool | None:
        _, view = await cluster.call("GET", cedar, "/api/facilitation")
        return True if view["held"] else None

    await wait_until("Cedar to hold its grant", cedar_holds)
    body = {"title": "Asked by Cedar", "method": "consent", "chapters": [birch.actor]}
    request = {"region": region.actor, "action": "propose", "body": body}
    status, sent = await cluster.call("POST", cedar, "/api/facilitation/requests", request)
    assert status == 201, sent

    async def carried() -> str | None:
        _, view = await cluster.call("GET", region, "/api/facilitation")
        done = [r for r in view["requests"] if r["request"] == sent["request"]]
        return str(done[0]["object_id"]) if done and done[0]["object_id"] else None

    object_id = await wait_until("the region to carry out Cedar's request", carried)
    await cluster.adopted(birch, object_id)

    invented = sign_next(
        region,
        {
            "type": "Question",
            "name": "Not asked by anyone",
            "scope": "regional",
            "method": "consent",
            "chapters": [birch.actor],
            "requested_by": "0" * 64,
        },
        rfc3339(time.time()),
    )
    assert await post_signed(region, birch, invented) == 202

    def refused() -> tuple[str, int, str] | None:
        with sqlite3.connect(birch.data / DATABASE_FILE) as conn:
            row = conn.execute(
                "SELECT actor, seq, reason FROM regional_rejected WHERE code = 'bad_citation'"
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), str(row[2]))

    async def probe() -> tuple[str, int, str] | None:
        return refused()

    actor, seq, reason = await wait_until("Birch to refuse the invented citation", probe)
    assert (actor, seq) == (region.actor, invented["seq"]) and "0" * 64 in reason
    _, listed = await cluster.call("GET", birch, "/api/proposals")
    assert invented["id"] not in {p["object_id"] for p in listed["items"]}
