"""node/events.py through its JSON API and its inbox path: two real nodes served
in-process on loopback (real SQLite files). Alder hosts a local convening and runs a
local time poll; Birch is a second chapter whose crafted entries Alder must refuse,
each with its code, actor and seq."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from nodekit import call
from servekit import new_node, serving

from node.api import SERVICES_KEY
from node.regional import REGIONAL_KEY, Unready
from node.storage import Database
from protocol.events import RsvpCounts, attendance_body, event_body

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOT_A = "2030-03-01T17:00:00Z/2030-03-01T19:00:00Z"
SLOT_B = "2030-03-02T10:00:00Z/2030-03-02T12:00:00Z"


@dataclass
class Site:
    app: web.Application
    url: str
    data: Path
    organizer: str
    members: list[str]

    @property
    def actor(self) -> str:
        return str(self.app[SERVICES_KEY].identity.actor)


@dataclass
class Pair:
    http: aiohttp.ClientSession
    alder: Site
    birch: Site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    root = tmp_path_factory.mktemp("events")
    async with AsyncExitStack() as stack:
        sites = []
        for name in ("alder", "birch"):
            data = await new_node(root, name)
            app, url = await stack.enter_async_context(serving(data))
            members = app[SERVICES_KEY].members
            organizer = (await members.add(f"{name} organizer", "organizer")).token
            tokens = [(await members.add(f"{name} member {i}")).token for i in range(3)]
            sites.append(Site(app, url, data, organizer, tokens))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Pair(http, sites[0], sites[1])


async def api(
    p: Pair, site: Site, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    return await call(p.http, method, site.url + path, token or site.organizer, body)


async def decided_poll(p: Pair, ballots: list[list[str]]) -> str:
    """A local time poll over SLOT_A and SLOT_B, voted by Alder's members and closed."""
    body = {"title": "When?", "method": "approval", "options": [SLOT_A, SLOT_B]}
    status, poll = await api(p, p.alder, "POST", "/api/proposals", body)
    assert status == 201, poll
    for token, picks in zip(p.alder.members, ballots, strict=False):
        status, _ = await api(
            p, p.alder, "POST", f"/api/proposals/{poll['id']}/ballots", {"choices": picks}, token
        )
        assert status == 201
    status, closed = await api(p, p.alder, "POST", f"/api/proposals/{poll['id']}/close")
    assert status == 200 and closed["status"] == "decided", closed
    return str(poll["id"])


async def signed_by(site: Site, body: dict[str, Any]) -> dict[str, Any]:
    """`body` appended to the site's own chain, signed with its real key (an honest
    node never signs these; the chain must hold them for their proofs to resolve)."""
    appended = await site.app[SERVICES_KEY].ledger.append(body)
    return copy.deepcopy(appended.entry)


# --- the time poll closes into the event's time --------------------------------------------


async def test_an_event_from_a_decided_time_poll_takes_the_chosen_slot(pair: Pair) -> None:
    poll = await decided_poll(pair, [[SLOT_A, SLOT_B], [SLOT_B], [SLOT_A, SLOT_B]])
    body = {"name": "Spring convening", "from_poll": poll, "location": "Hall", "capacity": 2}
    status, ev = await api(pair, pair.alder, "POST", "/api/events", body)
    assert status == 201, ev
    assert (ev["start"], ev["end"]) == tuple(SLOT_B.split("/"))
    assert ev["poll"] == poll and ev["host"] == pair.alder.actor and ev["chapters"] == []
    assert ev["invited"] == [pair.alder.actor] and ev["can_report"] is True
    assert ev["id"] == "e-" + ev["digest"][:16]
    status, listed = await api(pair, pair.alder, "GET", "/api/events", token=pair.alder.members[0])
    assert status == 200 and [e["id"] for e in listed["items"]] == [ev["id"]]
    # the Event is a signed entry of Alder's chain
    (entry,) = await pair.alder.app[SERVICES_KEY].ledger.entries(ev["seq"], 1)
    assert entry["id"] == ev["object_id"] and entry["type"] == "Event" and "proof" in entry
    assert entry["maximumAttendeeCapacity"] == 2 and entry["location"]["name"] == "Hall"


