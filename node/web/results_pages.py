"""Pages for what a vote counted: the results of a proposal (signed tally, regional
decision, list of demands) and checking one's own receipt against the signed tally."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from aiohttp import web

from node import member_key_store
from node.errors import BadRequest, NodeError
from node.federation_glue import actor_names
from node.proposal_forms import ProposalView
from node.regional import REGIONAL_KEY
from node.web.chart import tally_chart, turnout_chart
from node.web.levels import level_of, named_in
from node.web.page import Visit, page, read_form, render, services
from protocol import ballots
from protocol.aggregate import Decision, parse_decision
from protocol.errors import ProtocolError
from protocol.tally import parse_tally

# -- results ----------------------------------------------------------------------------


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
    names = await actor_names(request.app, (c.chapter for c in regional.chapters))
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
    if proposal.scope == "regional":  # a nested proposal: its other levels, by name
        level = await level_of(request.app, proposal.object_id)
        if level is not None:
            names = await actor_names(request.app, named_in(level))
            context |= {"level": level, "names": names}
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


def add_results_routes(app: web.Application) -> None:
    app.router.add_get("/proposals/{id}/results", results_page)
    app.router.add_get("/check", check_form)
    app.router.add_post("/check", check_receipt)
