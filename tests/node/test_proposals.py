"""Proposals through the service: lifecycle table, close times across restarts, ballots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nodekit import FakeClock

from node.clock import rfc3339
from node.config import load_config
from node.errors import Conflict, Forbidden
from node.ledger import Appended
from node.proposal_forms import NewProposal
from node.proposal_lifecycle import TRANSITIONS, next_status
from node.services import NodeServices, build_services
from protocol import aggregate, ballots, chain
from protocol import tally as protocol_tally
from protocol.errors import BallotError
from protocol.keys import SigningKey

STATES = ("draft", "open", "closed", "decided")
EVENTS = ("open", "close", "decide")


def test_only_the_table_moves_a_proposal() -> None:
    for state in STATES:
        for event in EVENTS:
            if (state, event) in TRANSITIONS:
                assert next_status("p", state, event) == TRANSITIONS[(state, event)]
            else:
                with pytest.raises(Conflict, match=f"is {state}; it cannot {event}"):
                    next_status("p", state, event)


async def test_open_and_secret_ballots(services: NodeServices) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    voter = (await services.members.add("Mia")).member
    for secret in (False, True):
        p = await services.proposals.create(
            org, NewProposal(title="Hall", method="consent", secret=secret)
        )
        out = await services.proposals.cast(voter, p.id, {"choice": "agree"})
        row = await services.db.fetchone(
            "SELECT nonce, ballot FROM ballots WHERE receipt = ?", (out["receipt"],)
        )
        assert row is not None
        # roll-call keeps the nonce so an export can show the receipt opens; secret never does
        assert row["nonce"] == (None if secret else out["nonce"])
        assert out["receipt"] == ballots.ballot_receipt(
            p.object_id or "", ballots.ConsentBallot(choice="agree"), bytes.fromhex(out["nonce"])
        )
    with pytest.raises(BallotError):
        await services.proposals.cast(voter, p.id, {"choice": "maybe"})
    with pytest.raises(Forbidden):
        await services.proposals.close(voter, p.id)


async def test_close_time_is_kept_across_a_restart(
    services: NodeServices, clock: FakeClock, tmp_path: Path
) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    voter = (await services.members.add("Mia")).member
    closes = rfc3339(clock.now + 3600)
    p = await services.proposals.create(
        org, NewProposal(title="Mural", method="choice", options=["x", "y"], closes_at=closes)
    )
    assert p.closes_at == closes
    await services.proposals.cast(voter, p.id, {"choice": "y"})
    assert await services.proposals.close_due() == []
    await services.ballot_box.stop()
    await services.db.close()

    # The node was down while the close time passed; on start the closer catches up.
    clock.now += 7200
    again = build_services(load_config(tmp_path / "data"), clock)
    await again.db.open()
    again.ballot_box.start()
    closer = asyncio.create_task(again.proposals.run_auto_close())
    try:
        for _ in range(100):
            view = await again.proposals.get(p.id)
            if view.status == "decided":
                break
            await asyncio.sleep(0.02)
        assert view.status == "decided"
        assert view.tally is not None and view.tally["counts"] == {"votes": {"x": 0, "y": 1}}
        assert view.decision is not None and view.decision["outcome"]["winner"] == "y"
        with pytest.raises(Conflict):
            await again.proposals.cast(voter, p.id, {"choice": "x"})
        chain.verify_chain(await again.ledger.entries())
    finally:
        closer.cancel()
        await again.ballot_box.stop()
        await again.db.close()
    # let the fixture close its (already closed) handles harmlessly
    await services.db.open()
    services.ballot_box.start()


async def test_a_ballot_racing_the_close_is_counted_or_refused(services: NodeServices) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    voters = [(await services.members.add(f"v{i}")).member for i in range(30)]
    p = await services.proposals.create(org, NewProposal(title="Race", method="consent"))

    async def vote(v: object) -> str:
        try:
            await services.proposals.cast(v, p.id, {"choice": "agree"})  # type: ignore[arg-type]
            return "counted"
        except Conflict:
            return "refused"

    tasks = [asyncio.create_task(vote(v)) for v in voters]
    await asyncio.sleep(0)
    closed = await services.proposals.close(org, p.id)
    results = await asyncio.gather(*tasks)
    assert closed.tally is not None
    assert closed.tally["cast"] == results.count("counted")


def region_question(chapter_actor: str) -> tuple[dict[str, object], str]:
    """A region's signed Question entry (seq 1 of its chain) listing one chapter."""
    region = "http://127.0.0.1:7/actor"
    key = SigningKey.from_seed(bytes(range(32)))
    first = chain.genesis(region, "Region", "region", key, "2026-01-01T00:00:00Z")
    spec = ballots.ProposalSpec(
        method="choice", options=("tram", "bus"), scope="regional", chapters=(chapter_actor,)
    )
    body = {"type": "Question", "name": "Transit", "content": "", **ballots.spec_fields(spec)}
    entry = chain.make_entry(
        body,
        actor=region,
        seq=1,
        prev=chain.entry_digest(first),
        key=key,
        key_id=f"{region}#ed25519-0",
        published="2026-01-01T00:00:01Z",
    )
    chain.verify_chain([first, entry])
    return entry, chain.entry_digest(entry)


