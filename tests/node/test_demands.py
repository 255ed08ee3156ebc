"""Lists of demands and Question terms through the proposals service (§10.5).

Terms (`seats`, `agenda_item`, and whatever other node code adds) are signed on the
Question, stored with the proposal, shown by GET and read back verbatim from a
region's Question; a `seats` proposal's closed view carries its list of demands.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nodekit import FakeClock

from node.bootstrap import init_node
from node.config import load_config
from node.errors import BadRequest
from node.members import Member
from node.proposal_forms import NewProposal, decode_new_proposal
from node.services import NodeServices, build_services
from protocol import agenda, ballots, chain, multiwinner
from protocol.keys import SigningKey

ITEM = "ab" * 32
REGION = "http://127.0.0.1:7/actor"


@pytest.fixture
async def region(tmp_path: Path, clock: FakeClock) -> AsyncIterator[NodeServices]:
    data = tmp_path / "region"
    await init_node(data, name="Metro", url="http://127.0.0.1:8", kind="region", clock=clock)
    built = build_services(load_config(data), clock)
    await built.db.open()
    built.ballot_box.start()
    try:
        yield built
    finally:
        await built.ballot_box.stop()
        await built.db.close()
        await asyncio.sleep(0)


async def organizer(services: NodeServices) -> Member:
    return (await services.members.add("Olu", "organizer")).member


async def question_of(services: NodeServices, object_id: str | None) -> dict[str, Any]:
    found = [e for e in await services.ledger.entries() if e["id"] == object_id]
    assert len(found) == 1
    return found[0]


def demands_form(**more: Any) -> NewProposal:
    fields: dict[str, Any] = {
        "title": "Our demands",
        "method": "approval",
        "options": ["rent cap", "transit", "clinic", "library"],
        "seats": 2,
    }
    return msgspec.convert(fields | more, NewProposal)


async def test_seats_are_signed_stored_and_shown(services: NodeServices) -> None:
    p = await services.proposals.create(await organizer(services), demands_form())
    assert p.seats == 2 and p.terms == {"seats": 2}
    q = await question_of(services, p.object_id)
    assert q["seats"] == 2  # signed: part of the Question entry
    assert multiwinner.parse_seats(ballots.parse_spec(q), q) == 2
    again = await services.proposals.get(p.id)
    assert again.seats == 2 and again.agenda_item is None


async def test_terms_from_node_code_go_on_the_question(services: NodeServices) -> None:
    org = await organizer(services)
    terms = {"requested_by": "https://ally.example/actor", "note": {"a": [1, 2]}}
    p = await services.proposals.create(org, demands_form(), terms=terms)
    assert p.terms == {"seats": 2, **terms}
    q = await question_of(services, p.object_id)
    assert q["requested_by"] == terms["requested_by"] and q["note"] == {"a": [1, 2]}


async def test_a_draft_signs_its_terms_when_opened(services: NodeServices) -> None:
    org = await organizer(services)
    p = await services.proposals.create(org, demands_form(draft=True), terms={"x_term": 1})
    assert p.object_id is None and p.terms == {"seats": 2, "x_term": 1}
    opened = await services.proposals.open(org, p.id)
    q = await question_of(services, opened.object_id)
    assert (q["seats"], q["x_term"]) == (2, 1)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"name": "x"}, "may not set the Question's own fields: name"),
        ({"method": "choice"}, "own fields: method"),
        ({"proof": {}}, "own fields: proof"),
        ({"seats": 3}, "set twice"),
        ({"big": "x" * 30_000}, "at most 20000 bytes"),
    ],
)
async def test_bad_terms_are_refused(
    services: NodeServices, terms: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        await services.proposals.create(await organizer(services), demands_form(), terms=terms)
    assert await services.proposals.all() == []  # nothing stored


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"seats": 0}, "seats: seats must be a whole number from 1 to 4, got 0"),
        ({"seats": 5}, "from 1 to 4, got 5"),
        ({"seats": 2, "method": "consent", "options": []}, "by approval or score, not consent"),
        ({"seats": 2, "method": "ranked"}, "not ranked"),
        ({"agenda_item": ITEM}, "only a regional proposal"),
    ],
)
async def test_bad_seats_and_items_are_400(
    services: NodeServices, form: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        await services.proposals.create(await organizer(services), demands_form(**form))
    assert caught.value.status == 400


def test_seats_of_the_wrong_type_are_named() -> None:
    for raw, message in (
        (b'{"title": "t", "method": "approval", "seats": "3"}', r"Expected `int \| null`"),
        (b'{"title": "t", "method": "approval", "seats": true}', r"\$\.seats"),
        (b'{"title": "t", "method": "approval", "agenda_item": 7}', r"\$\.agenda_item"),
    ):
        with pytest.raises(BadRequest, match=message):
            decode_new_proposal(raw)


async def test_a_regional_vote_names_its_agenda_item(region: NodeServices) -> None:
    org = await organizer(region)
    chapters = ["http://127.0.0.1:9/actor", "http://127.0.0.1:10/actor"]
    form = demands_form(scope="regional", chapters=chapters, agenda_item=ITEM)
    p = await region.proposals.create(org, form)
    assert p.agenda_item == ITEM and p.seats == 2
    q = await question_of(region, p.object_id)
    assert agenda.items_voted(region.identity.actor, [q]) == {ITEM}
    for bad, message in (
        ({"agenda_item": "AB" * 32}, "64 lowercase hex"),
        ({"agenda_item": "ab" * 31}, "64 lowercase hex"),
        ({"rule": "chapters"}, "decided pooled, not by 'chapters'"),
    ):
        with pytest.raises(BadRequest, match=message):
            await region.proposals.create(
                org, demands_form(scope="regional", chapters=chapters, **bad)
            )


def region_question(chapter: str, **terms: Any) -> tuple[dict[str, Any], str]:
    """A region's signed list-of-demands Question entry (seq 1) listing one chapter."""
    key = SigningKey.from_seed(bytes(range(32)))
    first = chain.genesis(REGION, "Region", "region", key, "2026-01-01T00:00:00Z")
    spec = ballots.ProposalSpec(
        method="score", options=("a", "b", "c"), scope="regional", chapters=(chapter,)
    )
    body = {"type": "Question", "name": "Demands", **ballots.spec_fields(spec), **terms}
    entry = chain.make_entry(
        body,
        actor=REGION,
        seq=1,
        prev=chain.entry_digest(first),
        key=key,
        key_id=f"{REGION}#ed25519-0",
        published="2026-01-01T00:00:01Z",
    )
    return entry, chain.entry_digest(entry)


