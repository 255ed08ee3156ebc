"""Pages of convenings: the events list, an event (RSVP, attendance), the organizers'
forms to schedule an event (from fields or from a decided time poll) and to start a
time poll. No JavaScript needed; every write goes through node.events.Events (or the
proposals service), which checks the role again and signs in one transaction.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from node.errors import BadRequest
from node.events import EVENTS_KEY, Events, NewEvent
from node.federation_glue import actor_names
from node.proposal_forms import NewProposal
from node.web.page import Visit, page, read_form, redirect, render, services
from protocol.errors import ProtocolError
from protocol.timepoll import parse_slot, slot_option

SLOT_ROWS = 4  # empty start/end rows the time poll form offers
ANSWERS = (("going", "Going"), ("maybe", "Maybe"), ("not going", "Not going"))


def _events(request: web.Request) -> Events:
    return request.app[EVENTS_KEY]


def _utc(text: str) -> str | None:
    """<input type=datetime-local> gives 'YYYY-MM-DDTHH:MM' (read as UTC); '' is None."""
    text = text.strip()
    if not text:
        return None
    return text + ":00Z" if len(text) == 16 else text


async def _time_polls(request: web.Request) -> list[Any]:
    """Decided approval proposals whose options are all slots."""
    polls = []
    for p in await services(request).proposals.all():
        if p.method != "approval" or p.status != "decided":
            continue
        try:
            for option in p.options:
                parse_slot(option)
        except ProtocolError:
            continue
        polls.append(p)
    return polls


@page
async def list_events(request: web.Request, visit: Visit) -> web.Response:
    visit.need_member()
    return render(request, visit, "events.html", {"events": await _events(request).all()})


@page
async def show_event(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    ev = await _events(request).view(request.match_info["id"], member)
    # names from the actor cache only: a page never fetches from other servers
    names = await actor_names(request.app, [ev["host"], *ev["invited"]])
    context = {"ev": ev, "answers": ANSWERS, "names": names}
    return render(request, visit, "event.html", context)


@page
async def rsvp(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    form = await read_form(request, visit, "answer an event")
    local_id = request.match_info["id"]
    await _events(request).rsvp(member, local_id, str(form.get("answer", "")))
    return redirect(f"/events/{local_id}")


@page
async def sign_attendance(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "signing the attendance count")
    await read_form(request, visit, "sign the attendance count")
    local_id = request.match_info["id"]
    await _events(request).sign_attendance(member, local_id)
    return redirect(f"/events/{local_id}")


@page
async def event_form(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "scheduling an event")
    polls = await _time_polls(request)
    chosen = request.query.get("poll", "")
    return render(request, visit, "event_new.html", {"polls": polls, "chosen": chosen})


@page
async def create_event(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "scheduling an event")
    form = await read_form(request, visit, "schedule an event")
    capacity = str(form.get("capacity", "")).strip()
    poll = str(form.get("poll", "")).strip()
    raw: dict[str, Any] = {
        "name": str(form.get("name", "")),
        "location": str(form.get("location", "")).strip() or None,
        "url": str(form.get("url", "")).strip() or None,
        "capacity": int(capacity) if capacity.isdigit() else None,
    }
    if capacity and not capacity.isdigit():
        raise BadRequest(f"capacity must be a whole number, not {capacity!r:.20}")
    if poll:
        raw["from_poll"] = poll
    else:
        raw["start"] = _utc(str(form.get("start", "")))
        raw["end"] = _utc(str(form.get("end", "")))
    try:
        new = msgspec.convert(raw, NewEvent)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"event: {exc}") from None
    view = await _events(request).create(member, new)
    return redirect(f"/events/{view['id']}")


@page
async def time_poll_form(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "starting a time poll")
    return render(request, visit, "event_timepoll.html", {"rows": range(SLOT_ROWS)})


@page
async def create_time_poll(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "starting a time poll")
    form = await read_form(request, visit, "start a time poll")
    slots = []
    for i in range(SLOT_ROWS):
        start, end = _utc(str(form.get(f"start-{i}", ""))), _utc(str(form.get(f"end-{i}", "")))
        if start is None and end is None:
            continue
        if start is None or end is None:
            raise BadRequest(f"slot {i + 1} needs both a start and an end")
        slots.append(slot_option(start, end))
    if not slots:
        raise BadRequest("a time poll needs at least one slot")
    regional = services(request).identity.kind == "region"
    new = NewProposal(
        title=str(form.get("title", "")),
        body=str(form.get("body", "")),
        method="approval",
        options=slots,
        closes_at=_utc(str(form.get("closes_at", ""))),
        scope="regional" if regional else "local",
    )
    view = await services(request).proposals.create(member, new)
    return redirect(f"/proposals/{view.id}")


def add_event_routes(app: web.Application) -> None:
    app.router.add_get("/events", list_events)
    app.router.add_get("/events/{id}", show_event)
    app.router.add_post("/events/{id}/rsvp", rsvp)
    app.router.add_post("/events/{id}/attendance", sign_attendance)
    app.router.add_get("/organize/events/new", event_form)
    app.router.add_post("/organize/events", create_event)
    app.router.add_get("/organize/timepolls/new", time_poll_form)
    app.router.add_post("/organize/timepolls", create_time_poll)
