"""A regional list of demands between real `convene serve` processes on loopback: one
region and two chapters (Ash, Elm), each with its own SQLite file, talking signed
HTTP (docs/protocol.md §10.5).

The region asks "choose 2" by score; each chapter's members vote on their own node,
each chapter signs its tally, and every node computes the list itself from the
signed tallies: the region's and both chapters' GET answer the same list. Bad
`seats` are refused by the API with a clear 400, and a Question signed with a bad
`seats` is refused by a chapter and named (region, seq, why). The test that signs a
crafted entry with the region's key comes last: it spends a chain position.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from regionkit import entry_body, post_signed, sign_next

from node.clock import rfc3339
from node.config import DATABASE_FILE
from node.demo import Cluster, Node, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRACE = 8  # seconds after close that tallies still count (--regional-grace-s)
CLOSES_IN = 5  # seconds: time for both chapters to open it and vote, under load
OPTIONS = ["rent cap", "transit", "clinic", "library"]
SCORES = {
    "Ash": [
        {"rent cap": 5, "transit": 3},
        {"rent cap": 4, "clinic": 2},
        {"transit": 5, "library": 1},
    ],
    "Elm": [
        {"rent cap": 3, "transit": 4},
        {"clinic": 5},
        {"rent cap": 5, "transit": 1, "library": 0},
    ],
}
SEEN: dict[str, Any] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("demands")
    async with Cluster(root, list(SCORES), grace_s=GRACE) as c:
        await c.create(members_per_chapter=3, start=True)
        await c.join()
        yield c


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"seats": 0}, "seats: seats must be a whole number from 1 to 4, got 0"),
        ({"seats": 5}, "seats: seats must be a whole number from 1 to 4, got 5"),
        ({"seats": "2"}, "Expected `int | null`, got `str` - at `$.seats`"),
        ({"seats": 2.0}, "at `$.seats`"),
        (
            {"seats": 1, "method": "consent", "options": []},
            "a list of demands is chosen by approval or score, not consent",
        ),
        ({"seats": 2, "method": "ranked"}, "by approval or score, not ranked"),
        ({"seats": 2, "rule": "chapters"}, "decided pooled, not by 'chapters'"),
        ({"agenda_item": "not-an-id"}, "agenda_item must be 64 lowercase hex digits"),
    ],
)
async def test_bad_seats_are_400_with_a_clear_message(
    cluster: Cluster, fields: dict[str, Any], says: str
) -> None:
    body = {
        "title": "Demands",
        "method": "approval",
        "options": OPTIONS,
        "scope": "regional",
        "closes_at": rfc3339(time.time() + 600),
    }
    before = await cluster.call("GET", cluster.region, "/api/proposals")
    status, answer = await cluster.call("POST", cluster.region, "/api/proposals", body | fields)
    assert status == 400, answer
    assert answer["error"] == "bad_request" and says in answer["detail"], answer
    assert await cluster.call("GET", cluster.region, "/api/proposals") == before  # none made


async def test_a_chapter_cannot_put_an_agenda_item_to_a_vote(cluster: Cluster) -> None:
    ash = cluster.chapters[0]
    body = {"title": "t", "method": "approval", "options": OPTIONS, "agenda_item": "ab" * 32}
    status, answer = await cluster.call("POST", ash, "/api/proposals", body)
    assert status == 400 and "only a regional proposal" in answer["detail"], answer


async def test_every_chapter_shows_the_regions_list(cluster: Cluster) -> None:
    proposal = await cluster.propose(
        CLOSES_IN,
        title="Our demands to the city",
        method="score",
        options=OPTIONS,
        seats=2,
    )
    assert proposal["seats"] == 2 and proposal["terms"] == {"seats": 2}
    assert proposal["demands"] is None
    local = {ch.name: await cluster.adopted(ch, proposal["object_id"]) for ch in cluster.chapters}
    for ch in cluster.chapters:
        status, view = await cluster.call("GET", ch, f"/api/proposals/{local[ch.name]}")
        assert status == 200 and view["seats"] == 2 and view["terms"] == {"seats": 2}
        await cluster.vote(ch, local[ch.name], [{"scores": s} for s in SCORES[ch.name]])

    await cluster.settled(cluster.region, proposal["id"])
    status, region_view = await cluster.call(
        "GET", cluster.region, f"/api/proposals/{proposal['id']}"
    )
    assert status == 200 and region_view["status"] == "decided"
    demands = region_view["demands"]
    # pooled over both chapters: means 17/4, 7/2, 13/4, 1/2 (clinic's higher mean puts
    # it ahead of transit, whose sum is larger)
    assert demands["result"] == "complete" and demands["adopted"] == ["rent cap", "clinic"]
    assert [
        (d["option"], d["place"], d["mean"], d["scored"], d["support"]) for d in demands["items"]
    ] == [
        ("rent cap", 1, "17/4", 4, 17),
        ("clinic", 2, "7/2", 2, 7),
        ("transit", 3, "13/4", 4, 13),
        ("library", 4, "1/2", 2, 1),
    ]
    for ch in cluster.chapters:
        await cluster.settled(ch, local[ch.name])
        status, view = await cluster.call("GET", ch, f"/api/proposals/{local[ch.name]}")
        assert status == 200 and view["verification"] == "verified"
        assert view["demands"] == demands, ch.name  # computed by the chapter itself
        assert view["decision"]["tallies"] == region_view["decision"]["tallies"]
    SEEN["proposal"], SEEN["local"] = proposal, local


async def results_page(node: Node, proposal_id: str) -> str:
    """The results page as the node's organizer sees it, logged in by their link."""
    jar = aiohttp.CookieJar(unsafe=True)  # a bare IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        link = node.organizer["login_url"]
        async with http.get(link) as answer:
            found = re.search(r'name="csrf" value="([^"]+)"', await answer.text())
            assert found is not None
        async with http.post(link, data={"csrf": found.group(1)}) as answer:
            assert answer.status == 200, await answer.text()
        async with http.get(f"{node.url}/proposals/{proposal_id}/results") as answer:
            assert answer.status == 200
            return await answer.text()


