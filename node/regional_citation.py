"""A chapter's check of a regional Question that says a partner facilitator asked for it
(`requested_by`, docs/protocol.md §10.7).

Theory of operation
-------------------
A region may open a Question for a facilitator on another node only while that
facilitator holds a grant in force at the Question's seq of the region's chain. A
chapter judges this with the very rule the region and the audit use
(protocol/facilitation.py `check_requested`), over:

- the region's grant and revocation entries: those held here (delivered to followers,
  node/facilitation.py) together with those in the region's outbox when it answers,
  each verified by the key valid at its seq; a revocation still in transit to us is
  thus not missed;
- the cited request: held here if this node sent it, else found in the outbox of one
  of the region's facilitators, verified the same way.

A citation that does not hold is rejected with code `bad_citation`, naming the region
and the Question's seq; the Question is then never opened for members.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from federation.errors import FederationError
from node import facilitation_store
from protocol import facilitation as rule
from protocol.errors import ProtocolError

if TYPE_CHECKING:
    from node.regional import Regional

log = logging.getLogger("convene.regional")

BAD_CITATION = "bad_citation"


async def check_citation(regional: Regional, entry: dict[str, Any], region: str, seq: int) -> None:
    """Nothing when `entry` (a verified Question of `region` at `seq`) cites no request
    or cites one `region` could carry out there; `RejectedEntry` (`bad_citation`)
    otherwise."""
    from node.regional import RejectedEntry  # which imports this module

    if rule.REQUESTED_BY not in entry:
        return
    cited = entry[rule.REQUESTED_BY]
    grants = await _grant_entries(regional, region, seq)
    request = None
    if isinstance(cited, str):
        request = await _request(regional, cited, grants)
    try:
        rule.check_requested([*grants, entry], [] if request is None else [request])
    except ProtocolError as exc:
        raise RejectedEntry(BAD_CITATION, exc.detail, actor=region, seq=seq) from None


async def _grant_entries(regional: Regional, region: str, below: int) -> list[dict[str, Any]]:
    """`region`'s verified grant and revocation entries below seq `below`, by digest."""
    async with regional.db.write() as tx:
        held = await facilitation_store.own_entries(tx, region)
    found = {str(e.get("id")): e for e in held}
    try:
        chain = await regional.actors.chain(await regional.actors.get(region))
    except (FederationError, ProtocolError) as exc:
        log.info("citation check: %s's outbox is out of reach, held grants only: %s", region, exc)
        chain = []
    for e in chain:
        if (
            isinstance(e, dict)
            and e.get("type") in (rule.GRANT_TYPE, rule.REVOKE_TYPE)
            and str(e.get("id")) not in found
        ):
            found[str(e.get("id"))] = e
    out = []
    for e in found.values():
        seq = e.get("seq")
        if e.get("actor") != region or type(seq) is not int or seq >= below:
            continue
        if await _genuine(regional, e):
            out.append(e)
    return out


async def _request(
    regional: Regional, cited: str, grants: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The request entry of digest `cited`: held here, or in the outbox of one of the
    facilitators `grants` name; verified. None when nowhere to be found."""
    held = await facilitation_store.request(regional.db, cited)
    if held is not None:
        return held.entry
    facilitators = sorted(
        {str(e.get("facilitator")) for e in grants if e.get("type") == rule.GRANT_TYPE}
    )
    for actor_id in facilitators:
        try:
            chain = await regional.actors.chain(await regional.actors.get(actor_id))
        except (FederationError, ProtocolError) as exc:
            log.info("citation check: %s's outbox is out of reach: %s", actor_id, exc)
            continue
        for e in chain:
            if (
                isinstance(e, dict)
                and e.get("type") == rule.REQUEST_TYPE
                and e.get("actor") == actor_id
            ):
                try:
                    if rule.parse_request(e)[0].digest == cited and await _genuine(regional, e):
                        return e
                except ProtocolError:
                    continue
    return None


async def _genuine(regional: Regional, entry: dict[str, Any]) -> bool:
    from node.regional import RejectedEntry

    try:
        await regional.verified(entry)
    except RejectedEntry as exc:
        log.info("citation check: ignoring %s: %s", entry.get("id"), exc.detail)
        return False
    return True
