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
from node import regional_store
from node.errors import BadRequest, NotFound
from node.federation_glue import FOLLOW_KEY, actor_names
from node.regional import REGIONAL_KEY
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


async def _levels(request: web.Request) -> list[dict[str, Any]]:
    """The regional view (`GET /api/proposals/{id}/regional`) of every held proposal
    that spans levels: this node decides a level of it, or lower regions fed it."""
    regional = request.app.get(REGIONAL_KEY)
    if regional is None:
        return []
    out = []
    for q in await regional_store.questions(regional.db):
        row = await regional_store.proposal_by_object(regional.db, q.object_id)
        if row is None:
            continue
        try:
            view = await regional.status(row["id"])
        except NotFound:
            continue
        if view.get("level") is None and not view.get("lower_decisions"):
            continue
        refused = [r for r in view["rejected"] if r.get("type") in ("Decision", "Level")]
        out.append(
            {
                **view,
                "title": str(q.entry.get("name") or row["id"]),
                "upper": str(q.entry.get("actor")),
                "refused_lower": refused,
            }
        )
    return out


@page
async def region(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "managing the region")
    context = await _status(_follow(request))
    levels = await _levels(request)
    shown = [f.target for f in context["following"]]
    shown += [c.actor_id for c in (*context["pending"], *context["accepted"])]
    for p in levels:
        shown += [p["upper"], *(d["region"] for d in p["lower_decisions"])]
        shown += [str(r.get("actor")) for r in p["refused_lower"]]
    names = await actor_names(request.app, shown)
    return render(request, visit, "region.html", context | {"levels": levels, "names": names})


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
