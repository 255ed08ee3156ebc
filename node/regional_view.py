"""The read-only view of a regional proposal on one node: the signed Question's terms,
the tallies and decisions held, every rejection with its code and reason, this node's
computed decision and how it compares (docs/regional.md, docs/protocol.md §8.5, §10.6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from node import proposal_store, regional_store
from node.clock import rfc3339
from node.errors import NotFound

if TYPE_CHECKING:
    from node.regional import Regional  # which delegates its `status` here


async def status(regional: Regional, proposal_id: str) -> dict[str, Any]:
    """What this node holds about a regional proposal, for the API and the demo
    (`GET /api/proposals/{id}/regional`, docs/api.md)."""
    row = await proposal_store.get_proposal(regional.db, proposal_id)
    if row is None:
        raise NotFound(f"no proposal {proposal_id!r}")
    q = await regional_store.question(regional.db, row["object_id"] or "")
    if q is None:
        raise NotFound(f"proposal {proposal_id} is not a regional proposal")
    spec = regional.spec(q)
    tallies = await regional_store.tallies(regional.db, q.object_id)
    decisions = await regional_store.decisions(regional.db, q.object_id)
    rejected = [r.to_json() for r in await regional_store.rejections(regional.db, q.object_id)]
    # Entries the inbox refused (bad or missing proof) were never stored; their
    # metadata in the refusal log still names them here, as forged or unsigned.
    for r in await regional_store.refusals(regional.db, q.object_id):
        code = regional_store.shown_code(r.code)
        rejected.append(
            {"actor": r.actor, "seq": r.seq, "type": r.type, "code": code, "reason": r.reason}
        )
    return {
        "id": proposal_id,
        "object_id": q.object_id,
        "region": q.region,
        "chapters": list(spec.chapters),
        "rule": spec.rule,
        "tallies_due": None if q.due_ts is None else rfc3339(q.due_ts),
        "status": row["status"],
        "tallies": [
            {
                "chapter": t.actor,
                "seq": t.seq,
                "id": t.entry.get("id"),
                "digest": t.digest,
                "cast": t.entry.get("cast"),
                "eligible": t.entry.get("eligible"),
                "counts": t.entry.get("counts"),
                "outcome": t.entry.get("outcome"),
            }
            for t in tallies
        ],
        "rejected": rejected,
        "region_decisions": [
            {"id": d.entry.get("id"), "seq": d.seq, "digest": d.digest} for d in decisions
        ],
        "decision": msgspec.json.decode(row["decision"]) if row["decision"] else None,
        "verification": row["verification"],
        **({} if regional.nesting is None else await regional.nesting.view(q)),
    }