async def test_a_chapter_votes_on_a_regions_proposal(services: NodeServices) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    voter = (await services.members.add("Mia")).member
    question, digest = region_question(services.identity.actor)
    before = len(await services.ledger.entries())
    p = await services.proposals.adopt_regional(question, digest=digest)
    assert (await services.proposals.adopt_regional(question, digest=digest)).id == p.id
    assert p.status == "open" and p.object_id == question["id"] and p.origin == question["actor"]
    assert len(await services.ledger.entries()) == before  # the Question is the region's
    await services.proposals.cast(voter, p.id, {"choice": "tram"})
    closed = await services.proposals.close(org, p.id)
    assert closed.status == "closed" and closed.decision is None  # the region decides
    assert closed.tally is not None
    tally = protocol_tally.parse_tally(closed.tally)
    spec = ballots.parse_spec(question)
    aggregate.check_tally(spec, tally, proposal=str(question["id"]), proposal_digest=digest)
    decided = await services.proposals.record_decision(p.id, {"outcome": "tram"}, "verified")
    assert decided.status == "decided" and decided.verification == "verified"


async def test_append_hooks_commit_or_fail_with_the_entry(services: NodeServices) -> None:
    seen: list[int] = []

    async def hook(tx: object, appended: Appended) -> None:
        seen.append(appended.seq)
        if appended.entry["type"] == "Question":
            raise RuntimeError("delivery queue unavailable")

    services.ledger.on_append.append(hook)
    org = (await services.members.add("Olu", "organizer")).member
    with pytest.raises(RuntimeError):
        await services.proposals.create(org, NewProposal(title="Hooked", method="consent"))
    entries = await services.ledger.entries()
    assert seen == [1, 2] and [e["type"] for e in entries] == ["Genesis", "RosterChange"]
    assert await services.proposals.all() == []  # no effect without its entry


VOTES = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from(["agree", "abstain", "disagree", "block"])),
    max_size=25,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(votes=VOTES)
async def test_the_tally_counts_each_members_last_ballot(
    services: NodeServices, votes: list[tuple[int, str]]
) -> None:
    # Each example runs on a fresh proposal of the same node (the fixture is shared).
    roster_now = await services.members.all()
    org = next((m for m in roster_now if m.role == "organizer"), None)
    if org is None:
        org = (await services.members.add("Olu", "organizer")).member
        voters = [(await services.members.add(f"v{i}")).member for i in range(5)]
    else:
        voters = [m for m in roster_now if m.role == "member"]
    p = await services.proposals.create(org, NewProposal(title="Prop", method="consent"))
    last: dict[str, str] = {}
    for who, choice in votes:
        await services.proposals.cast(voters[who], p.id, {"choice": choice})
        last[voters[who].id] = choice
    closed = await services.proposals.close(org, p.id)
    assert closed.tally is not None
    expected = {c: list(last.values()).count(c) for c in ("agree", "abstain", "disagree", "block")}
    assert closed.tally["counts"] == expected
    assert closed.tally["cast"] == len(last) and closed.tally["eligible"] == 6


async def test_a_removed_members_ballot_is_not_counted(services: NodeServices) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    stays = (await services.members.add("Mia")).member
    leaves = (await services.members.add("Max")).member
    p = await services.proposals.create(org, NewProposal(title="Dues", method="consent"))
    await services.proposals.cast(stays, p.id, {"choice": "agree"})
    await services.proposals.cast(leaves, p.id, {"choice": "block"})
    await services.members.remove(leaves.id)
    closed = await services.proposals.close(org, p.id)
    assert closed.tally is not None
    assert closed.tally["counts"] == {"agree": 1, "abstain": 0, "disagree": 0, "block": 0}
    assert (closed.tally["cast"], closed.tally["eligible"]) == (1, 2)


async def test_the_list_counts_each_proposals_distinct_voters(services: NodeServices) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    mia = (await services.members.add("Mia")).member
    max_ = (await services.members.add("Max")).member
    none = await services.proposals.create(org, NewProposal(title="None", method="consent"))
    one = await services.proposals.create(org, NewProposal(title="One", method="consent"))
    two = await services.proposals.create(org, NewProposal(title="Two", method="consent"))
    await services.proposals.cast(mia, one.id, {"choice": "agree"})
    await services.proposals.cast(mia, one.id, {"choice": "block"})  # a change is one voter
    await services.proposals.cast(mia, two.id, {"choice": "agree"})
    await services.proposals.cast(max_, two.id, {"choice": "disagree"})
    listed = {p.id: p.voters for p in await services.proposals.all()}
    assert listed == {none.id: 0, one.id: 1, two.id: 2}
    for pid, count in listed.items():
        assert (await services.proposals.get(pid)).voters == count


async def test_a_member_sees_only_their_own_current_ballot(services: NodeServices) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    mia = (await services.members.add("Mia")).member
    max_ = (await services.members.add("Max")).member
    for secret in (False, True):
        p = await services.proposals.create(
            org, NewProposal(title="Hall", method="consent", secret=secret)
        )
        assert await services.proposals.my_ballot(mia, p.id) is None
        await services.proposals.cast(mia, p.id, {"choice": "agree"})
        changed = await services.proposals.cast(mia, p.id, {"choice": "block"})
        other = await services.proposals.cast(max_, p.id, {"choice": "disagree"})
        mine = await services.proposals.my_ballot(mia, p.id)
        assert mine is not None
        assert (mine.receipt, mine.ballot, mine.secret) == (
            changed["receipt"],
            {"choice": "block"},
            secret,
        )
        # roll-call: the stored nonce opens the receipt; secret: the node never had it
        assert mine.nonce == (None if secret else changed["nonce"])
        theirs = await services.proposals.my_ballot(max_, p.id)
        assert theirs is not None and theirs.receipt == other["receipt"] != mine.receipt
        assert theirs.ballot == {"choice": "disagree"}
