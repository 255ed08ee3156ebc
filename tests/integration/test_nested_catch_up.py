"""A city region that was down when the state's Question came (docs/regional.md,
"Regions of regions"): real `convene serve` processes on loopback — a state, a city
that follows it, and one chapter (Alder) under the city. The city is killed before the
state opens its proposal; when it comes back before the close, its catch-up pull takes
the Question, it signs its Level, its chapter votes, and every level decides and
verifies as if it had never been away. Killed again and back only after a later
proposal closed, it signs no Level and the state's decision names it `missing`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from regionkit import join_region, local_id

from node.config import DATABASE_FILE
from node.demo import Cluster, Node, free_port, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRACE = 5
CLOSES_IN = 15  # room for the city's restart, its Level and Alder's votes
CLOSED_IN = 2  # closed long before the city is back
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("nested_catch_up")
    async with Cluster(root, ["Alder"], grace_s=GRACE) as c:
        c.region.name = "State"
        c.chapters.insert(0, Node("City", "region", root / "city", free_port(), GRACE))
        await c.create(members_per_chapter=2, start=True)
        await join_region(c, node(c, "City"), c.region)
        await join_region(c, node(c, "Alder"), node(c, "City"))
        yield c


def node(c: Cluster, name: str) -> Node:
    return next(n for n in c.nodes if n.name == name)


async def test_a_city_back_before_the_close_signs_its_level_and_counts(cluster: Cluster) -> None:
    state, city, alder = cluster.region, node(cluster, "City"), node(cluster, "Alder")
    city.kill()  # a crash: no goodbye, the Question finds the city down
    proposal = await cluster.propose(
        CLOSES_IN, method="choice", options=["tram", "bus"], rule="pooled"
    )
    object_id = proposal["object_id"]
    assert (await cluster.regional(state, proposal["id"]))["chapters"] == [city.actor]

    await cluster.start([city])
    city_id = await local_id(cluster, city, object_id)
    city_view = await cluster.regional(city, city_id)
    assert city_view["region"] == city.actor and city_view["level"] == [alder.actor]
    alder_id = await cluster.adopted(alder, object_id)
    await cluster.vote(alder, alder_id, [{"choice": "tram"}, {"choice": "bus"}])

    city_decided = await cluster.settled(city, city_id, timeout=60)
    assert city_decided["decision"]["counts"] == {"votes": {"tram": 1, "bus": 1}}
    assert city_decided["decision"]["reporting"] == 1
    seen = await cluster.settled(alder, alder_id, timeout=60)
    assert seen["decision"]["region_decision"] == city_decided["decision"]["region_decision"]

    decided = await cluster.settled(state, proposal["id"], timeout=60)
    decision = decided["decision"]
    assert decision["counts"] == {"votes": {"tram": 1, "bus": 1}}
    assert (decision["cast"], decision["reporting"]) == (2, 1)
    (lower,) = decided["lower_decisions"]
    assert lower["region"] == city.actor and lower["digest"] in decision["tallies"]

    async def city_checked_the_state() -> dict[str, Any] | None:
        v = await cluster.regional(city, city_id)
        return v if v.get("upper_verification") is not None else None

    up = await wait_until("the city to verify the state's decision", city_checked_the_state, 60)
    assert up["upper_verification"] == "verified", up.get("upper_dispute")
    assert up["upper_decision"]["id"] == decision["region_decision"]

    done = subprocess.run(
        [*CONVENE, "audit", state.url, "--json", "--jobs", "1", "--allow-private-network"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["findings"] == []
    assert (report["verified"]["decisions"], report["verified"]["tallies"]) == (2, 1)


async def test_a_city_back_after_the_close_signs_no_level_and_is_missing(
    cluster: Cluster,
) -> None:
    state, city, alder = cluster.region, node(cluster, "City"), node(cluster, "Alder")
    city.kill()
    proposal = await cluster.propose(CLOSED_IN, method="choice", options=["tram", "bus"])
    object_id = proposal["object_id"]
    # the state waits out the grace for the city's input, then decides without it
    decided = await cluster.settled(state, proposal["id"], timeout=60)
    (row,) = decided["decision"]["chapters"]
    assert (row["chapter"], row["status"]) == (city.actor, "missing")
    assert decided["decision"]["reporting"] == 0 and decided["lower_decisions"] == []

    await cluster.start([city])
    log = city.data.parent / f"{city.data.name}.log"

    async def sat_out() -> bool | None:
        return True if f"{object_id} closed before" in log.read_text() else None

    await wait_until("the city to sit the closed proposal out", sat_out, 60)
    assert levels_of(city) == 1  # the first test's only
    _, held = await cluster.call("GET", city, "/api/proposals")
    assert object_id not in {i["object_id"] for i in held["items"]}
    _, at_alder = await cluster.call("GET", alder, "/api/proposals")
    assert object_id not in {i["object_id"] for i in at_alder["items"]}
    after = await cluster.regional(state, proposal["id"])
    assert after["decision"] == decided["decision"] and after["rejected"] == []


def levels_of(n: Node) -> int:
    """How many Level entries the node's chain holds, read from its file."""
    conn = sqlite3.connect(n.data / DATABASE_FILE)
    try:
        (count,) = conn.execute(
            "SELECT count(*) FROM chain_entries WHERE type = 'Level'"
        ).fetchone()
    finally:
        conn.close()
    return int(count)
