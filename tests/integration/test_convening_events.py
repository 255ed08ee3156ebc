"""A regional convening between real `convene serve` processes on loopback: a region
and two chapters (Alder, Birch), each with its own SQLite file. The region runs a time
poll, schedules the convening from it, every chapter holds the signed Event, members
answer on their own chapter, each chapter signs its attendance, and the region shows
per-chapter and total attendance against capacity. A forged count is refused by the
inbox; a misaddressed one is rejected and named with its actor and seq. The tests run
in order on one cluster."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from regionkit import post_answered, sign_next, stored_anywhere

from node.clock import rfc3339
from node.demo import Cluster, Node, wait_until
from protocol.events import RsvpCounts, attendance_body

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLOSES_IN = 4  # seconds the time poll stays open: time for two chapters to vote
SLOT_A = "2030-06-06T17:00:00Z/2030-06-06T20:00:00Z"
SLOT_B = "2030-06-07T10:00:00Z/2030-06-07T13:00:00Z"
SEEN: dict[str, Any] = {}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("convening")
    async with Cluster(root, ["Alder", "Birch"], grace_s=10) as c:
        await c.create(members_per_chapter=2, start=True)
        await c.join()
        yield c


def chapter(c: Cluster, name: str) -> Node:
    return next(n for n in c.chapters if n.name == name)


async def event_on(c: Cluster, node: Node, event_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        status, view = await c.call("GET", node, f"/api/events/{event_id}")
        return dict(view) if status == 200 else None

    return await wait_until(f"{node.name} to hold {event_id}", probe, timeout=30)


async def test_a_time_poll_closes_into_a_convening_every_chapter_holds(cluster: Cluster) -> None:
    poll = await cluster.propose(
        CLOSES_IN, title="When do we meet?", method="approval", options=[SLOT_A, SLOT_B]
    )
    local = {ch.name: await cluster.adopted(ch, poll["object_id"]) for ch in cluster.chapters}
    # Alder: both can do B, one also A; Birch: one A, one B. B has 3, A has 2.
    picks = {"Alder": [[SLOT_A, SLOT_B], [SLOT_B]], "Birch": [[SLOT_A], [SLOT_B]]}
    for name, ballots in picks.items():
        await cluster.vote(chapter(cluster, name), local[name], [{"choices": b} for b in ballots])
    await cluster.settled(cluster.region, poll["id"])

    body = {"name": "Regional convening", "from_poll": poll["id"], "location": "Union hall"}
    status, ev = await cluster.call("POST", cluster.region, "/api/events", {**body, "capacity": 3})
    assert status == 201, ev
    assert (ev["start"], ev["end"]) == tuple(SLOT_B.split("/"))
    assert set(ev["chapters"]) == {ch.actor for ch in cluster.chapters}
    assert ev["can_report"] is False  # the region counts no members of its own
    for ch in cluster.chapters:
        held = await event_on(cluster, ch, ev["id"])  # the same id on every node
        assert (held["digest"], held["host"]) == (ev["digest"], cluster.region.actor)
        assert held["can_report"] is True and held["start"] == ev["start"]
    SEEN["event"] = ev


async def test_chapters_sign_attendance_and_the_region_sums_it(cluster: Cluster) -> None:
    ev = SEEN["event"]
    answers = {"Alder": ["going", "going"], "Birch": ["going", "maybe"]}
    for name, said in answers.items():
        ch = chapter(cluster, name)
        for member, answer in zip(ch.members, said, strict=True):
            path = f"/api/events/{ev['id']}/rsvp"
            status, view = await cluster.call("POST", ch, path, {"answer": answer}, member["token"])
            assert status == 200, view
        status, signed = await cluster.call("POST", ch, f"/api/events/{ev['id']}/attendance")
        assert status == 201, signed
        status, again = await cluster.call("POST", ch, f"/api/events/{ev['id']}/attendance")
        assert status == 409 and again["error"] == "already_reported"

    async def summed(node: Node) -> dict[str, Any] | None:
        _, view = await cluster.call("GET", node, f"/api/events/{ev['id']}")
        rows = view["attendance"]["chapters"]
        return dict(view) if all(r["entry"] for r in rows) else None

    region = await wait_until("the region to hold both counts", lambda: summed(cluster.region))
    total = region["attendance"]
    by_chapter = {r["chapter"]: r for r in total["chapters"]}
    alder, birch = chapter(cluster, "Alder"), chapter(cluster, "Birch")
    assert (by_chapter[alder.actor]["going"], by_chapter[alder.actor]["maybe"]) == (2, 0)
    assert (by_chapter[birch.actor]["going"], by_chapter[birch.actor]["maybe"]) == (1, 1)
    assert by_chapter[alder.actor]["members"] == 3  # organizer and two members
    assert (total["going"], total["maybe"], total["members"]) == (3, 1, 6)
    assert (total["capacity"], total["remaining"], total["over_capacity"]) == (3, 0, False)
    assert region["rejected"] == []
    # each chapter holds the other's count too, and sums it alike
    for ch in cluster.chapters:

        async def on_chapter(n: Node = ch) -> dict[str, Any] | None:
            return await summed(n)

        seen = await wait_until(f"{ch.name} to hold both counts", on_chapter)
        assert seen["attendance"] == total


async def test_a_forged_count_is_refused_and_a_misaddressed_one_named(cluster: Cluster) -> None:
    ev = SEEN["event"]
    alder, birch = chapter(cluster, "Alder"), chapter(cluster, "Birch")
    # A convening for Alder alone; Birch, a follower, holds it too but is not invited.
    body = {
        "name": "Alder's working group",
        "start": "2030-07-01T18:00:00Z",
        "end": "2030-07-01T19:00:00Z",
        "url": "https://meet.example/alder",
        "chapters": [alder.actor],
    }
    status, small = await cluster.call("POST", cluster.region, "/api/events", body)
    assert status == 201, small
    held = await event_on(cluster, birch, small["id"])
    assert held["can_report"] is False
    status, refused = await cluster.call("POST", birch, f"/api/events/{small['id']}/attendance")
    assert status == 409 and refused["error"] == "not_invited"

    count = attendance_body(small["object_id"], small["digest"], RsvpCounts(going=2), members=3)
    entry = sign_next(birch, count, rfc3339(time.time()))
    forged = {**entry, "going": 3}  # changed after Birch's key signed it
    status, answer = await post_answered(birch, cluster.region, forged)
    assert status in (400, 401), answer
    assert stored_anywhere(cluster.region, forged) == []
    # the honest signature over a count for an event that did not invite Birch
    status, answer = await post_answered(birch, cluster.region, entry)
    assert status < 300, answer

    async def named() -> list[dict[str, Any]] | None:
        _, view = await cluster.call("GET", cluster.region, f"/api/events/{small['id']}")
        return list(view["rejected"]) if len(view["rejected"]) == 2 else None

    # Both are named under the event: the forged one from the inbox's refusal log
    # (stored nowhere else), the misaddressed one from the event's own checks.
    rejected = await wait_until("the region to name both counts", named)
    assert sorted((r["code"], r["actor"], r["seq"]) for r in rejected) == [
        ("forged", birch.actor, entry["seq"]),
        ("not_invited", birch.actor, entry["seq"]),
    ]
    _, view = await cluster.call("GET", cluster.region, f"/api/events/{small['id']}")
    assert [r["entry"] for r in view["attendance"]["chapters"]] == [None]  # nothing counted
    _, big = await cluster.call("GET", cluster.region, f"/api/events/{ev['id']}")
    assert big["attendance"]["going"] == 3 and big["rejected"] == []
