"""A whole regional convening, end to end, between real `convene serve` processes on
loopback, each with its own SQLite file (issue 10, "Tests and pages"; docs/protocol.md
§10): a state region; a city region that follows it; three chapters (Alder, Birch,
Cedar) that follow the city, with two members each.

In order, on one cluster: the city runs a time poll and schedules the convening from
it; members RSVP and each chapter signs its attendance; the chapters put items on the
city's agenda and co-sponsor them; the city votes the qualified item as a list of
demands; the city closes the agenda with nothing dropped; the state asks its own list
of demands through the city (nested); and `convene audit` of the state's and the
city's URLs finds everything valid. Every expectation is derived from what the
members did (their ballots and answers), or compared across nodes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import async_playwright

from node.clock import rfc3339
from node.demo import Cluster, Node, free_port, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRACE = 5  # seconds after close that tallies still count (--regional-grace-s)
CLOSES_IN = 5  # seconds a vote stays open: time for three chapters to open it and vote
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]
CHAPTERS = ["Alder", "Birch", "Cedar"]
SLOTS = [
    "2030-06-06T17:00:00Z/2030-06-06T20:00:00Z",
    "2030-06-07T10:00:00Z/2030-06-07T13:00:00Z",
    "2030-06-08T14:00:00Z/2030-06-08T17:00:00Z",
]
# Each member marks the slots they can attend on their own chapter.
AVAILABLE = {
    "Alder": [[SLOTS[0], SLOTS[1]], [SLOTS[1]]],
    "Birch": [[SLOTS[2]], [SLOTS[1], SLOTS[2]]],
    "Cedar": [[SLOTS[1]], [SLOTS[0]]],
}
ANSWERS = {
    "Alder": ["going", "going"],
    "Birch": ["going", "maybe"],
    "Cedar": ["not going", "going"],
}
CAPACITY = 5
ITEMS = {  # what Alder puts on the city's agenda
    "Rent caps": "A citywide cap on yearly rent increases",
    "Night buses": "Buses every 20 minutes after midnight",
}
DEMANDS = ["rent cap", "night buses", "clinic", "library"]
APPROVALS = {  # the city's list of demands, voted on the chapters
    "Alder": [["rent cap", "clinic"], ["rent cap", "night buses"]],
    "Birch": [["rent cap"], ["clinic", "library"]],
    "Cedar": [["clinic", "rent cap"], ["night buses"]],
}
STATE_APPROVALS = {  # the state's list, voted on the same chapters through the city
    "Alder": [["housing"], ["housing", "transit"]],
    "Birch": [["transit", "schools"], ["housing"]],
    "Cedar": [["schools"], ["housing", "schools"]],
}
# Debian's Chromium, resolving nothing but loopback (as tests/web/livenode.py drives it)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
SEEN: dict[str, Any] = {}


def convene(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVENE, *args], capture_output=True, text=True, timeout=120, check=False
    )


def node(c: Cluster, name: str) -> Node:
    return next(n for n in c.nodes if n.name == name)


def chapters(c: Cluster) -> list[Node]:
    return [node(c, name) for name in CHAPTERS]


async def follow(c: Cluster, follower: Node, region: Node, *, cli: bool = False) -> None:
    """`follower` follows `region` (by `convene join` on its folder, or the API) and the
    region accepted it."""
    if cli:  # the follower's running node delivers the Follow the command recorded
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

    await wait_until(f"{region.name} to accept {follower.name}", accepted, timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("journey")
    async with Cluster(root, CHAPTERS, grace_s=GRACE) as c:
        c.region.name = "State"
        c.chapters.insert(0, Node("City", "region", root / "city", free_port(), GRACE))
        await c.create(members_per_chapter=2, start=True)
        city = node(c, "City")
        await follow(c, city, c.region, cli=True)
        for ch in chapters(c):
            await follow(c, ch, city)
        yield c


async def propose(c: Cluster, region: Node, **fields: Any) -> dict[str, Any]:
    body = {"closes_at": rfc3339(time.time() + CLOSES_IN), "scope": "regional", **fields}
    status, view = await c.call("POST", region, "/api/proposals", body)
    assert status == 201, view
    return dict(view)


async def vote_approvals(
    c: Cluster, object_id: str, picks: dict[str, list[list[str]]]
) -> dict[str, str]:
    """Every chapter's members approve `picks` on their own node; the local ids."""
    local = {ch.name: await c.adopted(ch, object_id, timeout=40) for ch in chapters(c)}
    for ch in chapters(c):
        await c.vote(ch, local[ch.name], [{"choices": p} for p in picks[ch.name]])
    return local


def approvals(picks: dict[str, list[list[str]]]) -> Counter[str]:
    return Counter(option for ballots in picks.values() for b in ballots for option in b)