ROW = re.compile(r"<tr class=\"[a-z-]+\"><td>([^<]+)</td><th scope=\"row\">([^<]+)</th>")


async def test_every_results_page_shows_the_list(cluster: Cluster) -> None:
    pages = {cluster.region.name: await results_page(cluster.region, SEEN["proposal"]["id"])}
    for ch in cluster.chapters:
        pages[ch.name] = await results_page(ch, SEEN["local"][ch.name])
    for name, html in pages.items():
        assert "List of demands: choose 2" in html, name
        assert "2 demands adopted</strong>, in order of support" in html, name
        expected = [("1", "rent cap"), ("2", "clinic"), ("3", "transit"), ("4", "library")]
        assert ROW.findall(html) == expected, name
        assert "(all chapters" in html and "members counted together)" in html, name


def last_question(node: Node) -> dict[str, Any]:
    """The newest Question entry in the node's chain, read from its file."""
    conn = sqlite3.connect(node.data / DATABASE_FILE)
    try:
        (blob,) = conn.execute(
            "SELECT entry FROM chain_entries WHERE type = 'Question' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    question: dict[str, Any] = msgspec.json.decode(blob)
    return question


def rejected(node: Node, actor: str, seq: int) -> list[tuple[str, str]]:
    conn = sqlite3.connect(node.data / DATABASE_FILE)
    try:
        rows = conn.execute(
            "SELECT code, reason FROM regional_rejected WHERE actor = ? AND seq = ?", (actor, seq)
        ).fetchall()
    finally:
        conn.close()
    return [(str(code), str(reason)) for code, reason in rows]


async def test_a_replayed_question_and_a_question_with_bad_seats(cluster: Cluster) -> None:
    region, (ash, elm) = cluster.region, cluster.chapters
    real = last_question(region)
    assert real["id"] == SEEN["proposal"]["object_id"] and real["seats"] == 2
    # the same signed Question again: held once, terms unchanged
    assert await post_signed(region, ash, real) == 202
    _, listed = await cluster.call("GET", ash, "/api/proposals")
    same = [p for p in listed["items"] if p["object_id"] == real["id"]]
    assert len(same) == 1 and same[0]["seats"] == 2

    # signed by the region's real key, but asking for more seats than options
    bad = sign_next(region, entry_body(real) | {"seats": 9}, rfc3339(time.time()))
    assert await post_signed(region, elm, bad) == 202

    async def named() -> list[tuple[str, str]] | None:
        return rejected(elm, region.actor, bad["seq"]) or None

    [(code, reason)] = await wait_until("Elm to reject the bad Question", named, 20)
    assert code == "malformed"
    assert "seats must be a whole number from 1 to 4, got 9" in reason
    _, listed = await cluster.call("GET", elm, "/api/proposals")
    assert all(p["object_id"] != bad["id"] for p in listed["items"])  # never held
