"""Partner facilitation: grants, revocations and facilitators' requests
(docs/protocol.md §10.7).

Theory of operation
-------------------
A region stays the only author of its chain. It hands the facilitator role to an actor
on another node with a ``FacilitatorGrant`` entry and takes it back with a
``FacilitatorRevoke`` entry naming the grant's digest. The facilitator signs a
``FacilitationRequest`` entry in *its own* chain (``region``, ``grant``, ``action``,
``body``); the region carries it out and the entry it appends for it (a ``Question``
for ``propose``) carries ``requested_by`` = the request entry's digest.

Seqs of two chains cannot be compared, so whether a grant was in force is always
judged on the region's chain: a grant is in force *at region seq s* when its entry's
seq is below s and no revocation of it has a seq below s. An auditor holding the
region's chain and the facilitators' requests re-checks every ``requested_by`` with
``check_requested``: the request exists, was addressed to this region, was signed by
the grant's facilitator, its grant was in force at the citing entry's seq, the entry
is what the request asked for, and no request was carried out twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.events import ConveningError, Source, read_body, source

__all__ = [
    "ACTIONS",
    "GRANT_TYPE",
    "REQUESTED_BY",
    "REQUEST_TYPE",
    "REVOKE_TYPE",
    "Carried",
    "FacilitationError",
    "Grant",
    "GrantState",
    "Request",
    "Revoke",
    "check_request",
    "check_requested",
    "grant_body",
    "grants",
    "in_force",
    "parse_grant",
    "parse_request",
    "parse_revoke",
    "request_body",
    "revoke_body",
]

GRANT_TYPE: Final = "FacilitatorGrant"
REVOKE_TYPE: Final = "FacilitatorRevoke"
REQUEST_TYPE: Final = "FacilitationRequest"
REQUESTED_BY: Final = "requested_by"
ACTIONS: Final = ("propose", "close")
MAX_CONVENING: Final = 500
_HEX64: Final = r"^[0-9a-f]{64}$"
_ACTOR: Final = r"^https?://[^\s]+$"

Digest = Annotated[str, msgspec.Meta(pattern=_HEX64)]
ActorId = Annotated[str, msgspec.Meta(pattern=_ACTOR, max_length=2000)]
Action = Literal["propose", "close"]


class FacilitationError(ConveningError):
    """A grant, revocation or request is malformed or not backed by a grant in force.
    ``code`` says which: ``malformed``, ``misaddressed``, ``not_granted``, ``revoked``,
    ``unknown_grant``, ``unknown_request``, ``replayed``, ``not_as_requested``."""

    code = "bad_facilitation"


class Grant(msgspec.Struct, frozen=True):
    facilitator: ActorId
    convening: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONVENING)] | None = None


class Revoke(msgspec.Struct, frozen=True):
    grant: Digest


class Request(msgspec.Struct, frozen=True):
    region: ActorId
    grant: Digest
    action: Action
    body: dict[str, Any]


class GrantState(msgspec.Struct, frozen=True):
    """One grant as the region's chain holds it: its entry digest and seq, for whom,
    and the seq of its first revocation (None while in force)."""

    grant: str
    seq: int
    facilitator: str
    convening: str | None
    revoked_seq: int | None = None


class Carried(msgspec.Struct, frozen=True):
    """A region entry that carried out a request: where, which request, by whom."""

    seq: int
    request: str
    facilitator: str
    action: str


def _read(entry: Mapping[str, Any], shape: type[Any], type_name: str) -> tuple[Source, Any]:
    try:
        return read_body(entry, shape, type_name)
    except ConveningError as exc:
        raise FacilitationError(
            exc.detail, actor=exc.actor, seq=exc.seq, code="malformed"
        ) from None


def _check_action(req: Request, actor: str | None, seq: int | None) -> Request:
    # The region applies its own proposal rules to a `propose` body; here only the
    # shape every node and the audit can judge without them.
    if req.action == "close" and (
        set(req.body) != {"proposal"} or not isinstance(req.body.get("proposal"), str)
    ):
        raise FacilitationError(
            "a close request's body is exactly {'proposal': the Question entry id}",
            actor=actor,
            seq=seq,
            code="malformed",
        )
    if req.action == "propose" and not isinstance(req.body.get("title"), str):
        raise FacilitationError(
            "a propose request's body is a proposal (POST /api/proposals) with a 'title'",
            actor=actor,
            seq=seq,
            code="malformed",
        )
    return req


def grant_body(facilitator: str, convening: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": GRANT_TYPE, "facilitator": facilitator}
    if convening is not None:
        raw["convening"] = convening
    try:
        msgspec.convert(raw, Grant, strict=True)
    except msgspec.ValidationError as exc:
        raise FacilitationError(f"{GRANT_TYPE} is malformed: {exc}", code="malformed") from None
    return raw


def revoke_body(grant: str) -> dict[str, Any]:
    raw = {"type": REVOKE_TYPE, "grant": grant}
    try:
        msgspec.convert(raw, Revoke, strict=True)
    except msgspec.ValidationError as exc:
        raise FacilitationError(f"{REVOKE_TYPE} is malformed: {exc}", code="malformed") from None
    return raw


def request_body(region: str, grant: str, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": REQUEST_TYPE, "region": region, "grant": grant}
    raw |= {"action": action, "body": dict(body)}
    try:
        _check_action(msgspec.convert(raw, Request, strict=True), None, None)
    except msgspec.ValidationError as exc:
        raise FacilitationError(f"{REQUEST_TYPE} is malformed: {exc}", code="malformed") from None
    return raw


def parse_grant(entry: Mapping[str, Any]) -> tuple[Source, Grant]:
    where, grant = _read(entry, Grant, GRANT_TYPE)
    if grant.facilitator == where.actor:
        raise FacilitationError(
            "a region cannot grant the facilitator role to itself",
            actor=where.actor,
            seq=where.seq,
            code="malformed",
        )
    return where, grant


def parse_revoke(entry: Mapping[str, Any]) -> tuple[Source, Revoke]:
    where, revoke = _read(entry, Revoke, REVOKE_TYPE)
    return where, revoke


def parse_request(entry: Mapping[str, Any]) -> tuple[Source, Request]:
    where, req = _read(entry, Request, REQUEST_TYPE)
    return where, _check_action(req, where.actor, where.seq)


def grants(region_entries: Iterable[Mapping[str, Any]]) -> dict[str, GrantState]:
    """The grants of one region's (verified) chain entries, by grant digest, each with
    its first revocation. Other entry types are skipped. Refused: entries of more than
    one actor, and a revocation of a grant not granted at a lower seq."""
    out: dict[str, GrantState] = {}
    revokes: list[tuple[Source, Revoke]] = []
    region: str | None = None
    for entry in region_entries:
        kind = entry.get("type")
        if kind not in (GRANT_TYPE, REVOKE_TYPE):
            continue
        where = source(entry)
        if region is not None and where.actor != region:
            raise FacilitationError(
                f"grants of one region are read from its own chain, not also from {region}",
                actor=where.actor,
                seq=where.seq,
                code="malformed",
            )
        region = where.actor
        if kind == GRANT_TYPE:
            _, g = parse_grant(entry)
            out[where.digest] = GrantState(where.digest, where.seq, g.facilitator, g.convening)
        else:
            revokes.append(parse_revoke(entry))
    for where, r in sorted(revokes, key=lambda pair: pair[0].seq):
        held = out.get(r.grant)
        if held is None or held.seq >= where.seq:
            raise FacilitationError(
                f"revokes grant {r.grant}, which is not an earlier grant of this chain",
                actor=where.actor,
                seq=where.seq,
                code="unknown_grant",
            )
        if held.revoked_seq is None:
            out[r.grant] = msgspec.structs.replace(held, revoked_seq=where.seq)
    return out


def in_force(states: Mapping[str, GrantState], facilitator: str, at_seq: int) -> list[GrantState]:
    """The grants held by ``facilitator`` at region seq ``at_seq``, oldest first."""
    return sorted(
        (
            g
            for g in states.values()
            if g.facilitator == facilitator
            and g.seq < at_seq
            and (g.revoked_seq is None or g.revoked_seq >= at_seq)
        ),
        key=lambda g: g.seq,
    )


def check_request(
    states: Mapping[str, GrantState], entry: Mapping[str, Any], *, region: str, at_seq: int
) -> tuple[Source, Request]:
    """A (verified) request entry that ``region`` may carry out at its seq ``at_seq``:
    addressed to it, naming a grant of its chain for the request's own author, granted
    before ``at_seq`` and not revoked before it."""
    where, req = parse_request(entry)
    if req.region != region:
        raise FacilitationError(
            f"addressed to {req.region}, not to {region}",
            actor=where.actor,
            seq=where.seq,
            code="misaddressed",
        )
    held = states.get(req.grant)
    if held is None or held.seq >= at_seq:
        raise FacilitationError(
            f"names grant {req.grant}, which {region} has not granted",
            actor=where.actor,
            seq=where.seq,
            code="not_granted",
        )
    if held.facilitator != where.actor:
        raise FacilitationError(
            f"grant {req.grant} (seq {held.seq}) is for {held.facilitator}, not for this actor",
            actor=where.actor,
            seq=where.seq,
            code="not_granted",
        )
    if held.revoked_seq is not None and held.revoked_seq < at_seq:
        raise FacilitationError(
            f"grant {req.grant} was revoked at {region}'s seq {held.revoked_seq}",
            actor=where.actor,
            seq=where.seq,
            code="revoked",
        )
    return where, req


def _as_requested(entry: Mapping[str, Any], req: Request) -> str | None:
    """Why a region entry is not what the request asked for (None when it is)."""
    if req.action != "propose":
        return f"action {req.action!r} is carried out without a chain entry of its own"
    if entry.get("type") != "Question":
        return f"a propose request is carried out by a Question, not a {entry.get('type')!r:.40}"
    if entry.get("name") != req.body.get("title"):
        return "the Question's name is not the requested title"
    if entry.get("content", "") != req.body.get("body", ""):
        return "the Question's content is not the requested body"
    if "method" in req.body and entry.get("method") != req.body["method"]:
        return "the Question's method is not the requested method"
    if "options" in req.body and list(entry.get("options") or ()) != req.body["options"]:
        return "the Question's options are not the requested options"
    return None


def check_requested(
    region_entries: Iterable[Mapping[str, Any]], requests: Iterable[Mapping[str, Any]]
) -> list[Carried]:
    """Every entry of one region's chain that names ``requested_by``, checked against
    the (verified) request entries given: the request is there, the region could carry
    it out at that seq (``check_request``), the entry is what was asked, and no request
    was carried out twice. The carried requests in chain order; a FacilitationError
    naming the region entry otherwise."""
    chain = list(region_entries)
    states = grants(chain)
    by_digest = {source(r).digest: r for r in requests}
    done: dict[str, int] = {}
    out: list[Carried] = []
    for entry in sorted(chain, key=lambda e: int(e.get("seq", -1))):
        if REQUESTED_BY not in entry:
            continue
        where = source(entry)
        cited = entry[REQUESTED_BY]
        if not isinstance(cited, str) or re.fullmatch(_HEX64, cited) is None:
            raise FacilitationError(
                f"{REQUESTED_BY} must be a request entry's digest, got {cited!r:.80}",
                actor=where.actor,
                seq=where.seq,
                code="malformed",
            )
        request = by_digest.get(cited)
        if request is None:
            raise FacilitationError(
                f"cites request {cited}, which is not among the facilitators' requests",
                actor=where.actor,
                seq=where.seq,
                code="unknown_request",
            )
        try:
            asker, req = check_request(states, request, region=where.actor, at_seq=where.seq)
        except FacilitationError as exc:
            raise FacilitationError(
                f"cites a request it could not carry out: {exc.describe()}",
                actor=where.actor,
                seq=where.seq,
                code=exc.code,
            ) from None
        if cited in done:
            raise FacilitationError(
                f"carries out request {cited} again (first at seq {done[cited]})",
                actor=where.actor,
                seq=where.seq,
                code="replayed",
            )
        why = _as_requested(entry, req)
        if why is not None:
            raise FacilitationError(
                f"{why} (request {cited})",
                actor=where.actor,
                seq=where.seq,
                code="not_as_requested",
            )
        done[cited] = where.seq
        out.append(Carried(where.seq, cited, asker.actor, req.action))
    return out
