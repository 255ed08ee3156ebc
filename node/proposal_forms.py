"""The JSON shapes of proposals: the create request, the API view, the Question body.

The request is decoded strictly (an unknown field or a wrong type is a 400 naming it);
the voting rules inside it become a protocol `ProposalSpec`, validated by protocol/.
The Question is shaped as Mastodon polls are (ARCHITECTURE "Standards": `oneOf` /
`anyOf` of Notes with reply counts, `endTime`) plus the spec's own fields, plus the
proposal's *terms*: further signed fields other features put on it (`seats` of a list
of demands and `agenda_item`, docs/protocol.md §10.4–10.5; `requested_by`, ...). Terms
are stored with the proposal, merged into its Question, and read back from a region's
Question verbatim: every key that is not one of the Question's own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from node.errors import BadRequest
from node.storage import Row
from protocol import ballots, entries, multiwinner
from protocol.errors import ProtocolError

MAX_TITLE = 300
MAX_BODY = 20_000
MAX_TERMS_BYTES = 20_000
_ITEM_ID = re.compile(r"[0-9a-f]{64}")

# Keys of a Question entry that are the Question itself (envelope, spec, poll shape,
# regional deadline); any other key is a term (see the module comment).
QUESTION_FIELDS: Final = frozenset(
    {
        *entries.ENVELOPE_FIELDS,
        *ballots.SPEC_FIELDS,
        "name",
        "content",
        "url",
        "anyOf",
        "oneOf",
        "votersCount",
        "endTime",
        "closesAt",
        "closed",
        "tallies_due",
    }
)


class NewProposal(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    title: str
    body: str = ""
    method: str
    options: list[str] = msgspec.field(default_factory=list)
    threshold: str = "1/2"
    quorum: str = "0/1"
    closes_at: str | None = None
    secret: bool = False
    scope: str = "local"
    rule: str = "pooled"
    draft: bool = False
    block_limit: int = 0
    chapters: list[str] = msgspec.field(default_factory=list)
    seats: int | None = None
    agenda_item: str | None = None

    def terms(self, spec: ballots.ProposalSpec) -> dict[str, Any]:
        """The signed terms this request asks for, checked against its spec."""
        out: dict[str, Any] = {}
        if self.seats is not None:
            out["seats"] = self.seats
        if self.agenda_item is not None:
            if spec.scope != "regional":
                raise BadRequest("agenda_item: only a regional proposal puts an item to a vote")
            out["agenda_item"] = self.agenda_item
        check_question_terms(spec, out)
        return out

    def spec(self, node_kind: str) -> ballots.ProposalSpec:
        if not self.title.strip() or len(self.title) > MAX_TITLE:
            raise BadRequest(f"title must be 1 to {MAX_TITLE} characters")
        if len(self.body) > MAX_BODY:
            raise BadRequest(f"body must be at most {MAX_BODY} characters")
        if self.scope == "regional" and node_kind != "region":
            raise BadRequest("scope 'regional' is only for proposals made on a region node")
        # protocol/ballots.py owns every rule about methods, options and fractions.
        return ballots.parse_spec(
            {
                "method": self.method,
                "options": tuple(self.options),
                "threshold": self.threshold,
                "quorum": self.quorum,
                "block_limit": self.block_limit,
                "secret": self.secret,
                "scope": self.scope,
                "rule": self.rule,
                "chapters": tuple(self.chapters),
            }
        )


_DECODER = msgspec.json.Decoder(NewProposal)


def decode_new_proposal(data: bytes) -> NewProposal:
    try:
        return _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"proposal: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


class ProposalView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /api/proposals/{id}: contract fields first, more may be added (new fields go
    last with defaults, so older readers of the answer are unaffected).

    `block_limit`: blocks a consent proposal tolerates (from its stored spec, the same
    one its signed Question states); None for the other methods. `signed`, `custodial`:
    how many counted ballots carried their member's own signature and how many the
    node recorded without one; set once closed (which ballots count is fixed at close),
    None before. `seats`, `agenda_item`: those terms of its Question; `terms`: all of
    them. `demands`: a `seats` proposal's list of demands (§10.5), read off signed
    tallies: a local one's own once closed, a regional one's pooled from every held
    chapter tally once decided (region and chapter alike); None otherwise.
    """

    id: str
    url: str
    title: str
    body: str
    method: str
    options: list[str]
    status: str
    tally: dict[str, Any] | None
    decision: dict[str, Any] | None
    verification: str | None
    threshold: str
    quorum: str
    closes_at: str | None
    secret: bool
    scope: str
    rule: str
    object_id: str | None
    voters: int
    created_at: str
    origin: str | None = None
    block_limit: int | None = None
    signed: int | None = None
    custodial: int | None = None
    seats: int | None = None
    agenda_item: str | None = None
    terms: dict[str, Any] = msgspec.field(default_factory=dict)
    demands: multiwinner.DemandList | None = None


