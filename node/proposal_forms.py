"""The JSON shapes of proposals: the create request, the API view, the Question body.

The request is decoded strictly (an unknown field or a wrong type is a 400 naming it);
the voting rules inside it become a protocol `ProposalSpec`, validated by protocol/.
The Question is shaped as Mastodon polls are (ARCHITECTURE "Standards": `oneOf` /
`anyOf` of Notes with reply counts, `endTime`) plus the spec's own fields.
"""

from __future__ import annotations

from typing import Any

import msgspec

from node.errors import BadRequest
from node.storage import Row
from protocol import ballots

MAX_TITLE = 300
MAX_BODY = 20_000


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
    """GET /api/proposals/{id}: contract fields first, more may be added."""

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


def view_of(row: Row, spec: ballots.ProposalSpec, url: str, voters: int) -> ProposalView:
    tally = msgspec.json.decode(row["tally"]) if row["tally"] else None
    decision = msgspec.json.decode(row["decision"]) if row["decision"] else None
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
    }
    if row["closes_at"]:
        body["endTime"] = row["closes_at"]
        body["closesAt"] = row["closes_at"]
    return body