async def test_a_tied_time_poll_is_a_409_naming_the_slots(pair: Pair) -> None:
    poll = await decided_poll(pair, [[SLOT_A], [SLOT_B]])
    status, body = await api(
        pair,
        pair.alder,
        "POST",
        "/api/events",
        {"name": "X", "from_poll": poll, "url": "https://x.example/"},
    )
    assert status == 409 and body["error"] == "tie", body
    assert SLOT_A in body["detail"] and SLOT_B in body["detail"]
    failed = await decided_poll(pair, [[]])
    status, body = await api(
        pair, pair.alder, "POST", "/api/events", {"name": "X", "from_poll": failed, "location": "Y"}
    )
    assert status == 409 and body["error"] == "failed", body


async def test_an_open_poll_or_a_plain_proposal_gives_no_date(pair: Pair) -> None:
    body = {"title": "Open", "method": "approval", "options": [SLOT_A, SLOT_B]}
    _, open_poll = await api(pair, pair.alder, "POST", "/api/proposals", body)
    status, answer = await api(
        pair,
        pair.alder,
        "POST",
        "/api/events",
        {"name": "X", "from_poll": open_poll["id"], "location": "Y"},
    )
    assert status == 409 and "open" in answer["detail"]
    plain = {"title": "Colour", "method": "approval", "options": ["red", "blue"]}
    _, p = await api(pair, pair.alder, "POST", "/api/proposals", plain)
    await api(pair, pair.alder, "POST", f"/api/proposals/{p['id']}/close")
    status, answer = await api(
        pair,
        pair.alder,
        "POST",
        "/api/events",
        {"name": "X", "from_poll": p["id"], "location": "Y"},
    )
    assert status == 400 and "START/END" in answer["detail"], answer
    status, answer = await api(
        pair,
        pair.alder,
        "POST",
        "/api/events",
        {"name": "X", "from_poll": "p-nope", "location": "Y"},
    )
    assert status == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (
            {
                "name": "X",
                "start": "2030-01-02T10:00:00Z",
                "end": "2030-01-02T09:00:00Z",
                "location": "Y",
            },
            400,
            "not after",
        ),
        (
            {"name": "X", "start": "2030-01-02T10:00:00Z", "end": "2030-01-02T11:00:00Z"},
            400,
            "location",
        ),
        (
            {
                "name": "X",
                "start": "2030-01-02T10:00:00",
                "end": "2030-01-02T11:00:00Z",
                "location": "Y",
            },
            400,
            "UTC offset",
        ),
        ({"name": "X", "location": "Y"}, 400, "start and end"),
        (
            {
                "name": "X",
                "start": "2030-01-02T10:00:00Z",
                "end": "2030-01-02T11:00:00Z",
                "location": "Y",
                "from_poll": "p-1",
            },
            400,
            "not both",
        ),
        (
            {
                "name": "X",
                "start": "2030-01-02T10:00:00Z",
                "end": "2030-01-02T11:00:00Z",
                "url": "ftp://x",
            },
            400,
            "http(s)",
        ),
        ({"name": "X", "colour": "red"}, 400, "colour"),
        (
            {
                "name": "X",
                "start": "2030-01-02T10:00:00Z",
                "end": "2030-01-02T11:00:00Z",
                "location": "Y",
                "capacity": 0,
            },
            400,
            ">= 1",
        ),
    ],
)
async def test_bad_event_requests_are_400_saying_why(
    pair: Pair, body: dict[str, Any], status: int, words: str
) -> None:
    code, answer = await api(pair, pair.alder, "POST", "/api/events", body)
    assert code == status and words in answer["detail"], answer


async def test_only_organizers_schedule_and_sign(pair: Pair) -> None:
    body = {
        "name": "X",
        "start": "2030-01-02T10:00:00+01:00",
        "end": "2030-01-02T11:00:00Z",
        "location": "Y",
    }
    member = pair.alder.members[0]
    status, answer = await api(pair, pair.alder, "POST", "/api/events", body, member)
    assert status == 403 and answer["error"] == "forbidden"
    status, ev = await api(pair, pair.alder, "POST", "/api/events", body)
    assert status == 201 and ev["start"] == "2030-01-02T09:00:00Z"  # normalized to UTC
    status, answer = await api(
        pair, pair.alder, "POST", f"/api/events/{ev['id']}/attendance", token=member
    )
    assert status == 403
    async with pair.http.get(pair.alder.url + "/api/events") as r:
        assert r.status == 401


