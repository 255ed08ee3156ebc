"""The organizers' facilitation page (docs/protocol.md §10.7): on a region, grant and
revoke the facilitator role and see every request and what came of it; on a node that
holds a grant, make a request (a regional proposal) of that region.

Every write goes through node/facilitation.py's service, which checks the role again
and signs the chain entry; the role check here only decides what the page offers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from node.errors import BadRequest
from node.web.page import Visit, page, read_form, redirect, render

if TYPE_CHECKING:
    from node.facilitation import Facilitation

PATH = "/organize/facilitation"
METHODS = ("consent", "choice", "approval", "ranked", "score")

ServiceOf = Callable[[web.Request], "Facilitation"]


def _text(form: Any, name: str, limit: int = 20_000) -> str:
    value = str(form.get(name, "")).strip()
    if len(value) > limit:
        raise BadRequest(f"{name} takes at most {limit} characters")
    return value


def add_facilitation_routes(app: web.Application, service_of: ServiceOf) -> None:
    """Register the page and its three forms; `service_of` finds the service."""

    @page
    async def overview(request: web.Request, visit: Visit) -> web.Response:
        visit.need_role("organizer", "facilitation")
        context = await service_of(request).view()
        return render(request, visit, "facilitation.html", {**context, "methods": METHODS})

    @page
    async def grant(request: web.Request, visit: Visit) -> web.Response:
        member = visit.need_role("organizer", "granting the facilitator role")
        form = await read_form(request, visit, "grant the facilitator role")
        convening = _text(form, "convening", 500) or None
        await service_of(request).grant(member, _text(form, "actor", 2000), convening)
        return redirect(PATH)

    @page
    async def revoke(request: web.Request, visit: Visit) -> web.Response:
        member = visit.need_role("organizer", "revoking the facilitator role")
        form = await read_form(request, visit, "revoke the facilitator role")
        await service_of(request).revoke(member, _text(form, "grant", 64))
        return redirect(PATH)

    @page
    async def ask(request: web.Request, visit: Visit) -> web.Response:
        member = visit.need_role("organizer", "making a facilitation request")
        form = await read_form(request, visit, "make a facilitation request")
        body: dict[str, Any] = {
            "title": _text(form, "title", 300),
            "body": _text(form, "body"),
            "method": _text(form, "method", 20),
        }
        options = [line.strip() for line in _text(form, "options").splitlines() if line.strip()]
        if options:
            body["options"] = options
        closes_at = _text(form, "closes_at", 40)
        if closes_at:
            body["closes_at"] = closes_at
        region = _text(form, "region", 2000)
        await service_of(request).request(member, region, "propose", body)
        return redirect(PATH)

    app.router.add_get(PATH, overview)
    app.router.add_post(PATH + "/grant", grant)
    app.router.add_post(PATH + "/revoke", revoke)
    app.router.add_post(PATH + "/request", ask)
