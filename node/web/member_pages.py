"""Pages for members: logging in, home, a proposal and its ballot, results, receipts."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from aiohttp import web

from node import member_key_store
from node.api import authenticate, json_response, read_json
from node.errors import BadRequest, NodeError, Unauthorized
from node.federation_glue import actor_names
from node.member_keys import MemberKeys
from node.members import Member
from node.proposal_forms import ProposalView
from node.regional import REGIONAL_KEY
from node.web.ballot_form import ballot_from_form
from node.web.chart import tally_chart, turnout_chart
from node.web.page import (
    Visit,
    page,
    read_form,
    redirect,
    render,
    services,
    state,
    switch_session,
    time_left,
)
from protocol import ballots
from protocol.aggregate import Decision, parse_decision
from protocol.ballots import CONSENT_CHOICES
from protocol.errors import ProtocolError
from protocol.member_ballots import decode_signed_ballot
from protocol.tally import parse_tally

RECENT = 10


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


# -- home and proposals ---------------------------------------------------------------


def decided_at(p: ProposalView) -> str:
    """When counting happened: the signed tally's time (a vote may close early)."""
    if p.tally is not None and isinstance(p.tally.get("published"), str):
        return str(p.tally["published"])
    return p.closes_at or p.created_at


@page
async def home(request: web.Request, visit: Visit) -> web.StreamResponse:
    if visit.member is None:
        return render(request, visit, "welcome.html", {})
    items = await services(request).proposals.all()
    now = state(request).clock()
    open_ = [p for p in items if p.status == "open"]
    open_.sort(key=lambda p: p.closes_at or "9999")
    decided = sorted((p for p in items if p.status in ("closed", "decided")), key=decided_at)
    drafts = [p for p in items if p.status == "draft"] if visit.member.at_least("organizer") else []
    # the first login ends here (passphrase saved, or skipped): this device makes its
    # ballot key now, so the member's first ballot is already signed (device_key.html)
    saved = request.query.get("passphrase") == "saved"
    first = saved or request.query.get("first") == "1"
    return render(
        request,
        visit,
        "home.html",
        {
            "open": [(p, time_left(p.closes_at, now)) for p in open_],
            "decided": [(p, decided_at(p)) for p in reversed(decided)][:RECENT],
            "drafts": drafts,
            "saved": saved,
            # only right after the first login: the key script reloads the page once it
            # has registered a new key, which must not cut across what a member does next
            "device": await device_keys(request, visit.member) if first else None,
        },
    )


_CONSENT_MEANING = {
    "agree": "I support this proposal.",
    "abstain": "I stand aside: I will not stop it, and I do not take part in deciding.",
    "disagree": "I do not support it, but I will not stop the group going ahead.",
    "block": (
        "I believe this would seriously harm the group or break its principles. "
        "A block is a veto: if more blocks are cast than the proposal allows, it fails "
        "whatever the other votes are."
    ),
}


def described(method: str, ballot: dict[str, Any]) -> str:
    """A member's own ballot in words, as the page says it back to them."""
    if method in ("consent", "choice"):
        choice = str(ballot.get("choice", ""))
        return choice.capitalize() if method == "consent" else choice
    if method == "approval":
        return ", ".join(ballot.get("choices", [])) or "none of the options"
    if method == "ranked":
        return ", ".join(f"{n}. {o}" for n, o in enumerate(ballot.get("ranking", []), 1))
    scores = ballot.get("scores", {})
    return ", ".join(f"{o}: {n}" for o, n in scores.items()) or "no scores"


def prefill(method: str, ballot: dict[str, Any] | None) -> dict[str, Any]:
    """What the ballot form shows ticked, so changing a vote starts from the last one."""
    ballot = ballot or {}
    picked = ballot.get("choices", []) if method == "approval" else [ballot.get("choice")]
    ranks = {o: n for n, o in enumerate(ballot.get("ranking", []), 1)}
    return {"picked": [p for p in picked if p], "rank": ranks, "score": ballot.get("scores", {})}


