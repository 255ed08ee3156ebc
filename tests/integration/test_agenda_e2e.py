"""The bottom-up agenda between real `convene serve` processes on loopback: a region and
three chapters (Alder, Birch, Cedar), each with its own SQLite file, talking signed
HTTP. The tests run in order on one cluster; those that craft bad entries come last,
as each spends its author's next chain position."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from regionkit import head, post_answered, sign_next

from node.demo import Cluster, Node, wait_until
from protocol import agenda, chain, keys

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]
WHEN = "2026-11-26T15:00:00Z"
SEEN: dict[str, Any] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("agenda")
    async with Cluster(root, ["Alder", "Birch", "Cedar"], grace_s=5) as c:
        await c.create(members_per_chapter=1, start=True)
        await c.join()
        yield c


def named(c: Cluster, name: str) -> Node:
    return next(n for n in c.nodes if n.name == name)


async def agenda_on(c: Cluster, node: Node, check: Any, what: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, view = await c.call("GET", node, f"/api/agenda/{SEEN['config']}")
        return view if status == 200 and check(view) else None

    found: dict[str, Any] = await wait_until(f"{node.name}: {what}", probe, timeout=40)
    return found


async def refused_on(c: Cluster, node: Node, actor: str, seq: int) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        _, view = await c.call("GET", node, "/api/agenda")
        return next((r for r in view["rejected"] if (r["actor"], r["seq"]) == (actor, seq)), None)

    found: dict[str, Any] = await wait_until(f"{node.name} to name {actor} {seq}", probe, 40)
    return found


async def test_submissions_and_sponsorships_make_the_same_agenda_everywhere(
    cluster: Cluster,
) -> None:
    c = cluster
    alder, birch, cedar = (named(c, n) for n in ("Alder", "Birch", "Cedar"))
    body = {"convening": "Spring convening", "min_sponsors": 2}
    status, view = await c.call("POST", c.region, "/api/agenda", body)
    assert status == 201, view
    # the chapters default to the region's accepted followers
    assert sorted(view["chapters"]) == sorted(ch.actor for ch in c.chapters)
    SEEN["config"] = view["config"]
    for ch in c.chapters:
        await agenda_on(c, ch, lambda v: True, "the config")
    status, a = await c.call(
        "POST", alder, f"/api/agenda/{SEEN['config']}/items", {"title": "Rent caps"}
    )
    assert status == 201, a
    status, b = await c.call(
        "POST", birch, f"/api/agenda/{SEEN['config']}/items", {"title": "Night buses"}
    )
    assert status == 201, b
    SEEN["rent"], SEEN["buses"] = a["item"], b["item"]
    SEEN["rent_entry"] = a["entry"]
    await agenda_on(c, cedar, lambda v: len(v["items"]) == 2, "both items")
    status, sp = await c.call(
        "POST", cedar, f"/api/agenda/{SEEN['config']}/items/{a['item']}/sponsor"
    )
    assert status == 201, sp
    views = [
        await agenda_on(c, node, lambda v: v["items"][0]["status"] == "qualified", "qualified")
        for node in c.nodes
    ]
    assert all(v["items"] == views[0]["items"] for v in views)
    top, other = views[0]["items"]
    assert (top["item"], top["title"]) == (a["item"], "Rent caps")
    assert top["sponsors"] == sorted([alder.actor, cedar.actor])
    assert (other["title"], other["status"]) == ("Night buses", "submitted")


async def test_closing_without_a_vote_flags_the_item_on_every_node(cluster: Cluster) -> None:
    c = cluster
    status, view = await c.call("POST", c.region, f"/api/agenda/{SEEN['config']}/close")
    assert status == 200 and view["dropped"] == [SEEN["rent"]]
    SEEN["close_seq"] = view["close"]["seq"]
    for node in c.nodes:
        seen = await agenda_on(c, node, lambda v: v["closed"], "the close")
        assert seen["dropped"] == [SEEN["rent"]]
        assert {i["title"]: i["status"] for i in seen["items"]} == {
            "Rent caps": "dropped",
            "Night buses": "submitted",
        }


async def test_the_audit_of_the_regions_bundle_names_the_dropped_item(
    cluster: Cluster, tmp_path: Path
) -> None:
    c = cluster
    out = tmp_path / "region.jsonl"
    args = ["export", "--data", str(c.region.data), "--out", str(out), "--allow-private-network"]
    export = subprocess.run(
        [*CONVENE, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert export.returncode == 0, export.stderr
    audit = subprocess.run(
        [*CONVENE, "audit", str(out), "--json"], capture_output=True, text=True, timeout=120
    )
    assert audit.returncode == 1, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    dropped = [f for f in report["findings"] if f["what"] == "agenda_item_dropped"]
    assert [(f["actor"], f["seq"]) for f in dropped] == [(c.region.actor, SEEN["close_seq"])], (
        report["findings"]
    )
    assert SEEN["rent"] in dropped[0]["why"] and SEEN["config"] in dropped[0]["why"]
    assert len(report["findings"]) == 1  # every signature and link still checks out
    # the same by URL: the crawl reaches the chapters from the region's chain
    crawled = subprocess.run(
        [*CONVENE, "audit", c.region.url, "--allow-private-network", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crawled.returncode == 1, crawled.stdout + crawled.stderr
    by_url = json.loads(crawled.stdout)
    assert [(f["actor"], f["seq"], f["what"]) for f in by_url["findings"]] == [
        (c.region.actor, SEEN["close_seq"], "agenda_item_dropped")
    ]


async def test_forged_misaddressed_unlisted_and_replayed_entries_are_refused_and_named(
    cluster: Cluster,
) -> None:
    c = cluster
    alder, birch = named(c, "Alder"), named(c, "Birch")
    config = SEEN["config"]
    # forged: Birch's name and next seq, someone else's key; the inbox refuses it
    seq, prev = head(birch)
    forged = msgspec.to_builtins(
        chain.make_entry(
            agenda.sponsorship_body(c.region.actor, config, SEEN["buses"]),
            actor=birch.actor,
            seq=seq + 1,
            prev=prev,
            key=keys.SigningKey.from_seed(b"x" * 32),
            key_id=f"{birch.actor}#ed25519-0",
            published=WHEN,
        )
    )
    status, answer = await post_answered(birch, c.region, forged)
    assert status == 400, answer
    r = await refused_on(c, c.region, birch.actor, seq + 1)
    assert r["code"] == "forged" and r["type"] == "AgendaSponsorship"
    # misaddressed: Alder's real key, naming Birch as the region
    wrong = sign_next(alder, agenda.submission_body(birch.actor, config, "Elsewhere"), WHEN)
    status, answer = await post_answered(alder, c.region, wrong)
    assert status == 202, answer
    r = await refused_on(c, c.region, alder.actor, wrong["seq"])
    assert r["code"] == "misaddressed" and "addressed to region" in r["reason"]
    # not listed: the region's own key signing a chapter's submission, sent to Birch
    unlisted = sign_next(c.region, agenda.submission_body(c.region.actor, config, "Ours"), WHEN)
    status, answer = await post_answered(c.region, birch, unlisted)
    assert status == 202, answer
    r = await refused_on(c, birch, c.region.actor, unlisted["seq"])
    assert r["code"] == "not_listed" and c.region.actor in r["reason"]
    # replayed: Alder's real submission, sent again, is taken once
    assert c.http is not None
    accept = {"Accept": "application/activity+json"}
    async with c.http.get(SEEN["rent_entry"], headers=accept) as got:
        assert got.status == 200
        original = await got.json(content_type=None)
    status, answer = await post_answered(alder, c.region, original)
    assert status in (200, 202), answer
    # the agenda on every node is as before: no bad entry reached it
    for node in c.nodes:
        _, seen = await c.call("GET", node, f"/api/agenda/{config}")
        assert sorted(i["title"] for i in seen["items"]) == ["Night buses", "Rent caps"]
        assert seen["dropped"] == [SEEN["rent"]]
