"""Partner facilitation between real `convene serve` processes on loopback: a region, one
chapter (Alder) that follows it, and a partner node (an allied organization's) that does
not. The region grants the partner the facilitator role; the partner's signed request
opens a regional proposal that Alder holds and votes on; ungranted, revoked, forged and
replayed requests are refused and named. The tests run in order on one cluster."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from regionkit import post_answered, sign_next

from node.clock import rfc3339
from node.config import DATABASE_FILE
from node.demo import Cluster, Node, wait_until
from protocol import facilitation as rule
from protocol.canonical import digest

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRACE = 3
CLOSES_IN = 8  # seconds: time for Alder to hold the proposal and vote, under load
CONTEXT = Path(__file__).parents[2] / "federation" / "context.jsonld"
AS2_TERMS = {
    *("@context", "id", "type", "actor", "published", "proof", "name", "content"),
    *("summary", "oneOf", "anyOf", "endTime", "closed", "votersCount", "url"),
}
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]
SEEN: dict[str, Any] = {}


def convene(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVENE, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("facilitation")
    async with Cluster(root, ["Alder", "Partner"], grace_s=GRACE) as c:
        await c.create(members_per_chapter=2, start=True)
        alder = c.chapters[0]
        status, body = await c.call("POST", alder, "/api/federation/join", {"region": c.region.url})
        assert status == 202, body

        async def accepted() -> bool | None:
            _, seen = await c.call("GET", c.region, "/api/federation")
            ok = {f["actor"] for f in seen["followers"] if f["state"] == "accepted"}
            return True if alder.actor in ok else None

        await wait_until("the region to accept Alder", accepted)
        yield c


def partner(c: Cluster) -> Node:
    return c.chapters[1]


def chain_entry(node: Node, entry_id: str) -> dict[str, Any]:
    seq = int(entry_id.rsplit("/", 1)[1])
    conn = sqlite3.connect(node.data / DATABASE_FILE)
    try:
        (blob,) = conn.execute("SELECT entry FROM chain_entries WHERE seq = ?", (seq,)).fetchone()
    finally:
        conn.close()
    entry: dict[str, Any] = msgspec.json.decode(blob)
    assert entry["id"] == entry_id
    return entry


async def facilitation(c: Cluster, node: Node) -> dict[str, Any]:
    status, body = await c.call("GET", node, "/api/facilitation")
    assert status == 200, body
    return dict(body)


async def rejected(c: Cluster, actor: str, seq: int, code: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for r in (await facilitation(c, c.region))["rejected"]:
            if (r["actor"], r["seq"], r["code"]) == (actor, seq, code):
                return dict(r)
        return None

    return await wait_until(f"the region to refuse {actor} seq {seq} ({code})", probe)


def context_terms() -> set[str]:
    return set(msgspec.json.decode(CONTEXT.read_bytes())["@context"])


async def test_a_granted_partner_opens_a_regional_proposal_alder_votes_on(
    cluster: Cluster,
) -> None:
    region, helper, alder = cluster.region, partner(cluster), cluster.chapters[0]
    status, grant = await cluster.call(
        "POST", region, "/api/facilitators", {"actor": helper.actor, "convening": "Spring"}
    )
    assert status == 201, grant

    async def held() -> bool | None:
        return True if (await facilitation(cluster, helper))["held"] else None

    await wait_until("the partner to hold its grant", held)

    async def known() -> bool | None:
        grants = (await facilitation(cluster, alder))["known"]
        return True if [g["grant"] for g in grants] == [grant["grant"]] else None

    await wait_until("Alder, a follower, to know the grant", known)
    ask = {"title": "Rent freeze", "body": "Freeze rents", "method": "consent"}
    ask["closes_at"] = rfc3339(time.time() + CLOSES_IN)
    status, sent = await cluster.call(
        "POST",
        helper,
        "/api/facilitation/requests",
        {"region": region.actor, "action": "propose", "body": ask},
    )
    assert status == 201, sent

    async def carried() -> dict[str, Any] | None:
        for r in (await facilitation(cluster, region))["requests"]:
            if r["request"] == sent["request"] and r["proposal"]:
                return dict(r)
        return None

    done = await wait_until("the region to carry out the request", carried)
    question = chain_entry(region, done["object_id"])
    assert question["requested_by"] == sent["request"] and question["scope"] == "regional"
    assert question["chapters"] == [alder.actor]
    request = chain_entry(helper, sent["id"])
    grant_entry = chain_entry(region, f"{region.actor}/entries/{grant['seq']}")
    for entry in (question, request, grant_entry):
        assert not set(entry) - context_terms() - AS2_TERMS, sorted(set(entry) - context_terms())
    # The shared rule, as an auditor would run it, over what the two nodes signed.
    carried_out = rule.check_requested([grant_entry, question], [request])
    assert [c.facilitator for c in carried_out] == [helper.actor]

    local = await cluster.adopted(alder, done["object_id"])
    await cluster.vote(alder, local, [{"choice": "agree"}, {"choice": "agree"}])
    decided = await cluster.settled(region, done["proposal"], timeout=40)
    assert decided["decision"]["outcome"]["result"] == "passed", decided["decision"]
    SEEN.update(grant=grant, request=request, proposal=done["proposal"])


async def test_the_region_export_audits_clean(cluster: Cluster, tmp_path: Path) -> None:
    bundle = tmp_path / "region.jsonl"
    exported = convene(
        "export", "--data", str(cluster.region.data), "--out", str(bundle),
        "--allow-private-network",
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    # The partner's request travels in the region's export, so the audit judges the
    # Question's requested_by against it (protocol/audit_facilitation.py).
    assert b'"type":"FacilitationRequest"' in bundle.read_bytes()
    audited = convene("audit", str(bundle), "--jobs", "1", "--json")
    assert audited.returncode == 0, audited.stdout[-3000:] + audited.stderr
    report = msgspec.json.decode(audited.stdout)
    assert report["ok"] and report["verified"]["decisions"] >= 1


async def test_the_region_audited_by_url_reaches_the_partner(cluster: Cluster) -> None:
    # The crawl follows the grant to the facilitator's chain, where the cited request is.
    audited = convene("audit", cluster.region.url, "--allow-private-network", "--json")
    assert audited.returncode == 0, audited.stdout[-3000:] + audited.stderr
    report = msgspec.json.decode(audited.stdout)
    assert report["ok"], report["findings"]
    assert report["verified"]["actors"] == len(cluster.nodes)


async def test_a_replayed_request_opens_nothing_twice(cluster: Cluster) -> None:
    region, helper = cluster.region, partner(cluster)
    status, answer = await post_answered(helper, region, SEEN["request"])
    assert status == 202 and answer.get("status") == "duplicate", answer
    _, listed = await cluster.call("GET", region, "/api/proposals")
    assert [p["id"] for p in listed["items"]] == [SEEN["proposal"]]
    carried = [r for r in (await facilitation(cluster, region))["requests"]]
    assert [r["request"] for r in carried] == [digest(SEEN["request"])]


async def test_a_forged_request_is_refused_and_named(cluster: Cluster) -> None:
    region, helper = cluster.region, partner(cluster)
    body = rule.request_body(
        region.actor, SEEN["grant"]["grant"], "propose", {"title": "Dissolve", "method": "consent"}
    )
    signed = sign_next(helper, body, rfc3339(time.time()))
    forged = {**signed, "body": {"title": "Dissolve the region", "method": "consent"}}
    status, answer = await post_answered(helper, region, forged)
    assert status == 400 and answer["error"] == "bad_proof", answer
    named = await rejected(cluster, helper.actor, forged["seq"], "forged")
    assert named["type"] == "FacilitationRequest"


async def test_an_ungranted_nodes_request_is_refused_and_named(cluster: Cluster) -> None:
    region, alder = cluster.region, cluster.chapters[0]
    # Alder names the partner's grant: its own node signs it; the region refuses it.
    status, sent = await cluster.call(
        "POST",
        alder,
        "/api/facilitation/requests",
        {
            "region": region.actor,
            "action": "propose",
            "grant": SEEN["grant"]["grant"],
            "body": {"title": "Ours", "method": "consent"},
        },
    )
    assert status == 201, sent
    named = await rejected(cluster, alder.actor, sent["seq"], "not_granted")
    assert f"is for {partner(cluster).actor}, not for this actor" in named["reason"]


async def test_a_revoked_grants_request_is_refused_and_named(cluster: Cluster) -> None:
    region, helper = cluster.region, partner(cluster)
    grant = SEEN["grant"]["grant"]
    status, revoked = await cluster.call("DELETE", region, f"/api/facilitators/{grant}")
    assert status == 200 and not revoked["in_force"], revoked
    status, sent = await cluster.call(
        "POST",
        helper,
        "/api/facilitation/requests",
        {
            "region": region.actor,
            "action": "propose",
            "grant": grant,
            "body": {"title": "After the revocation", "method": "consent"},
        },
    )
    assert status == 201, sent
    named = await rejected(cluster, helper.actor, sent["seq"], "revoked")
    assert f"seq {revoked['revoked_seq']}" in named["reason"]

    async def known_revoked() -> bool | None:
        grants = (await facilitation(cluster, cluster.chapters[0]))["known"]
        return True if grants and grants[0]["revoked_seq"] == revoked["revoked_seq"] else None

    await wait_until("Alder to know of the revocation", known_revoked)
    _, listed = await cluster.call("GET", region, "/api/proposals")
    assert [p["id"] for p in listed["items"]] == [SEEN["proposal"]]