# --- RSVPs and the signed count ---------------------------------------------------------------


async def test_rsvps_count_the_last_answer_and_the_count_is_signed_once(pair: Pair) -> None:
    _, listed = await api(pair, pair.alder, "GET", "/api/events")
    ev = next(e for e in listed["items"] if e["name"] == "Spring convening")
    path = f"/api/events/{ev['id']}"
    m0, m1, m2 = pair.alder.members
    for token, answer in [(m0, "maybe"), (m1, "going"), (m0, "going"), (m2, "not going")]:
        status, view = await api(
            pair, pair.alder, "POST", path + "/rsvp", {"answer": answer}, token
        )
        assert status == 200, view
    assert view["my_answer"] == "not going"
    assert view["answers"] == {"going": 2, "maybe": 0, "not_going": 1}
    status, bad = await api(pair, pair.alder, "POST", path + "/rsvp", {"answer": "yes"}, m0)
    assert status == 400 and "going" in bad["detail"]
    status, _ = await api(
        pair, pair.alder, "POST", "/api/events/e-0000/rsvp", {"answer": "going"}, m0
    )
    assert status == 404
    # an organizer answers too, then signs: 3 going of 2 places, on a roster of 4
    await api(pair, pair.alder, "POST", path + "/rsvp", {"answer": "going"})
    status, signed = await api(pair, pair.alder, "POST", path + "/attendance")
    assert status == 201, signed
    total = signed["attendance"]
    assert (total["going"], total["maybe"], total["not_going"], total["members"]) == (3, 0, 1, 4)
    assert (total["capacity"], total["remaining"], total["over_capacity"]) == (2, -1, True)
    (row,) = total["chapters"]
    assert row["chapter"] == pair.alder.actor and row["entry"] == signed["reported"]["digest"]
    status, again = await api(pair, pair.alder, "POST", path + "/attendance")
    assert status == 409 and again["error"] == "already_reported"
    assert f"seq {signed['reported']['seq']}" in again["detail"]
    status, late = await api(pair, pair.alder, "POST", path + "/rsvp", {"answer": "maybe"}, m2)
    assert status == 409 and late["error"] == "reported"


# --- entries from another node: each refusal named -------------------------------------------


async def alder_event(pair: Pair) -> dict[str, Any]:
    _, listed = await api(pair, pair.alder, "GET", "/api/events")
    ev = next(e for e in listed["items"] if e["name"] == "Spring convening")
    return dict(ev)


async def receive(site: Site, entry: dict[str, Any]) -> None:
    """The path an inbox-verified entry takes: Regional.receive → events' ingest."""
    await site.app[REGIONAL_KEY].receive(entry)


async def test_refused_attendance_is_kept_with_its_code_and_shown(pair: Pair) -> None:
    ev = await alder_event(pair)
    good = attendance_body(ev["object_id"], ev["digest"], RsvpCounts(going=1), members=4)
    cases = []
    not_invited = await signed_by(pair.birch, good)
    cases.append((not_invited, "not_invited"))
    other = await signed_by(pair.birch, {**good, "event_digest": "0" * 64})
    cases.append((other, "other_event"))
    too_many = await signed_by(pair.birch, {**good, "going": 9})
    cases.append((too_many, "bad_count"))
    forged = await signed_by(pair.birch, good)
    forged["going"] = 2  # changed after signing
    cases.append((forged, "forged"))
    unsigned = {k: v for k, v in (await signed_by(pair.birch, good)).items() if k != "proof"}
    cases.append((unsigned, "unsigned"))
    elsewhere = {**good, "event": "https://elsewhere.example/actor/entries/3"}
    stranger = await signed_by(pair.birch, elsewhere)
    cases.append((stranger, "unknown_event"))
    for entry, _ in cases:
        await receive(pair.alder, entry)
    status, view = await api(pair, pair.alder, "GET", f"/api/events/{ev['id']}")
    assert status == 200
    shown = {(r["code"], r["seq"]) for r in view["rejected"]}
    for entry, code in cases:
        if code == "unknown_event":
            continue  # it names no event held here, so it is listed under none
        assert (code, entry["seq"]) in shown, (code, view["rejected"])
    assert all(r["actor"] == pair.birch.actor for r in view["rejected"])
    # nothing of them counted: still Alder's own count alone
    assert [c["chapter"] for c in view["counts"]] == [pair.alder.actor]
    assert view["attendance"]["going"] == 3