async def test_an_adopted_question_keeps_its_terms_verbatim(services: NodeServices) -> None:
    terms = {"seats": 2, "agenda_item": ITEM, "requested_by": {"id": "x", "n": [1]}}
    question, digest = region_question(services.identity.actor, **terms)
    p = await services.proposals.adopt_regional(question, digest=digest)
    assert p.terms == terms and p.seats == 2 and p.agenda_item == ITEM


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"seats": 4}, "from 1 to 3, got 4"),
        ({"seats": "2"}, "got '2'"),
        ({"agenda_item": 5}, "agenda_item must be 64 lowercase hex"),
    ],
)
async def test_an_adopted_question_with_bad_terms_is_refused(
    services: NodeServices, terms: dict[str, Any], message: str
) -> None:
    question, digest = region_question(services.identity.actor, **terms)
    with pytest.raises(BadRequest, match=message):
        await services.proposals.adopt_regional(question, digest=digest)
    assert await services.proposals.all() == []


async def test_a_closed_local_list_shows_its_demands_with_a_tie(services: NodeServices) -> None:
    org = await organizer(services)
    voters = [(await services.members.add(f"V{i}")).member for i in range(4)]
    p = await services.proposals.create(org, demands_form(seats=2))
    assert (await services.proposals.get(p.id)).demands is None  # nothing before close
    picks = [["rent cap", "transit"], ["rent cap", "clinic"], ["rent cap"], ["library"]]
    for voter, choices in zip(voters, picks, strict=True):
        await services.proposals.cast(voter, p.id, {"choices": choices})
    closed = await services.proposals.close(org, p.id)
    d = closed.demands
    assert d is not None and d.result == "tie" and d.seats == 2
    assert d.adopted == ("rent cap",) and d.tied == ("transit", "clinic", "library")
    assert [(i.option, i.place, i.support, i.adopted) for i in d.items] == [
        ("rent cap", 1, 3, True),
        ("transit", 2, 1, False),
        ("clinic", 2, 1, False),
        ("library", 2, 1, False),
    ]
    assert "3 options tie for the last 1 of 2 seats" in d.reason
    shown = msgspec.to_builtins(await services.proposals.get(p.id))
    assert shown["demands"]["items"][0] == {
        "option": "rent cap",
        "place": 1,
        "support": 3,
        "scored": None,
        "mean": None,
        "adopted": True,
    }


async def test_a_score_list_orders_by_mean(services: NodeServices) -> None:
    org = await organizer(services)
    voters = [(await services.members.add(f"V{i}")).member for i in range(3)]
    form = demands_form(method="score", options=["a", "b", "c"], seats=2)
    p = await services.proposals.create(org, form)
    for voter, scores in zip(
        voters, [{"a": 5, "b": 1}, {"a": 3, "b": 4, "c": 0}, {"b": 4}], strict=True
    ):
        await services.proposals.cast(voter, p.id, {"scores": scores})
    d = (await services.proposals.close(org, p.id)).demands
    assert d is not None and d.result == "complete" and d.adopted == ("a", "b")
    assert [(i.option, i.mean, i.scored) for i in d.items] == [
        ("a", "4/1", 2),
        ("b", "3/1", 3),
        ("c", "0/1", 1),
    ]


async def test_a_list_without_quorum_fails_and_one_without_seats_has_none(
    services: NodeServices,
) -> None:
    org = await organizer(services)
    await services.members.add("Mia")
    p = await services.proposals.create(org, demands_form(quorum="1/2"))
    d = (await services.proposals.close(org, p.id)).demands
    assert d is not None and d.result == "failed" and d.items == ()
    assert "quorum not met: 0 of" in d.reason
    plain = await services.proposals.create(org, demands_form(seats=None))
    assert (await services.proposals.close(org, plain.id)).demands is None