@page
async def proposal_page(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    proposals = services(request).proposals
    proposal = await proposals.get(request.match_info["id"])
    # Keyed by the visitor's own member id: the page never shows anyone else's choice.
    mine = await proposals.my_ballot(member, proposal.id)
    now = state(request).clock()
    return render(
        request,
        visit,
        "proposal.html",
        {
            "p": proposal,
            "left": time_left(proposal.closes_at, now),
            "consent": [(c, _CONSENT_MEANING[c]) for c in CONSENT_CHOICES],
            # the view states it for consent (None otherwise), as the signed Question does
            "block_limit": proposal.block_limit,
            "mine": mine,
            "mine_text": described(proposal.method, mine.ballot) if mine else None,
            "prefill": prefill(proposal.method, mine.ballot if mine else None),
            "signing": await signing_context(request, member, proposal),
        },
    )


@page
async def cast_vote(request: web.Request, visit: Visit) -> web.Response:
    member = visit.need_member()
    proposals = services(request).proposals
    proposal = await proposals.get(request.match_info["id"])
    form = await read_form(request, visit, f"vote on {proposal.id}")
    signed = str(form.get("signed_ballot", "")).strip()  # set by member_keys.js (§7.5)
    if signed:
        raw: dict[str, Any] = msgspec.to_builtins(decode_signed_ballot(signed))
    else:
        raw = ballot_from_form(proposal.method, proposal.options, form)
    receipt = await proposals.cast(member, proposal.id, raw)
    return render(request, visit, "receipt.html", {"p": proposal, "receipt": receipt}, 201)


def _winners(outcome: dict[str, Any]) -> tuple[list[str], bool]:
    winner = outcome.get("winner")
    return ([winner] if winner else list(outcome.get("tied", []))), outcome.get("result") == "tie"


def demand_rows(p: ProposalView) -> dict[str, Any] | None:
    """The list of demands as the results page shows it: each place, whether it is
    shared (a tie said as a tie), the support in words, and what the list did with it."""
    d = p.demands
    if d is None:
        return None
    shared = Counter(item.place for item in d.items)
    rows = []
    for item in d.items:
        if item.mean is not None:
            num, den = (int(x) for x in item.mean.split("/"))
            support = f"mean {num / den:.2f} of 5 ({item.scored} scored, sum {item.support})"
        else:
            support = f"{item.support} approval{'s' if item.support != 1 else ''}"
        if item.adopted:
            status = "adopted"
        elif item.option in d.tied:
            status = "tied"
        else:
            status = "not adopted"
        rows.append(
            {"item": item, "tie": shared[item.place] > 1, "support": support, "status": status}
        )
    listed = {item.option for item in d.items}
    return {
        "d": d,
        "rows": rows,
        "unsupported": [o for o in p.options if o not in listed],
        "open_seats": d.seats - len(d.adopted),
        "tied_place": next((i.place for i in d.items if i.option in d.tied), None),
    }


def results_context(p: ProposalView) -> dict[str, Any]:
    """What the results page shows, read from the signed tally and decision entries.

    Both are decoded strictly by protocol/ (a malformed one is an error page, never a
    wrong chart). A regional decision (§8.5) brings the region's summed counts and the
    per-chapter breakdown; on a chapter the local tally is then this chapter's share,
    and a region node has no tally of its own.
    """
    context: dict[str, Any] = {"p": p, "chart": None, "regional": None, "outcome": {}}
    context["demands"] = demand_rows(p)
    decision = p.decision or {}
    tally = parse_tally(p.tally) if p.tally is not None else None
    if "chapters" in decision:
        regional = parse_decision(decision)
        winners, tie = _winners(msgspec.to_builtins(regional.outcome))
        context |= {
            "regional": regional,
            "outcome": msgspec.to_builtins(regional.outcome),
            "region_chart": tally_chart(p.method, p.options, regional.counts, winners, tie=tie),
            "region_turnout": turnout_chart(regional.cast, regional.eligible, p.quorum),
        }
    if tally is not None:
        own = msgspec.to_builtins(tally.outcome)
        winners, tie = _winners(own)
        context |= {
            "chart": tally_chart(p.method, p.options, tally.counts, winners, tie=tie),
            "turnout": turnout_chart(tally.cast, tally.eligible, p.quorum),
            "tally": tally,
            "entry": p.tally,
        }
        if context["regional"] is None:
            context["outcome"] = decision.get("outcome") or own
    list_of_demands = context.get("demands")
    if list_of_demands is not None:  # the chart marks the list's adopted demands
        adopted = list_of_demands["d"].adopted
        if context["regional"] is not None:
            counts = context["regional"].counts
            context["region_chart"] = tally_chart(
                p.method, p.options, counts, adopted, word="adopted"
            )
        elif tally is not None:
            context["chart"] = tally_chart(
                p.method, p.options, tally.counts, adopted, word="adopted"
            )
    return context


async def refused_tallies(request: web.Request, p: ProposalView) -> list[dict[str, Any]]:
    """Tallies this node refused for a regional proposal, with the code and reason."""
    regional = request.app.get(REGIONAL_KEY)
    if regional is None or p.scope != "regional" or p.object_id is None:
        return []
    try:
        status = await regional.status(p.id)
    except NodeError:
        return []
    return list(status.get("rejected", []))


async def chapter_rows(request: web.Request, regional: Decision) -> list[dict[str, Any]]:
    """The by-chapter table: each chapter by name, its actor id kept for auditors (a link
    only when it is a web address), and this node's own row marked."""
    svc = services(request)
    names = await actor_names(svc, (c.chapter for c in regional.chapters))
    return [
        {
            "c": c,
            "name": names[c.chapter],
            "href": c.chapter if c.chapter.startswith(("https://", "http://")) else None,
            "own": c.chapter == svc.identity.actor,
        }
        for c in regional.chapters
    ]


@page
async def results_page(request: web.Request, visit: Visit) -> web.Response:
    visit.need_member()
    proposal = await services(request).proposals.get(request.match_info["id"])
    context = results_context(proposal)
    context["refused"] = await refused_tallies(request, proposal)
    if context["regional"] is not None:
        context["chapter_rows"] = await chapter_rows(request, context["regional"])
    if not proposal.secret:  # open votes: how many ballots carry their member's signature
        db = services(request).db
        context["custody"] = await member_key_store.signed_counts(db, proposal.id)
    return render(request, visit, "results.html", context)


# -- check my ballot -------------------------------------------------------------------


@page
async def check_form(request: web.Request, visit: Visit) -> web.Response:
    visit.need_member()
    closed = [p for p in await services(request).proposals.all() if p.tally is not None]
    chosen = request.query.get("proposal", "")
    return render(request, visit, "check.html", {"closed": closed, "chosen": chosen})


@page
async def check_receipt(request: web.Request, visit: Visit) -> web.Response:
    visit.need_member()
    form = await read_form(request, visit, "check a receipt")
    proposals = services(request).proposals
    proposal = await proposals.get(str(form.get("proposal", "")))
    receipt = str(form.get("receipt", "")).strip().lower()
    if proposal.tally is None:
        raise BadRequest(f"proposal {proposal.id} has no tally yet; check after it closes")
    closed = [p for p in await proposals.all() if p.tally is not None]
    context: dict[str, Any] = {"closed": closed, "chosen": proposal.id, "p": proposal}
    context["receipt"] = receipt
    try:
        proof = await proposals.receipt_proof(proposal.id, receipt)
        # Verify against the root in the *signed tally*, not the root the proof names:
        # that is what ties this ballot to the published count.
        ballots.verify_receipt(receipt, proof, parse_tally(proposal.tally).ballots_root)
    except NodeError as exc:
        return render(request, visit, "check.html", context | {"failed": exc.detail}, exc.status)
    except ProtocolError as exc:
        return render(request, visit, "check.html", context | {"failed": exc.describe()}, 400)
    return render(request, visit, "check.html", context | {"verified": proof})


# -- members' own ballot keys (node/member_keys.py; docs/protocol.md §5.5, §7.5) -------


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


def add_member_routes(app: web.Application) -> None:
    app.router.add_get("/account/keys", keys_page)
    app.router.add_post("/account/keys", register_key)
    app.router.add_post("/account/keys/revoke", revoke_key)
    app.router.add_get("/api/members/me/keys", api_keys)
    app.router.add_post("/api/members/me/keys", api_key_change)
    app.router.add_post("/api/members/me/keys/revoke", api_key_change)
    app.router.add_get("/", home)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_with_password)
    app.router.add_get("/login/{token}", login_link_page)
    app.router.add_post("/login/{token}", use_login_link)
    app.router.add_post("/logout", logout)
    app.router.add_get("/account/passphrase", passphrase_form)
    app.router.add_post("/account/passphrase", set_passphrase)
    app.router.add_get("/proposals/{id}", proposal_page)
    app.router.add_post("/proposals/{id}/vote", cast_vote)
    app.router.add_get("/proposals/{id}/results", results_page)
    app.router.add_get("/check", check_form)
    app.router.add_post("/check", check_receipt)
