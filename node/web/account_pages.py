"""Pages for a member's own account: logging in and out, the passphrase, and the
ballot keys on their devices (node/member_keys.py; docs/protocol.md §5.5, §7.5)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node import member_key_store
from node.api import authenticate, json_response, read_json
from node.errors import BadRequest, Unauthorized
from node.member_keys import MemberKeys
from node.members import Member
from node.proposal_forms import ProposalView
from node.web.page import Visit, page, read_form, redirect, render, services, switch_session

# -- logging in and out -------------------------------------------------------------


@page
async def login_form(request: web.Request, visit: Visit) -> web.Response:
    return render(request, visit, "login.html", {"name": ""})


@page
async def login_with_password(request: web.Request, visit: Visit) -> web.Response:
    form = await read_form(request, visit, "log in")
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    try:
        member = await services(request).members.check_password(name, password)
    except Unauthorized as exc:  # show the form again, name kept, with the reason
        return render(request, visit, "login.html", {"name": name, "error": exc.detail}, 401)
    switch_session(request, visit, member)
    return redirect("/")


@page
async def login_link_page(request: web.Request, visit: Visit) -> web.Response:
    # GET never spends the link: mail scanners and link previews fetch URLs too.
    return render(request, visit, "login_link.html", {"token": request.match_info["token"]})


@page
async def use_login_link(request: web.Request, visit: Visit) -> web.Response:
    await read_form(request, visit, "log in with a link")
    members = services(request).members
    session, db_cookie = await members.use_login_link(request.match_info["token"])
    # The pages keep their own signed cookie; the stored session is not needed.
    await members.end_session(db_cookie)
    switch_session(request, visit, session.member)
    return redirect("/account/passphrase?welcome=1")


@page
async def passphrase_form(request: web.Request, visit: Visit) -> web.Response:
    visit.need_member()
    welcome = request.query.get("welcome") == "1"
    return render(request, visit, "passphrase.html", {"welcome": welcome})


@page
async def set_passphrase(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    form = await read_form(request, visit, "set a passphrase")
    first, again = str(form.get("password", "")), str(form.get("again", ""))
    if first != again:
        raise BadRequest("the two passphrases are different; type the same one twice")
    await services(request).members.set_password(member.id, first)
    # to the home page, which makes this device's ballot key (device_key.html); a
    # redirect, so the key script's reload after registering never re-sends this form
    return redirect("/?passphrase=saved")


@page
async def logout(request: web.Request, visit: Visit) -> web.Response:
    await read_form(request, visit, "log out")
    switch_session(request, visit, None)
    return redirect("/login")


# -- members' own ballot keys ---------------------------------------------------------


def _member_keys(request: web.Request) -> MemberKeys:
    svc = services(request)
    return MemberKeys(svc.db, svc.ledger)


async def signing_context(
    request: web.Request, member: Member, p: ProposalView
) -> dict[str, Any] | None:
    """What member_keys.js needs to sign this member's ballot; None where ballots are
    not signed (secret votes, or nothing to vote on)."""
    if p.status != "open" or p.secret or not p.object_id:
        return None
    keys = await _member_keys(request).keys_of(member.id)
    last = await member_key_store.last_counter(services(request).db, p.id, member.id)
    return {
        "member": member.id,
        "proposal": p.object_id,
        "next_counter": (last or 0) + 1,
        "current": " ".join(k.key for k in keys if k.revoked_seq is None),
        "revoked": " ".join(k.key for k in keys if k.revoked_seq is not None),
    }


async def device_keys(request: web.Request, member: Member) -> dict[str, str]:
    """What member_keys.js needs to find or make this device's key (device_key.html):
    the member's current and revoked keys, space-separated."""
    keys = await _member_keys(request).keys_of(member.id)
    return {
        "current": " ".join(k.key for k in keys if k.revoked_seq is None),
        "revoked": " ".join(k.key for k in keys if k.revoked_seq is not None),
    }


@page
async def keys_page(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    keys = await _member_keys(request).keys_of(member.id)
    current = " ".join(k.key for k in keys if k.revoked_seq is None)
    revoked = " ".join(k.key for k in keys if k.revoked_seq is not None)
    context = {"keys": keys, "current": current, "revoked": revoked}
    return render(request, visit, "keys.html", context)


@page
async def register_key(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    form = await read_form(request, visit, "register a device key")
    key, label = str(form.get("key", "")), str(form.get("label", ""))
    await _member_keys(request).register(member, key, label)
    return redirect("/account/keys")


@page
async def revoke_key(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    form = await read_form(request, visit, "revoke a device key")
    await _member_keys(request).revoke(member, str(form.get("key", "")))
    return redirect("/account/keys")


async def api_keys(request: web.Request) -> web.Response:
    member = await authenticate(request)
    keys = await _member_keys(request).keys_of(member.id)
    return json_response({"items": [k.to_json() for k in keys]})


async def api_key_change(request: web.Request) -> web.Response:
    """POST /api/members/me/keys {key, label} registers; .../keys/revoke {key} revokes."""
    member = await authenticate(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("key"), str):
        raise BadRequest('the body must be a JSON object {"key": MULTIKEY, ...}')
    keys = _member_keys(request)
    if request.path.endswith("/revoke"):
        return json_response((await keys.revoke(member, body["key"])).to_json())
    label = body.get("label", "")
    added = await keys.register(member, body["key"], label if isinstance(label, str) else "")
    return json_response(added.to_json(), status=201)


def add_account_routes(app: web.Application) -> None:
    app.router.add_get("/account/keys", keys_page)
    app.router.add_post("/account/keys", register_key)
    app.router.add_post("/account/keys/revoke", revoke_key)
    app.router.add_get("/api/members/me/keys", api_keys)
    app.router.add_post("/api/members/me/keys", api_key_change)
    app.router.add_post("/api/members/me/keys/revoke", api_key_change)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_with_password)
    app.router.add_get("/login/{token}", login_link_page)
    app.router.add_post("/login/{token}", use_login_link)
    app.router.add_post("/logout", logout)
    app.router.add_get("/account/passphrase", passphrase_form)
    app.router.add_post("/account/passphrase", set_passphrase)
