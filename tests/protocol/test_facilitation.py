"""Partner facilitation's shared rule (protocol.facilitation, protocol.md §10.7): which
grants were in force for whom at which region seq, and every `requested_by` checked."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import digest
from protocol.entries import make_entry
from protocol.facilitation import (
    FacilitationError,
    check_request,
    check_requested,
    grant_body,
    grants,
    in_force,
    parse_grant,
    parse_request,
    request_body,
    revoke_body,
)
from protocol.keys import SigningKey

REGION = "https://region.example/actor"
PARTNER = "https://partner.example/actor"
OTHER = "https://other.example/actor"
WHEN = "2026-11-26T15:00:00Z"
PROPOSAL = {"title": "Rent freeze", "body": "Freeze rents", "method": "consent"}


def sign(body: dict[str, Any], actor: str, seq: int) -> dict[str, Any]:
    key = SigningKey.from_seed(actor.encode().ljust(32, b"\0")[:32])
    return make_entry(
        body,
        actor=actor,
        seq=seq,
        prev="00" * 32,
        key=key,
        key_id=f"{actor}#ed25519-0",
        published=WHEN,
    )


def question(seq: int, requested_by: str, **over: Any) -> dict[str, Any]:
    body = {
        "type": "Question",
        "name": PROPOSAL["title"],
        "content": PROPOSAL["body"],
        "method": "consent",
        "options": [],
        "scope": "regional",
        "requested_by": requested_by,
        **over,
    }
    return sign(body, REGION, seq)


def test_bodies_refuse_what_would_not_parse() -> None:
    assert grant_body(PARTNER, "Spring convening")["facilitator"] == PARTNER
    with pytest.raises(FacilitationError, match="malformed"):
        grant_body("not a url")
    with pytest.raises(FacilitationError, match="malformed"):
        revoke_body("ab" * 31)
    with pytest.raises(FacilitationError, match="malformed"):
        request_body(REGION, "ab" * 32, "dissolve", {})
    with pytest.raises(FacilitationError, match="close request"):
        request_body(REGION, "ab" * 32, "close", {"proposal": 3})
    with pytest.raises(FacilitationError, match="title"):
        request_body(REGION, "ab" * 32, "propose", {"method": "consent"})


def test_a_region_cannot_grant_itself_and_errors_name_actor_and_seq() -> None:
    with pytest.raises(FacilitationError) as caught:
        parse_grant(sign(grant_body(REGION), REGION, 4))
    assert (caught.value.actor, caught.value.seq) == (REGION, 4)
    bad = sign({"type": "FacilitationRequest", "region": REGION, "grant": 7}, PARTNER, 9)
    with pytest.raises(FacilitationError) as caught:
        parse_request(bad)
    assert (caught.value.actor, caught.value.seq, caught.value.code) == (PARTNER, 9, "malformed")


def test_grants_in_force_by_region_seq() -> None:
    g = sign(grant_body(PARTNER), REGION, 3)
    r = sign(revoke_body(digest(g)), REGION, 7)
    states = grants([g, sign({"type": "Note"}, REGION, 5), r])
    assert list(states) == [digest(g)] and states[digest(g)].revoked_seq == 7
    assert in_force(states, PARTNER, 3) == []  # not before the grant's own seq
    assert [s.seq for s in in_force(states, PARTNER, 4)] == [3]
    assert [s.seq for s in in_force(states, PARTNER, 7)] == [3]  # revoked *at* 7
    assert in_force(states, PARTNER, 8) == []
    assert in_force(states, OTHER, 5) == []


def test_revoking_an_unknown_or_later_grant_is_refused() -> None:
    g = sign(grant_body(PARTNER), REGION, 5)
    with pytest.raises(FacilitationError) as caught:
        grants([g, sign(revoke_body(digest(g)), REGION, 4)])
    assert (caught.value.code, caught.value.seq) == ("unknown_grant", 4)
    with pytest.raises(FacilitationError, match="one region"):
        grants([g, sign(grant_body(PARTNER), OTHER, 6)])


def test_check_request_names_each_reason() -> None:
    g = sign(grant_body(PARTNER), REGION, 3)
    states = grants([g, sign(revoke_body(digest(g)), REGION, 10)])
    ok = sign(request_body(REGION, digest(g), "propose", PROPOSAL), PARTNER, 2)
    where, req = check_request(states, ok, region=REGION, at_seq=4)
    assert (where.actor, req.action) == (PARTNER, "propose")
    cases = {
        "misaddressed": (sign(request_body(OTHER, digest(g), "propose", PROPOSAL), PARTNER, 3), 4),
        "not_granted": (sign(request_body(REGION, digest(g), "propose", PROPOSAL), OTHER, 3), 4),
        "revoked": (ok, 11),
    }
    for code, (entry, at) in cases.items():
        with pytest.raises(FacilitationError) as caught:
            check_request(states, entry, region=REGION, at_seq=at)
        assert caught.value.code == code
        assert caught.value.actor == entry["actor"] and caught.value.seq == entry["seq"]
    unknown = sign(request_body(REGION, "cd" * 32, "propose", PROPOSAL), PARTNER, 4)
    with pytest.raises(FacilitationError, match="not_granted"):
        check_request(states, unknown, region=REGION, at_seq=5)
    with pytest.raises(FacilitationError, match="not_granted"):
        check_request(states, ok, region=REGION, at_seq=3)  # the grant comes at seq 3


def test_check_requested_accepts_an_honest_chain_and_names_every_tampering() -> None:
    g = sign(grant_body(PARTNER), REGION, 3)
    req = sign(request_body(REGION, digest(g), "propose", PROPOSAL), PARTNER, 2)
    q = question(4, digest(req))
    chain = [g, q, sign(revoke_body(digest(g)), REGION, 5)]
    carried = check_requested(chain, [req])
    assert [(c.seq, c.request, c.facilitator) for c in carried] == [(4, digest(req), PARTNER)]

    def refused(chain: list[dict[str, Any]], requests: list[dict[str, Any]]) -> str:
        with pytest.raises(FacilitationError) as caught:
            check_requested(chain, requests)
        assert caught.value.actor == REGION
        return caught.value.code

    assert refused(chain, []) == "unknown_request"
    assert refused([g, question(4, "xyz")], [req]) == "malformed"
    assert refused([g, question(4, digest(req)), question(6, digest(req))], [req]) == "replayed"
    assert (
        refused([g, question(4, digest(req), name="Something else")], [req]) == "not_as_requested"
    )
    late = [g, sign(revoke_body(digest(g)), REGION, 4), question(5, digest(req))]
    assert refused(late, [req]) == "revoked"
    early = [question(2, digest(req)), g]
    assert refused(early, [req]) == "not_granted"
    # A tampered request (one byte of its body changed) is another digest: not found.
    tampered = {**req, "body": {**PROPOSAL, "title": "Rent freezE"}}
    assert refused(chain, [tampered]) == "unknown_request"


@settings(max_examples=60, deadline=None)
@given(
    grant_at=st.integers(1, 20),
    gap=st.integers(1, 20),
    revoke_after=st.one_of(st.none(), st.integers(1, 20)),
)
def test_in_force_is_exactly_between_grant_and_revocation(
    grant_at: int, gap: int, revoke_after: int | None
) -> None:
    g = sign(grant_body(PARTNER), REGION, grant_at)
    chain = [g]
    revoked = None if revoke_after is None else grant_at + revoke_after
    if revoked is not None:
        chain.append(sign(revoke_body(digest(g)), REGION, revoked))
    states = grants(chain)
    at = grant_at + gap
    expected = revoked is None or revoked >= at
    assert bool(in_force(states, PARTNER, at)) == expected