# -- 1. the date, by a time poll -------------------------------------------------------


async def test_the_city_schedules_the_convening_by_a_time_poll(cluster: Cluster) -> None:
    c, city = cluster, node(cluster, "City")
    poll = await propose(c, city, title="When do we meet?", method="approval", options=SLOTS)
    await vote_approvals(c, poll["object_id"], AVAILABLE)
    await c.settled(city, poll["id"], timeout=60)
    # the slot most members can attend, counted from what they marked
    ((best, _),) = approvals(AVAILABLE).most_common(1)
    assert sorted(approvals(AVAILABLE).values())[-2] < approvals(AVAILABLE)[best]

    body = {"name": "City convening", "from_poll": poll["id"], "location": "Union hall"}
    status, ev = await c.call("POST", city, "/api/events", {**body, "capacity": CAPACITY})
    assert status == 201, ev
    assert f"{ev['start']}/{ev['end']}" == best
    assert set(ev["chapters"]) == {ch.actor for ch in chapters(c)}
    for ch in chapters(c):

        async def held(n: Node = ch) -> dict[str, Any] | None:
            status, view = await c.call("GET", n, f"/api/events/{ev['id']}")
            return dict(view) if status == 200 else None

        seen = await wait_until(f"{ch.name} to hold the convening", held, timeout=40)
        assert (seen["digest"], seen["host"]) == (ev["digest"], city.actor)
        assert (seen["start"], seen["end"], seen["can_report"]) == (ev["start"], ev["end"], True)
    SEEN["event"] = ev


async def test_members_rsvp_and_the_city_sums_signed_attendance(cluster: Cluster) -> None:
    c, city, ev = cluster, node(cluster, "City"), SEEN["event"]
    for ch in chapters(c):
        for member, answer in zip(ch.members, ANSWERS[ch.name], strict=True):
            path = f"/api/events/{ev['id']}/rsvp"
            status, view = await c.call("POST", ch, path, {"answer": answer}, member["token"])
            assert status == 200, view
        status, signed = await c.call("POST", ch, f"/api/events/{ev['id']}/attendance")
        assert status == 201, signed

    async def summed(n: Node) -> dict[str, Any] | None:
        _, view = await c.call("GET", n, f"/api/events/{ev['id']}")
        rows = view["attendance"]["chapters"]
        return dict(view["attendance"]) if all(r["entry"] for r in rows) else None

    total = await wait_until("the city to hold three counts", lambda: summed(city), 40)
    by_chapter = {r["chapter"]: r for r in total["chapters"]}
    for ch in chapters(c):
        said = Counter(ANSWERS[ch.name])
        row = by_chapter[ch.actor]
        assert (row["going"], row["maybe"], row["not_going"]) == (
            said["going"],
            said["maybe"],
            said["not going"],
        ), ch.name
        assert row["members"] == 1 + len(ch.members)  # the organizer and the members
    everyone = Counter(a for said in ANSWERS.values() for a in said)
    assert (total["going"], total["maybe"]) == (everyone["going"], everyone["maybe"])
    assert total["capacity"] == CAPACITY
    assert total["remaining"] == CAPACITY - everyone["going"]
    assert total["over_capacity"] is (everyone["going"] > CAPACITY)
    for ch in chapters(c):  # every chapter holds every count and sums it alike

        async def on_chapter(n: Node = ch) -> dict[str, Any] | None:
            return await summed(n)

        seen = await wait_until(f"{ch.name} to hold three counts", on_chapter, 40)
        assert seen == total


# -- 2. the agenda, bottom up ----------------------------------------------------------


