"""Nested regions between real `convene serve` processes on loopback (§10.6): a state
region; a city region that follows it, with two chapters (Alder, Birch) under the city;
and one chapter (Cedar) straight under the state. The tests run in order on one
cluster; the one that crafts bad entries comes last."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from regionkit import entry_body, post_signed, sign_next

from node.clock import rfc3339
from node.config import DATABASE_FILE
from node.demo import Cluster, Node, free_port, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRACE = 10
CLOSES_IN = 6
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]
SEEN: dict[str, Any] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("nested")
    async with Cluster(root, ["Alder", "Birch", "Cedar"], grace_s=GRACE) as c:
        c.region.name = "State"
        c.chapters.insert(0, Node("City", "region", root / "city", free_port(), GRACE))
        await c.create(members_per_chapter=2, start=True)
        await join(c, node(c, "City"), c.region, cli=True)
        await join(c, node(c, "Cedar"), c.region)
        await join(c, node(c, "Alder"), node(c, "City"))
        await join(c, node(c, "Birch"), node(c, "City"))
        yield c


def node(c: Cluster, name: str) -> Node:
    return next(n for n in c.nodes if n.name == name)


async def join(c: Cluster, follower: Node, region: Node, *, cli: bool = False) -> None:
    if cli:  # `convene join` on the follower's folder; its running node delivers the Follow
        done = convene(
            "join", region.url, "--data", str(follower.data), "--allow-private-network", "--json"
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "requested"
    else:
        status, body = await c.call(
            "POST", follower, "/api/federation/join", {"region": region.url}
        )
        assert status == 202, body

    async def accepted() -> bool | None:
        _, seen = await c.call("GET", follower, "/api/federation")
        ok = any(
            f["state"] == "accepted" and f["region"] == region.actor for f in seen["following"]
        )
        return True if ok else None

    await wait_until(f"{region.name} to accept {follower.name}", accepted)


async def local_id(c: Cluster, n: Node, object_id: str) -> str:
    async def probe() -> str | None:
        _, body = await c.call("GET", n, "/api/proposals")
        ids = [i["id"] for i in body["items"] if i["object_id"] == object_id]
        return ids[0] if ids else None

    return await wait_until(f"{n.name} to hold {object_id}", probe)


async def test_a_city_feeds_the_state_and_every_level_verifies(cluster: Cluster) -> None:
    state, city = cluster.region, node(cluster, "City")
    proposal = await cluster.propose(
        CLOSES_IN, method="choice", options=["tram", "bus"], rule="pooled"
    )
    view = await cluster.regional(state, proposal["id"])
    # the state's default member list: its chapters and the regions that follow it
    assert set(view["chapters"]) == {city.actor, node(cluster, "Cedar").actor}
    object_id = proposal["object_id"]
    local = {
        name: await cluster.adopted(node(cluster, name), object_id)
        for name in ("Alder", "Birch", "Cedar")
    }
    city_id = await local_id(cluster, city, object_id)
    city_view = await cluster.regional(city, city_id)
    assert city_view["region"] == city.actor
    assert set(city_view["level"]) == {node(cluster, "Alder").actor, node(cluster, "Birch").actor}
    votes = {"Alder": ["tram", "tram"], "Birch": ["bus", "tram"], "Cedar": ["bus", "bus"]}
    for name, picks in votes.items():
        await cluster.vote(node(cluster, name), local[name], [{"choice": p} for p in picks])

    city_decided = await cluster.settled(city, city_id, timeout=60)
    assert city_decided["decision"]["counts"] == {"votes": {"tram": 3, "bus": 1}}
    assert city_decided["decision"]["reporting"] == 2
    for name in ("Alder", "Birch"):  # chapters verify their city's decision as today
        seen = await cluster.settled(node(cluster, name), local[name], timeout=60)
        assert seen["region"] == city.actor
        assert seen["decision"]["region_decision"] == city_decided["decision"]["region_decision"]

    decided = await cluster.settled(state, proposal["id"], timeout=60)
    decision = decided["decision"]
    # pooled over two levels = pooled over every chapter: tram 3, bus 3 of 6 ballots, 9
    # eligible (each chapter: an organizer and two members)
    assert decision["counts"] == {"votes": {"tram": 3, "bus": 3}}
    assert (decision["cast"], decision["eligible"], decision["reporting"]) == (6, 9, 2)
    lower = decided["lower_decisions"]
    assert [d["region"] for d in lower] == [city.actor]
    assert lower[0]["digest"] in decision["tallies"]  # names the city Decision's digest
    cedar = await cluster.settled(node(cluster, "Cedar"), local["Cedar"], timeout=60)
    assert cedar["decision"]["tallies"] == decision["tallies"]

    async def city_checked_the_state() -> dict[str, Any] | None:
        v = await cluster.regional(city, city_id)
        return v if v.get("upper_verification") is not None else None

    up = await wait_until("the city to verify the state's decision", city_checked_the_state)
    # the city's Level on the wire: its chapters, and the state's Question verbatim
    level = await fetch_entry(cluster, city, f"{city.actor}/entries/{city_view_level_seq(city)}")
    question = await fetch_entry(cluster, state, object_id)
    assert level["type"] == "Level" and level["proposal"] == object_id
    assert level["question"] == question and sorted(level["chapters"]) == city_view["level"]
    (cluster.root / "level.json").write_text(json.dumps(level, indent=2))
    (cluster.root / "views.json").write_text(json.dumps({"city": up, "state": decided}, indent=2))
    assert up["upper_verification"] == "verified", up.get("upper_dispute")
    assert up["upper_decision"]["id"] == decision["region_decision"]
    SEEN["p"] = (proposal, city_id, decided, city_decided)
    SEEN["level"], SEEN["alder"] = level, local["Alder"]


def convene(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVENE, *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_the_audit_of_the_states_url_crawls_every_level(cluster: Cluster) -> None:
    done = convene("audit", cluster.region.url, "--json", "--jobs", "1", "--allow-private-network")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    # the state, the city, and the three chapters; the city's decision against Alder's
    # and Birch's tallies, the state's against Cedar's tally and the city's decision
    assert report["findings"] == []
    assert report["verified"]["actors"] == 5
    assert (report["verified"]["decisions"], report["verified"]["tallies"]) == (2, 3)


async def test_a_city_decision_altered_in_a_bundle_is_named_at_its_level(
    cluster: Cluster, tmp_path: Path
) -> None:
    city = node(cluster, "City")
    # the state's own export holds the city's chapters' tallies it recomputed the city's
    # decision from, so it re-checks both levels alone (chains completed from outboxes)
    state_bundle = tmp_path / "state.jsonl"
    done = convene(
        "export",
        "--data",
        str(cluster.region.data),
        "--out",
        str(state_bundle),
        "--allow-private-network",
    )
    assert done.returncode == 0, done.stderr
    audited = convene("audit", str(state_bundle), "--json", "--jobs", "1")
    assert audited.returncode == 0, audited.stdout[-3000:]
    # and so does the city's
    bundle = tmp_path / "city.jsonl"
    done = convene(
        "export",
        "--data",
        str(city.data),
        "--out",
        str(bundle),
        "--allow-private-network",
    )
    assert done.returncode == 0, done.stderr
    audited = convene("audit", str(bundle), "--json", "--jobs", "1")
    assert audited.returncode == 0, audited.stdout[-3000:]
    assert json.loads(audited.stdout)["verified"]["decisions"] == 2
    # one count of the city's Decision changed after signing
    lines = bundle.read_bytes().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        entry = record.get("entry", {})
        if entry.get("type") == "Decision" and entry.get("actor") == city.actor:
            entry["counts"]["votes"]["tram"] += 1
            lines[i] = json.dumps(record).encode()
            seq = entry["seq"]
            break
    else:
        raise AssertionError("no city Decision in the city's export")
    bundle.write_bytes(b"\n".join(lines) + b"\n")
    audited = convene("audit", str(bundle), "--json", "--jobs", "1")
    assert audited.returncode == 1, audited.stdout[-3000:]
    findings = json.loads(audited.stdout)["findings"]
    at_city = {f["what"] for f in findings if (f["actor"], f["seq"]) == (city.actor, seq)}
    assert "decision_mismatch" in at_city, findings  # named at its own level
    assert any(f["actor"] == cluster.region.actor for f in findings), findings


async def test_an_altered_city_decision_is_refused_and_named(cluster: Cluster) -> None:
    proposal = SEEN["p"][0]
    state, city = cluster.region, node(cluster, "City")
    (row,) = [
        d
        for d in (await cluster.regional(state, proposal["id"]))["lower_decisions"]
        if d["region"] == city.actor
    ]
    honest = await fetch_entry(cluster, city, row["id"])
    body = entry_body(honest)
    body["counts"] = {"votes": {"tram": 4, "bus": 0}}  # the city claims Birch's bus vote
    altered = sign_next(city, body, rfc3339(time.time()))
    assert await post_signed(city, state, altered) == 202

    async def named() -> dict[str, Any] | None:
        view = await cluster.regional(state, proposal["id"])
        hits = [r for r in view["rejected"] if r["seq"] == altered["seq"]]
        return hits[0] if hits else None

    rejected = await wait_until("the state to refuse the altered decision", named)
    assert rejected["actor"] == city.actor and rejected["code"] == "bad_decision"
    assert "counts" in rejected["reason"]
    # a decision signed by another node's key in the city's name never gets in
    forged = sign_next(node(cluster, "Cedar"), body, rfc3339(time.time()))
    forged = {**forged, "actor": city.actor}
    assert await post_signed(node(cluster, "Cedar"), state, forged) in (400, 401, 403)
    # a chapter the state lists, posing as a lower region (it signed no Level)
    cedar = node(cluster, "Cedar")
    posing = sign_next(cedar, entry_body(honest), rfc3339(time.time()))
    assert await post_signed(cedar, state, posing) == 202

    async def refused() -> dict[str, Any] | None:
        view = await cluster.regional(state, proposal["id"])
        hits = [r for r in view["rejected"] if r["actor"] == cedar.actor]
        return hits[0] if hits else None

    r = await wait_until("the state to refuse Cedar's decision", refused)
    assert (r["code"], r["seq"]) == ("not_region", posing["seq"]) and "Level" in r["reason"]
    view = await cluster.regional(state, proposal["id"])
    assert [d["seq"] for d in view["lower_decisions"]] == [row["seq"]]
    assert view["decision"] == SEEN["p"][2]["decision"]


async def test_a_bad_level_is_refused_and_named_by_the_chapter(cluster: Cluster) -> None:
    city, cedar = node(cluster, "City"), node(cluster, "Cedar")
    alder, birch = node(cluster, "Alder"), node(cluster, "Birch")
    level = entry_body(SEEN["level"])
    now = rfc3339(time.time())
    tampered = {**level, "question": {**level["question"], "name": "Something else"}}
    # Each crafted entry takes its author's next seq (an inbox refuses a gap), so each
    # receiver gets at most one per author.
    cases = [
        # the carried Question no longer verifies under the state's key
        (city, alder, sign_next(city, tampered, now), "forged", "the question it carries"),
        # Cedar stands at the state's level already: a city cannot list it too
        (
            city,
            birch,
            sign_next(city, {**level, "chapters": [birch.actor, cedar.actor]}, now),
            "bad_level",
            "already stand at the level above",
        ),
        # Alder does not follow Cedar, whatever Cedar signs
        (cedar, alder, sign_next(cedar, level, now), "not_followed", "not a region this"),
    ]
    for sender, receiver, entry, _, _ in cases:
        assert await post_signed(sender, receiver, entry) == 202
    local = {"Alder": SEEN["alder"], "Birch": await local_id(cluster, birch, level["proposal"])}
    for _sender, receiver, entry, code, why in cases:

        async def named(n: Node = receiver, e: dict[str, Any] = entry) -> dict[str, Any] | None:
            view = await cluster.regional(n, local[n.name])
            got = [r for r in view["rejected"] if (r["actor"], r["seq"]) == (e["actor"], e["seq"])]
            return got[0] if got else None

        r = await wait_until(f"{receiver.name} to name the bad Level", named)
        assert (r["type"], r["code"]) == ("Level", code) and why in r["reason"], r
        view = await cluster.regional(receiver, local[receiver.name])
        assert view["region"] == city.actor and view["verification"] == "verified"


def city_view_level_seq(city: Node) -> int:
    """The seq of the city's Level entry, read from its chain file."""
    conn = sqlite3.connect(city.data / DATABASE_FILE)
    try:
        (seq,) = conn.execute("SELECT seq FROM chain_entries WHERE type = 'Level'").fetchone()
    finally:
        conn.close()
    return int(seq)


async def fetch_entry(cluster: Cluster, n: Node, entry_id: str) -> dict[str, Any]:
    assert cluster.http is not None
    headers = {"Accept": "application/activity+json"}
    async with cluster.http.get(entry_id, headers=headers) as r:
        assert r.status == 200, entry_id
        found: dict[str, Any] = json.loads(await r.text())
    return found
