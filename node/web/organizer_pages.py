"""Pages for organizers: the roster (invite, role, remove, new login link) and proposals.

Every write goes through the members or proposals service, which checks the role
again and writes the chain entry in the same transaction; the role check here only
decides what the page offers.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from node.errors import BadRequest
from node.members import ROLES
from node.proposal_forms import NewProposal
from node.web.page import Visit, page, read_form, redirect, render, services

METHODS = (
    ("consent", "Consent: agree / abstain / disagree / block"),
    ("choice", "Single choice: pick one option"),
    ("approval", "Approval: tick every option you accept"),
    ("ranked", "Ranked: put options in order of preference"),
    ("score", "Score: rate each option from 0 to 5"),
)


@page
async def roster(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "managing the roster")
    members = await services(request).members.all()
    return render(request, visit, "roster.html", {"members": members, "roles": ROLES})


@page
async def invite(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "inviting a member")
    form = await read_form(request, visit, "invite a member")
    role = str(form.get("role", "member"))
    if role == "admin":
        visit.need_role("admin", "inviting an admin")
    added = await services(request).members.add(str(form.get("name", "")), role)
    members = await services(request).members.all()
    context = {"members": members, "roles": ROLES, "link_for": added.member}
    return render(request, visit, "roster.html", context | {"login_url": added.login_url}, 201)


@page
async def new_link(request: web.Request, visit: Visit) -> web.Response:
    visit.need_role("organizer", "making a login link")
    await read_form(request, visit, "make a login link")
    members = services(request).members
    member = await members.get(request.match_info["member"])
    url = await members.login_link(member.id)
    context = {"members": await members.all(), "roles": ROLES, "link_for": member}
    return render(request, visit, "roster.html", context | {"login_url": url})


@page
async def change_role(request: web.Request, visit: Visit) -> web.Response:
    me = visit.need_role("organizer", "changing a role")
    form = await read_form(request, visit, "change a role")
    role = str(form.get("role", ""))
    if role == "admin" or me.id == request.match_info["member"]:
        visit.need_role("admin", "granting admin or changing your own role")
    await services(request).members.set_role(request.match_info["member"], role)
    return redirect("/organize/members")


@page
async def remove_member(request: web.Request, visit: Visit) -> web.Response:
    me = visit.need_role("organizer", "removing a member")
    await read_form(request, visit, "remove a member")
    member_id = request.match_info["member"]
    if member_id == me.id:
        raise BadRequest("you cannot remove yourself; ask another organizer")
    await services(request).members.remove(member_id)
    return redirect("/organize/members")


@page
async def proposal_form(request: web.Request, visit: Visit) -> web.Response:
    """The form; `?agenda_item=ID&title=T` prefills it to put an agenda item to a vote."""
    visit.need_role("organizer", "creating a proposal")
    query = request.rel_url.query
    form = {"title": query.get("title", "")[:300], "agenda_item": query.get("agenda_item", "")}
    region = services(request).identity.kind == "region"
    context = {"methods": METHODS, "form": form, "region": region}
    return render(request, visit, "new_proposal.html", context)


def _whole(form: Any, name: str, what: str) -> int | None:
    text = str(form.get(name) or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{what} must be a whole number, got {text[:40]!r}") from None


def _proposal_request(form: Any) -> NewProposal:
    options = [line.strip() for line in str(form.get("options", "")).splitlines() if line.strip()]
    method = str(form.get("method", ""))
    closes = str(form.get("closes_at", "")).strip()
    agenda_item = str(form.get("agenda_item") or "").strip() or None
    regional = form.get("regional") == "on" or agenda_item is not None
    if closes and len(closes) == 16:  # <input type=datetime-local> gives no seconds/zone
        closes += ":00Z"
    raw = {
        "title": str(form.get("title", "")),
        "body": str(form.get("body", "")),
        "method": method,
        "options": [] if method == "consent" else options,
        "threshold": str(form.get("threshold") or "1/2"),
        "quorum": str(form.get("quorum") or "0/1"),
        "closes_at": closes or None,
        "secret": form.get("secret") == "on",
        "draft": form.get("draft") == "on",
        "block_limit": _whole(form, "block_limit", "block limit") or 0,
        "scope": "regional" if regional else "local",
        "seats": _whole(form, "seats", "choose N"),  # refused on other methods, not dropped
        "agenda_item": agenda_item,
    }
    try:
        return msgspec.convert(raw, NewProposal)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"proposal: {exc}") from None


@page
async def create_proposal(request: web.Request, visit: Visit) -> web.Response:
    me = visit.need_role("organizer", "creating a proposal")
    form = await read_form(request, visit, "create a proposal")
    new = _proposal_request(form)
    view = await services(request).proposals.create(me, new)
    return redirect(f"/proposals/{view.id}")


@page
async def open_proposal(request: web.Request, visit: Visit) -> web.Response:
    me = visit.need_role("organizer", "opening a proposal")
    await read_form(request, visit, "open a proposal")
    view = await services(request).proposals.open(me, request.match_info["id"])
    return redirect(f"/proposals/{view.id}")


@page
async def close_proposal(request: web.Request, visit: Visit) -> web.Response:
    me = visit.need_role("organizer", "closing a proposal")
    await read_form(request, visit, "close a proposal")
    view = await services(request).proposals.close(me, request.match_info["id"])
    return redirect(f"/proposals/{view.id}/results")


def add_organizer_routes(app: web.Application) -> None:
    app.router.add_get("/organize/members", roster)
    app.router.add_post("/organize/members", invite)
    app.router.add_post("/organize/members/{member}/link", new_link)
    app.router.add_post("/organize/members/{member}/role", change_role)
    app.router.add_post("/organize/members/{member}/remove", remove_member)
    app.router.add_get("/organize/proposals/new", proposal_form)
    app.router.add_post("/organize/proposals", create_proposal)
    app.router.add_post("/proposals/{id}/open", open_proposal)
    app.router.add_post("/proposals/{id}/close", close_proposal)
