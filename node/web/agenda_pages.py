"""Pages of the bottom-up agenda (docs/protocol.md §10.4): the agendas this node holds,
one agenda with its items by sponsors, and the forms that submit, sponsor and close.

Every write goes through node/agenda_service.py, which checks the role and the node's
place on the agenda again; the checks here only decide what the page offers. What the
page shows is the service's computed agenda, the same the API answers.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from node.agenda_service import AGENDA_KEY, AgendaService
from node.federation_glue import actor_names
from node.web.page import Visit, page, read_form, redirect, render


def _svc(request: web.Request) -> AgendaService:
    return request.app[AGENDA_KEY]


@page
async def agendas(request: web.Request, visit: Visit) -> web.Response:
    visit.need_member()
    svc = _svc(request)
    context = {"agendas": await svc.all(), "rejected": await svc.refused()}
    return render(request, visit, "agenda_list.html", context)


@page
async def create(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "opening an agenda")
    form = await read_form(request, visit, "open an agenda")
    chapters = [c.strip() for c in str(form.get("chapters", "")).splitlines() if c.strip()]
    raw: dict[str, object] = {
        "convening": str(form.get("convening", "")).strip(),
        "min_sponsors": _whole(str(form.get("min_sponsors", "1"))),
        "min_share": str(form.get("min_share", "0/1")).strip() or "0/1",
    }
    if chapters:
        raw["chapters"] = chapters
    view = await _svc(request).create(member, raw)
    return redirect(f"/agenda/{view['config']}")


def _whole(text: str) -> int | str:
    # a non-number is passed on as text, so the service names the field in its error
    return int(text) if text.strip().isdigit() else text


@page
async def agenda(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    view = await _svc(request).view(request.match_info["config"])
    me = _svc(request).actor
    organizer = member.at_least("organizer")
    for item in view["items"]:
        query = urlencode({"agenda_item": item["item"], "title": item["title"]})
        item["propose_url"] = f"/organize/proposals/new?{query}"
    shown = [view["region"], *view["chapters"], *(s for i in view["items"] for s in i["sponsors"])]
    context = {
        "a": view,
        "names": await actor_names(request.app, shown),
        "me_actor": me,
        "organizer": organizer,
        "listed": me in view["chapters"],
        "is_region": me == view["region"],
        "dropped": [i for i in view["items"] if i["status"] == "dropped"],
    }
    return render(request, visit, "agenda.html", context)


@page
async def submit(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "submitting an agenda item")
    form = await read_form(request, visit, "submit an agenda item")
    config = request.match_info["config"]
    raw = {"title": str(form.get("title", "")), "summary": str(form.get("summary", ""))}
    await _svc(request).submit(member, config, raw)
    return redirect(f"/agenda/{config}")


@page
async def sponsor(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "sponsoring an agenda item")
    await read_form(request, visit, "sponsor an agenda item")
    m = request.match_info
    await _svc(request).sponsor(member, m["config"], m["item"])
    return redirect(f"/agenda/{m['config']}")


@page
async def close(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_role("organizer", "closing an agenda")
    await read_form(request, visit, "close the agenda")
    config = request.match_info["config"]
    await _svc(request).close(member, config)
    return redirect(f"/agenda/{config}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/agenda", agendas)
    app.router.add_post("/agenda", create)
    app.router.add_get("/agenda/{config}", agenda)
    app.router.add_post("/agenda/{config}/items", submit)
    app.router.add_post("/agenda/{config}/items/{item}/sponsor", sponsor)
    app.router.add_post("/agenda/{config}/close", close)