class MyBallot(msgspec.Struct, frozen=True, kw_only=True):
    """A member's own current ballot on a proposal, for that member's eyes only.

    `nonce` is there for a roll-call vote (the node keeps it); in a secret vote it
    was handed to the member at casting and never stored, so it is None here.
    """

    proposal: str
    receipt: str
    ballot: dict[str, Any]
    cast_at: str
    secret: bool
    nonce: str | None = None


def check_terms(terms: Mapping[str, Any]) -> dict[str, Any]:
    """Terms as they may go on a Question: JSON values under keys not the Question's own."""
    clash = sorted(QUESTION_FIELDS.intersection(terms))
    if clash:
        raise BadRequest(f"terms may not set the Question's own fields: {', '.join(clash)}")
    try:
        encoded = msgspec.json.encode(dict(terms))
    except (TypeError, msgspec.EncodeError) as exc:
        raise BadRequest(f"terms must be JSON values: {exc}") from None
    if len(encoded) > MAX_TERMS_BYTES:
        raise BadRequest(f"terms take at most {MAX_TERMS_BYTES} bytes, got {len(encoded)}")
    out: dict[str, Any] = msgspec.json.decode(encoded)
    return out


def terms_of_question(question: Mapping[str, Any]) -> dict[str, Any]:
    """A (region's) Question entry's terms, verbatim: every key not the Question's own."""
    return {k: v for k, v in question.items() if k not in QUESTION_FIELDS}


def check_question_terms(spec: ballots.ProposalSpec, terms: Mapping[str, Any]) -> None:
    """The terms with rules of their own (ours, or read of a region's Question)."""
    if "seats" in terms:
        try:
            multiwinner.check_seats(spec, terms["seats"])
        except ProtocolError as exc:
            raise BadRequest(f"seats: {exc.detail}") from None
        if spec.rule != "pooled":
            raise BadRequest(f"seats: a list of demands is decided pooled, not by {spec.rule!r}")
    item = terms.get("agenda_item")
    if "agenda_item" in terms and not (isinstance(item, str) and _ITEM_ID.fullmatch(item)):
        raise BadRequest(f"agenda_item must be 64 lowercase hex digits, got {item!r:.80}")


def stored_terms(row: Row) -> dict[str, Any]:
    raw = row["terms"]
    if not raw:
        return {}
    out: dict[str, Any] = msgspec.json.decode(raw)
    return out


def view_of(row: Row, spec: ballots.ProposalSpec, url: str, voters: int) -> ProposalView:
    tally = msgspec.json.decode(row["tally"]) if row["tally"] else None
    decision = msgspec.json.decode(row["decision"]) if row["decision"] else None
    terms = stored_terms(row)
    return ProposalView(
        id=row["id"],
        url=url,
        title=row["title"],
        body=row["body"],
        method=spec.method,
        options=list(spec.options),
        status=row["status"],
        tally=tally,
        decision=decision,
        verification=row["verification"],
        threshold=spec.threshold,
        quorum=spec.quorum,
        closes_at=row["closes_at"],
        secret=spec.secret,
        scope=spec.scope,
        rule=spec.rule,
        object_id=row["object_id"],
        voters=voters,
        created_at=row["created_at"],
        origin=row["origin"],
        block_limit=spec.block_limit if spec.method == "consent" else None,
        seats=terms.get("seats") if type(terms.get("seats")) is int else None,
        agenda_item=terms.get("agenda_item") if isinstance(terms.get("agenda_item"), str) else None,
        terms=terms,
    )


def question_body(row: Row, spec: ballots.ProposalSpec, url: str) -> dict[str, Any]:
    """The `Question` entry body for a proposal that opens now."""
    choices = spec.options or ballots.CONSENT_CHOICES
    notes = [
        {"type": "Note", "name": name, "replies": {"type": "Collection", "totalItems": 0}}
        for name in choices
    ]
    many = spec.method in ("approval", "ranked", "score")
    body: dict[str, Any] = {
        "type": "Question",
        "name": row["title"],
        "content": row["body"],
        "url": url,
        ("anyOf" if many else "oneOf"): notes,
        "votersCount": 0,
        **ballots.spec_fields(spec),
        **stored_terms(row),
    }
    if row["closes_at"]:
        body["endTime"] = row["closes_at"]
        body["closesAt"] = row["closes_at"]
    return body
