"""Pages for members: home, a proposal and its ballot; with them, the account and
results pages (node/web/account_pages.py, node/web/results_pages.py)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from node.proposal_forms import ProposalView
from node.web.account_pages import add_account_routes, device_keys, signing_context
from node.web.ballot_form import ballot_from_form
from node.web.page import Visit, page, read_form, render, services, state, time_left
from node.web.results_pages import add_results_routes
from protocol.ballots import CONSENT_CHOICES
from protocol.member_ballots import decode_signed_ballot

RECENT = 10


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


def add_member_routes(app: web.Application) -> None:
    add_account_routes(app)
    app.router.add_get("/", home)
    app.router.add_get("/proposals/{id}", proposal_page)
    app.router.add_post("/proposals/{id}/vote", cast_vote)
    add_results_routes(app)