async def agenda_on(c: Cluster, n: Node, check: Any, what: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, view = await c.call("GET", n, f"/api/agenda/{SEEN['config']}")
        return dict(view) if status == 200 and check(view) else None

    return await wait_until(f"{n.name}: {what}", probe, timeout=40)


async def test_chapters_put_items_on_the_agenda_and_co_sponsor_them(cluster: Cluster) -> None:
    c, city = cluster, node(cluster, "City")
    alder, birch, _ = chapters(c)
    # two of the three chapters must stand behind an item
    body = {"convening": "City convening", "min_share": "2/3"}
    status, cfg = await c.call("POST", city, "/api/agenda", body)
    assert status == 201, cfg
    assert sorted(cfg["chapters"]) == sorted(ch.actor for ch in chapters(c))
    assert cfg["needed"] == 2
    SEEN["config"] = cfg["config"]
    await agenda_on(c, alder, lambda v: True, "the config")
    items = {}
    for title, summary in ITEMS.items():
        path = f"/api/agenda/{SEEN['config']}/items"
        status, sub = await c.call("POST", alder, path, {"title": title, "summary": summary})
        assert status == 201, sub
        items[title] = sub["item"]
    await agenda_on(c, birch, lambda v: len(v["items"]) == 2, "both items")
    path = f"/api/agenda/{SEEN['config']}/items/{items['Rent caps']}/sponsor"
    status, sp = await c.call("POST", birch, path)
    assert status == 201, sp

    def settled(v: dict[str, Any]) -> bool:
        return len(v["items"]) == 2 and v["items"][0]["status"] == "qualified"

    views = [await agenda_on(c, n, settled, "the qualified item") for n in [city, *chapters(c)]]
    for v in views:  # every node computes the same agenda from the same signed entries
        assert [{k: i[k] for k in i if k != "proposal"} for i in v["items"]] == [
            {k: i[k] for k in i if k != "proposal"} for i in views[0]["items"]
        ]
        assert (v["needed"], v["closed"], v["dropped"]) == (2, False, [])
    top, other = views[0]["items"]
    assert (top["item"], top["title"], top["chapter"]) == (
        items["Rent caps"],
        "Rent caps",
        alder.actor,
    )
    assert top["sponsors"] == sorted([alder.actor, birch.actor])
    assert (other["item"], other["status"]) == (items["Night buses"], "submitted")
    assert other["sponsors"] == [alder.actor]  # one chapter of the two needed
    assert {i["title"]: i["summary"] for i in views[0]["items"]} == ITEMS
    SEEN["items"] = items


# -- 3. the qualified item, voted as a list of demands ---------------------------------


def expected_list(picks: dict[str, list[list[str]]], seats: int) -> tuple[list[str], list[int]]:
    """The options approved by anyone, most approvals first, and the adopted ones
    (the ballots are chosen with no tie at the cut)."""
    counted = approvals(picks).most_common()
    assert counted[seats - 1][1] > counted[seats][1]
    return [o for o, _ in counted], [n for _, n in counted]


async def test_the_city_votes_the_item_as_a_list_of_demands(cluster: Cluster) -> None:
    c, city = cluster, node(cluster, "City")
    item = SEEN["items"]["Rent caps"]
    proposal = await propose(
        c,
        city,
        title="Our demands to the city council",
        method="approval",
        options=DEMANDS,
        seats=2,
        agenda_item=item,
    )
    assert (proposal["seats"], proposal["agenda_item"]) == (2, item)
    local = await vote_approvals(c, proposal["object_id"], APPROVALS)
    decided = await c.settled(city, proposal["id"], timeout=60)
    _, view = await c.call("GET", city, f"/api/proposals/{proposal['id']}")
    demands = view["demands"]
    order, support = expected_list(APPROVALS, 2)
    assert demands["result"] == "complete" and demands["adopted"] == order[:2]
    assert [d["option"] for d in demands["items"]] == order
    assert [d["support"] for d in demands["items"]] == support
    assert decided["decision"]["reporting"] == len(CHAPTERS)  # pooled from every tally
    for ch in chapters(c):  # each chapter reads the same list off the same tallies
        await c.settled(ch, local[ch.name], timeout=60)
        _, seen = await c.call("GET", ch, f"/api/proposals/{local[ch.name]}")
        assert seen["verification"] == "verified" and seen["demands"] == demands, ch.name
        assert seen["decision"]["tallies"] == decided["decision"]["tallies"]
    for n in [city, *chapters(c)]:  # the item is voted on every node's agenda
        v = await agenda_on(c, n, lambda v: v["items"][0]["status"] == "voted", "the vote")
        assert v["items"][0]["item"] == item
    SEEN["demands"] = (proposal, local, demands)


async def test_the_city_closes_the_agenda_and_drops_nothing(cluster: Cluster) -> None:
    c, city = cluster, node(cluster, "City")
    status, view = await c.call("POST", city, f"/api/agenda/{SEEN['config']}/close")
    assert status == 200, view
    assert view["closed"] is True and view["dropped"] == []
    statuses = {"Rent caps": "voted", "Night buses": "submitted"}  # the latter never qualified
    for n in [city, *chapters(c)]:
        seen = await agenda_on(c, n, lambda v: v["closed"], "the close")
        assert seen["dropped"] == []
        assert {i["title"]: i["status"] for i in seen["items"]} == statuses


# -- 4. the city's decision feeds the state --------------------------------------------


async def local_id(c: Cluster, n: Node, object_id: str) -> str:
    async def probe() -> str | None:
        _, body = await c.call("GET", n, "/api/proposals")
        ids = [i["id"] for i in body["items"] if i["object_id"] == object_id]
        return ids[0] if ids else None

    return await wait_until(f"{n.name} to hold {object_id}", probe, timeout=40)


async def test_the_state_lists_demands_through_the_city(cluster: Cluster) -> None:
    c, state, city = cluster, cluster.region, node(cluster, "City")
    options = sorted(approvals(STATE_APPROVALS))
    proposal = await propose(
        c, state, title="Our demands to the state", method="approval", options=options, seats=2
    )
    assert (await c.regional(state, proposal["id"]))["chapters"] == [city.actor]
    city_id = await local_id(c, city, proposal["object_id"])
    local = await vote_approvals(c, proposal["object_id"], STATE_APPROVALS)
    city_view = await c.settled(city, city_id, timeout=60)
    assert sorted(city_view["level"]) == sorted(ch.actor for ch in chapters(c))
    decided = await c.settled(state, proposal["id"], timeout=60)
    # the state's one input is the city's signed decision, standing for its chapters
    lower = decided["lower_decisions"]
    assert [d["region"] for d in lower] == [city.actor]
    assert lower[0]["digest"] in decided["decision"]["tallies"]
    assert decided["decision"]["counts"] == city_view["decision"]["counts"]
    _, view = await c.call("GET", state, f"/api/proposals/{proposal['id']}")
    demands = view["demands"]
    order, support = expected_list(STATE_APPROVALS, 2)
    assert demands["result"] == "complete" and demands["adopted"] == order[:2]
    assert [(d["option"], d["support"]) for d in demands["items"]] == list(
        zip(order, support, strict=True)
    )
    _, at_city = await c.call("GET", city, f"/api/proposals/{city_id}")
    assert at_city["demands"] == demands  # the city reads the same list off its chapters
    for ch in chapters(c):
        seen = await c.settled(ch, local[ch.name], timeout=60)
        assert seen["region"] == city.actor
        assert seen["decision"]["region_decision"] == city_view["decision"]["region_decision"]
        _, mine = await c.call("GET", ch, f"/api/proposals/{local[ch.name]}")
        assert mine["demands"] == demands, ch.name

    async def city_checked_the_state() -> dict[str, Any] | None:
        v = await c.regional(city, city_id)
        return v if v.get("upper_verification") is not None else None

    up = await wait_until("the city to verify the state", city_checked_the_state, 40)
    assert up["upper_verification"] == "verified", up.get("upper_dispute")
    assert up["upper_decision"]["id"] == decided["decision"]["region_decision"]


# -- 5. anyone audits it, by URL -------------------------------------------------------


@pytest.mark.parametrize("level", ["State", "City"])
async def test_the_audit_by_url_finds_every_level_valid(cluster: Cluster, level: str) -> None:
    done = convene(
        "audit", node(cluster, level).url, "--json", "--jobs", "1", "--allow-private-network"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["findings"] == []
    seen = report["verified"]
    # the crawl from either level reaches every node: the state's Question is carried
    # in the city's Level, the chapters' tallies are named by the decisions
    assert seen["actors"] == len(cluster.nodes)
    # three regional votes (the time poll, the city's list, the state's list), each
    # tallied by the three chapters; each decided by its region, and the state's one
    # also by the city at its level
    assert (seen["proposals"], seen["tallies"]) == (3, 3 * len(CHAPTERS))
    assert seen["decisions"] == 3 + 1


# -- 6. what the city's organizer sees (screenshots for docs/organizing.md) -------------


ROW = re.compile(r"<tr class=\"[a-z-]+\"><td>([^<]+)</td><th scope=\"row\">([^<]+)</th>")


async def test_the_citys_pages_show_the_journey(cluster: Cluster) -> None:
    city, ev = node(cluster, "City"), SEEN["event"]
    proposal, _, demands = SEEN["demands"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 760, "height": 915})
            await page.goto(city.organizer["login_url"])
            await page.get_by_role("button", name="Log me in").click()
            await page.wait_for_url(re.compile(r"/account/passphrase\?welcome=1$"))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)

            await page.goto(f"{city.url}/agenda/{SEEN['config']}")
            for title, item in SEEN["items"].items():
                card = page.locator(f"#item-{item[:12]}")
                assert title in await card.inner_text()
                want = "voted" if title == "Rent caps" else "submitted"
                assert await card.get_attribute("data-status") == want
            await page.screenshot(path=str(ARTIFACTS / "journey-agenda.png"), full_page=True)

            await page.goto(f"{city.url}/events/{ev['id']}")
            going = sum(a == "going" for said in ANSWERS.values() for a in said)
            line = await page.inner_text("#capacity-line")
            assert line == f"{going} going of {CAPACITY} places: {CAPACITY - going} left."
            await page.screenshot(path=str(ARTIFACTS / "journey-event.png"), full_page=True)

            await page.goto(f"{city.url}/proposals/{proposal['id']}/results")
            rows = ROW.findall(await page.content())
            assert [option for _, option in rows] == [d["option"] for d in demands["items"]]
            await page.screenshot(path=str(ARTIFACTS / "journey-demands.png"), full_page=True)
        finally:
            await browser.close()
