"""The organizers' region page: join or leave a region (chapter side), and see, approve
or reject the chapters that follow this node (region side; docs/protocol.md §9.4); and,
for nested regions (§10.6), each proposal's decisions across the levels: on an upper
region the lower regions' decisions it took (each recomputed from that region's
chapters' tallies) or refused, on a lower region whether the upper decision verified.
Actors are shown by name (from the actor cache, never fetched for a page).

Everything goes through federation's FollowService (`node.federation_glue.FOLLOW_KEY`),
the same one `/api/federation` and `convene join` use: it queues the Follow, Undo or
Accept durably in the same transaction as the state it records.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiosqlite
from aiohttp import web

from federation import follow_store
from federation.follow import FollowService
from node.errors import BadRequest
from node.federation_glue import FOLLOW_KEY, actor_names
from node.web.levels import levels, named_in
from node.web.page import Visit, page, read_form, redirect, render

MAX_REGION = 500


def _follow(request: web.Request) -> FollowService:
    return request.app[FOLLOW_KEY]


async def _status(service: FollowService) -> dict[str, Any]:
    async def read(conn: aiosqlite.Connection) -> dict[str, Any]:
        return {
            "following": await follow_store.following(conn),
            "pending": await follow_store.followers(conn, "pending"),
            "accepted": await follow_store.followers(conn, "accepted"),
        }

    return await service.host.write(read)


@page
async def region(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "managing the region")
    context = await _status(_follow(request))
    across = await levels(request.app)
    shown = [f.target for f in context["following"]]
    shown += [c.actor_id for c in (*context["pending"], *context["accepted"])]
    for p in across:
        shown += named_in(p)
    names = await actor_names(request.app, shown)
    return render(request, visit, "region.html", context | {"levels": across, "names": names})


def _field(form: Any, name: str, what: str) -> str:
    value = str(form.get(name, "")).strip()
    if not value or len(value) > MAX_REGION:
        raise BadRequest(f"{what} must be 1 to {MAX_REGION} characters")
    return value


@page
async def join(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "joining a region")
    form = await read_form(request, visit, "join a region")
    region_ref = _field(form, "region", "the region's address")
    await _follow(request).join(region_ref, nonce=secrets.token_hex(16))
    return redirect("/organize/region")


@page
async def leave(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "leaving a region")
    form = await read_form(request, visit, "leave a region")
    region_ref = _field(form, "region", "the region")
    await _follow(request).leave(region_ref, nonce=secrets.token_hex(16))
    return redirect("/organize/region")


@page
async def approve(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "approving a chapter")
    form = await read_form(request, visit, "approve a chapter")
    await _follow(request).approve(_field(form, "actor", "the chapter"))
    return redirect("/organize/region")


@page
async def reject(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "rejecting a chapter")
    form = await read_form(request, visit, "reject a chapter")
    actor = _field(form, "actor", "the chapter")
    await _follow(request).reject(actor, nonce=secrets.token_hex(16))
    return redirect("/organize/region")


def add_region_routes(app: web.Application) -> None:
    app.router.add_get("/organize/region", region)
    app.router.add_post("/organize/region/join", join)
    app.router.add_post("/organize/region/leave", leave)
    app.router.add_post("/organize/region/approve", approve)
    app.router.add_post("/organize/region/reject", reject)
