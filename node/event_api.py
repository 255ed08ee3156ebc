"""The events' JSON API (docs/api.md "Convenings: events"): thin handlers over
node/events.py's `Events`, which checks roles and invitations again."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from node.api import authenticate, json_response, read_body
from node.errors import BadRequest
from node.events import EVENTS_KEY, NewEvent
from node.members import require_role


class Rsvp(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    answer: str


def decode(data: bytes, shape: type[Any], what: str) -> Any:
    try:
        return msgspec.json.decode(data, type=shape)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


async def _create(request: web.Request) -> web.Response:
    member = await authenticate(request)
    require_role(member, "organizer", "scheduling an event")
    form = decode(await read_body(request), NewEvent, "event")
    return json_response(await request.app[EVENTS_KEY].create(member, form), status=201)


async def _list(request: web.Request) -> web.Response:
    await authenticate(request)
    return json_response({"items": await request.app[EVENTS_KEY].all()})


async def _get(request: web.Request) -> web.Response:
    member = await authenticate(request)
    return json_response(await request.app[EVENTS_KEY].view(request.match_info["id"], member))


async def _rsvp(request: web.Request) -> web.Response:
    member = await authenticate(request)
    body = decode(await read_body(request), Rsvp, "rsvp")
    view = await request.app[EVENTS_KEY].rsvp(member, request.match_info["id"], body.answer)
    return json_response(view)


async def _attendance(request: web.Request) -> web.Response:
    member = await authenticate(request)
    view = await request.app[EVENTS_KEY].sign_attendance(member, request.match_info["id"])
    return json_response(view, status=201)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/events", _create)
    app.router.add_get("/api/events", _list)
    app.router.add_get("/api/events/{id}", _get)
    app.router.add_post("/api/events/{id}/rsvp", _rsvp)
    app.router.add_post("/api/events/{id}/attendance", _attendance)
