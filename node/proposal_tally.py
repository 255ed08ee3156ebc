"""A proposal's count at close: the signed `Tally`, a local decision, and the list of
demands read back from the signed tallies.

Theory of operation (ARCHITECTURE "A regional decision", docs/protocol.md §7–8, §10.5).
Closing, inside the caller's transaction: keep each current member's last ballot,
count them with protocol/counting.py, fold the roster from the chain, and append the
signed `Tally`; a local proposal is decided at once by that tally, a regional one waits
for the region's decision. A region counts no ballots of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from node import chain_store, nested_store, proposal_store, regional_store
from node.identity import NodeIdentity
from node.ledger import Ledger
from node.proposal_forms import ProposalView
from node.proposal_lifecycle import next_status
from node.storage import Database, Row, Tx
from protocol import ballots, counting, multiwinner, nesting, roster
from protocol import tally as protocol_tally

log = logging.getLogger("convene.proposals")


async def close_in(
    tx: Tx,
    ledger: Ledger,
    identity: NodeIdentity,
    row: Row,
    spec: ballots.ProposalSpec,
) -> None:
    """Close the proposal in `row` within `tx`: count, sign the Tally, decide if local."""
    proposal_id = row["id"]
    status = next_status(proposal_id, row["status"], "close")
    if spec.scope == "regional" and row["origin"] is None:
        # A region counts no ballots of its own: node/regional.py decides from the
        # chapters' signed tallies.
        await proposal_store.update_proposal(tx, proposal_id, {"status": status})
        return
    last = await proposal_store.last_ballots(tx, proposal_id)
    await proposal_store.mark_counted(tx, (b["id"] for b in last))
    typed = [ballots.validate_ballot(spec, msgspec.json.decode(b["ballot"])) for b in last]
    entries = [
        msgspec.json.decode(blob) for blob in await chain_store.entries_in(tx, ("RosterChange",))
    ]
    members_now = roster.roster_at(entries)
    roster_size, roster_hex = roster.roster_root(members_now)
    counts = counting.count(spec, typed, eligible=roster_size)
    result = counting.outcome(spec, counts, len(typed), roster_size)
    size, ballots_hex = ballots.ballots_root(b["receipt"] for b in last)
    question_digest = row["question_digest"] or await chain_store.digest_at(tx, row["question_seq"])
    tally = protocol_tally.Tally(
        chapter=identity.actor,
        proposal=row["object_id"],
        proposal_digest=question_digest,
        method=spec.method,
        counts=counts,
        cast=len(typed),
        eligible=roster_size,
        ballots_root=ballots_hex,
        ballots_size=size,
        roster_root=roster_hex,
        roster_size=roster_size,
        outcome=result,
    )
    body = {"type": "Tally", **protocol_tally.tally_body(tally)}
    tally_entry = await ledger.append_in(tx, body)
    fields: dict[str, Any] = {
        "status": status,
        "tally": msgspec.json.encode(tally_entry.entry).decode(),
        "tally_seq": tally_entry.seq,
    }
    if spec.scope == "local" and row["origin"] is None:
        # A local proposal is decided by its own signed tally: the Tally entry
        # carries the outcome, so no second entry restates it (Decision entries
        # are the regional aggregation's, protocol.md §8.5).
        decision = {
            "outcome": msgspec.to_builtins(result),
            "tally": tally_entry.entry["id"],
            "tally_digest": tally_entry.digest,
        }
        fields |= {
            "status": next_status(proposal_id, status, "decide"),
            "decision": msgspec.json.encode(decision).decode(),
        }
    await proposal_store.update_proposal(tx, proposal_id, fields)
    log.info("closed proposal=%s cast=%d eligible=%d", proposal_id, len(typed), roster_size)


async def demands(
    db: Database, row: Row, spec: ballots.ProposalSpec, view: ProposalView
) -> multiwinner.DemandList | None:
    """The list of demands, from the same signed tallies as the decision (§10.5)."""
    if view.seats is None or view.object_id is None:
        return None
    if spec.scope == "local":
        if row["tally"] is None:
            return None
        tally = protocol_tally.parse_tally(msgspec.json.decode(row["tally"]))
        return multiwinner.rank_demands(spec, view.seats, tally.counts, tally.cast, tally.eligible)
    if view.status != "decided":
        return None  # a chapter's own tally is not the region's list
    q = await regional_store.question(db, view.object_id)
    if q is None:
        return None
    # The inputs and spec node/regional.py decides by (§10.6): at a lower level, the
    # level's chapters; above one, each lower region's decision as its upward tally.
    upper = ballots.parse_spec(q.entry)
    spec = upper if q.level is None else nesting.level_spec(upper, q.level)
    held = await regional_store.tallies(db, q.object_id)
    pairs = [(t.digest, protocol_tally.parse_tally(t.entry)) for t in held]
    if q.level is None:
        lower = await nested_store.held(db, q.object_id, "lower")
        pairs += [nesting.upward_input(upper, h.entry) for h in lower]
    return multiwinner.regional_demands(
        spec, view.seats, pairs, proposal=q.object_id, proposal_digest=q.digest
    )
