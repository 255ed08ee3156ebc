"""A nested proposal's decisions across the levels (docs/protocol.md §10.6), as pages
show them: on an upper region the lower regions' decisions it took (each recomputed
from that region's chapters' tallies) or refused, on a lower region whether the upper
decision verified. Read from the regional view (`GET /api/proposals/{id}/regional`),
the one place that knows it; shared by the organizers' region page and the results
page."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from node import regional_store
from node.errors import NotFound
from node.regional import REGIONAL_KEY
from node.regional_store import Question


async def _level(app: web.Application, q: Question) -> dict[str, Any] | None:
    regional = app.get(REGIONAL_KEY)
    if regional is None:
        return None
    row = await regional_store.proposal_by_object(regional.db, q.object_id)
    if row is None:
        return None
    try:
        view = await regional.status(row["id"])
    except NotFound:
        return None
    if view.get("level") is None and not view.get("lower_decisions"):
        return None  # a one-level proposal
    refused = [r for r in view["rejected"] if r.get("type") in ("Decision", "Level")]
    return {
        **view,
        "title": str(q.entry.get("name") or row["id"]),
        "upper": str(q.entry.get("actor")),
        "refused_lower": refused,
    }


async def levels(app: web.Application) -> list[dict[str, Any]]:
    """Every held proposal that spans levels: this node decides a level of it, or
    lower regions fed it."""
    regional = app.get(REGIONAL_KEY)
    if regional is None:
        return []
    out = []
    for q in await regional_store.questions(regional.db):
        level = await _level(app, q)
        if level is not None:
            out.append(level)
    return out


async def level_of(app: web.Application, object_id: str | None) -> dict[str, Any] | None:
    """The levels of one proposal (by its Question's id), None for a one-level one."""
    regional = app.get(REGIONAL_KEY)
    if regional is None or object_id is None:
        return None
    q = await regional_store.question(regional.db, object_id)
    return None if q is None else await _level(app, q)


def named_in(level: dict[str, Any]) -> Iterable[str]:
    """The actors a level card names, for `actor_names`."""
    yield level["upper"]
    for d in level["lower_decisions"]:
        yield d["region"]
    for r in level["refused_lower"]:
        yield str(r.get("actor"))