async def test_an_event_from_a_node_not_followed_is_not_held(pair: Pair) -> None:
    body = event_body(
        "Birch's own", "2030-05-01T10:00:00Z", "2030-05-01T12:00:00Z", location="Park"
    )
    entry = await signed_by(pair.birch, body)
    await receive(pair.alder, entry)
    _, listed = await api(pair, pair.alder, "GET", "/api/events")
    assert entry["id"] not in [e["object_id"] for e in listed["items"]]
    db: Database = pair.alder.app[SERVICES_KEY].db
    row = await db.fetchone(
        "SELECT code, reason FROM regional_rejected WHERE actor = ? AND seq = ?",
        (pair.birch.actor, entry["seq"]),
    )
    assert row is not None and row["code"] == "not_followed", row


async def test_an_invited_chapter_counts_once_and_a_second_count_is_named(pair: Pair) -> None:
    body = {
        "name": "With Birch",
        "start": "2030-04-01T10:00:00Z",
        "end": "2030-04-01T12:00:00Z",
        "url": "https://meet.example/x",
        "chapters": [pair.birch.actor],
    }
    status, ev = await api(pair, pair.alder, "POST", "/api/events", body)
    assert status == 201 and ev["invited"] == [pair.birch.actor] and not ev["can_report"]
    status, answer = await api(pair, pair.alder, "POST", f"/api/events/{ev['id']}/attendance")
    assert status == 409 and answer["error"] == "not_invited"
    # Alder's members answer in their own chapter only when Alder reports
    rsvp = {"answer": "going"}
    token = pair.alder.members[0]
    status, answer = await api(
        pair, pair.alder, "POST", f"/api/events/{ev['id']}/rsvp", rsvp, token
    )
    assert status == 409 and answer["error"] == "not_invited"
    count = attendance_body(ev["object_id"], ev["digest"], RsvpCounts(going=2, maybe=1), members=4)
    first = await signed_by(pair.birch, count)
    second = await signed_by(pair.birch, {**count, "going": 3})
    for entry in (first, first, second):  # an identical copy is the same count
        await receive(pair.alder, entry)
    _, view = await api(pair, pair.alder, "GET", f"/api/events/{ev['id']}")
    (row,) = view["attendance"]["chapters"]
    assert (row["chapter"], row["going"], row["maybe"], row["members"]) == (
        pair.birch.actor,
        2,
        1,
        4,
    )
    assert [(r["code"], r["seq"]) for r in view["rejected"]] == [("duplicate_count", second["seq"])]
    assert f"seq {first['seq']}" in view["rejected"][0]["reason"]


async def test_a_count_for_an_event_not_arrived_yet_is_retried_later(pair: Pair) -> None:
    # Alder's own entry 999 does not exist yet: the inbox keeps the count and retries.
    early = f"{pair.alder.actor}/entries/999"
    count = attendance_body(early, "a" * 64, RsvpCounts(going=1), members=4)
    entry = await signed_by(pair.birch, count)
    with pytest.raises(Unready, match="has not arrived"):
        await receive(pair.alder, entry)
    db: Database = pair.alder.app[SERVICES_KEY].db
    for table, subject in (("event_attendance", "event"), ("regional_rejected", "proposal")):
        row = await db.fetchone(
            f"SELECT 1 FROM {table} WHERE seq = ? AND {subject} IS ?", (entry["seq"], early)
        )
        assert row is None, table
