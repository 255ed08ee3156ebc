"""The agenda's JSON API (docs/api.md "Agenda"): thin handlers over
node/agenda_service.py's `AgendaService`, which checks roles and places again."""

from __future__ import annotations

from aiohttp import web

from node.agenda_service import AGENDA_KEY, AgendaService
from node.api import authenticate, json_response, read_json


def _svc(request: web.Request) -> AgendaService:
    return request.app[AGENDA_KEY]


async def _create(request: web.Request) -> web.Response:
    member = await authenticate(request)
    return json_response(await _svc(request).create(member, await read_json(request)), 201)


async def _list(request: web.Request) -> web.Response:
    await authenticate(request)
    svc = _svc(request)
    return json_response({"items": await svc.all(), "rejected": await svc.refused()})


async def _get(request: web.Request) -> web.Response:
    await authenticate(request)
    return json_response(await _svc(request).view(request.match_info["config"]))


async def _submit(request: web.Request) -> web.Response:
    member = await authenticate(request)
    raw = await read_json(request)
    return json_response(await _svc(request).submit(member, request.match_info["config"], raw), 201)


async def _sponsor(request: web.Request) -> web.Response:
    member = await authenticate(request)
    m = request.match_info
    return json_response(await _svc(request).sponsor(member, m["config"], m["item"]), 201)


async def _close(request: web.Request) -> web.Response:
    member = await authenticate(request)
    return json_response(await _svc(request).close(member, request.match_info["config"]))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/agenda", _create)
    app.router.add_get("/api/agenda", _list)
    app.router.add_get("/api/agenda/{config}", _get)
    app.router.add_post("/api/agenda/{config}/items", _submit)
    app.router.add_post("/api/agenda/{config}/items/{item}/sponsor", _sponsor)
    app.router.add_post("/api/agenda/{config}/close", _close)
