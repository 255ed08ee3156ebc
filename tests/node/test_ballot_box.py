"""200 members vote at the same instant: every ballot counted once, the chain gap-free."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from nodekit import (
    NodeProcess,
    add_member,
    add_members_in_process,
    call,
    free_port,
    init_node,
    read_db,
    run_process,
)

from node.ballot_box import PendingBallot
from node.errors import Conflict, Unauthorized
from node.member_keys import MemberKeys
from node.proposal_forms import NewProposal
from node.services import NodeServices
from protocol import chain
from protocol.keys import SigningKey
from protocol.member_ballots import sign_member_ballot

KEY = SigningKey(b"\x2a" * 32)


async def test_200_concurrent_ballots_from_200_members(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    init_node(data, port)
    org = add_member(data, "Olu", "organizer")
    voters = await add_members_in_process(data, 200)
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            status, p = await call(
                http,
                "POST",
                f"{node.url}/api/proposals",
                org["token"],
                {"title": "Budget", "method": "approval", "options": ["a", "b", "c"]},
            )
            assert status == 201
            target = f"{node.url}/api/proposals/{p['id']}/ballots"
            picks = [["a"], ["a", "b"], ["c"], ["b", "c"]]
            answers = await asyncio.gather(
                *(
                    call(http, "POST", target, v.token, {"choices": picks[i % 4]})
                    for i, v in enumerate(voters)
                )
            )
            assert [status for status, _ in answers] == [201] * 200
            receipts = {out["receipt"] for _, out in answers}
            assert len(receipts) == 200
            status, closed = await call(
                http, "POST", f"{node.url}/api/proposals/{p['id']}/close", org["token"]
            )
            assert status == 200
    finally:
        node.stop()
    tally = closed["tally"]
    assert tally["cast"] == 200 and tally["eligible"] == 201
    # a: picks 0 and 1 (100), b: picks 1 and 3 (100), c: picks 2 and 3 (100)
    assert tally["counts"] == {"votes": {"a": 100, "b": 100, "c": 100}}
    rows = read_db(data, "SELECT COUNT(*), COUNT(DISTINCT member_id) FROM ballots")
    assert rows == [(200, 200)]
    entries = [
        json.loads(r[0]) for r in read_db(data, "SELECT entry FROM chain_entries ORDER BY seq")
    ]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    chain.verify_chain(entries)


async def test_the_commit_refuses_a_removed_member_and_a_closed_proposal(
    services: NodeServices,
) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    kept, gone = (await services.members.add("Mia")), (await services.members.add("Max"))
    p = await services.proposals.create(org, NewProposal(title="Roof", method="consent"))
    # Max is authenticated (and cached) before he is removed: the commit still says no.
    max_ = await services.members.voter(gone.token)
    await services.members.remove(max_.id)
    with pytest.raises(Unauthorized, match=f"member {max_.id} was removed"):
        await services.proposals.cast(max_, p.id, {"choice": "block"})
    with pytest.raises(Unauthorized):
        await services.members.voter(gone.token)
    mia = await services.members.voter(kept.token)
    await services.proposals.cast(mia, p.id, {"choice": "agree"})
    await services.proposals.close(org, p.id)
    with pytest.raises(Conflict, match="no longer open"):
        await services.proposals.cast(mia, p.id, {"choice": "agree"})
    rows = await services.db.fetchall(
        "SELECT member_id FROM ballots WHERE proposal_id = ?", (p.id,)
    )
    assert [row["member_id"] for row in rows] == [mia.id]


async def test_a_member_removed_by_another_process_cannot_vote_on(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    init_node(data, port)
    org = add_member(data, "Olu", "organizer")
    mia = add_member(data, "Mia")
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    try:
        async with aiohttp.ClientSession() as http:
            status, p = await call(
                http,
                "POST",
                f"{node.url}/api/proposals",
                org["token"],
                {"title": "Dues", "method": "consent"},
            )
            assert status == 201
            target = f"{node.url}/api/proposals/{p['id']}/ballots"
            status, _ = await call(http, "POST", target, mia["token"], {"choice": "agree"})
            assert status == 201  # her token is now in the node's voter cache
            run_process("member", "remove", mia["id"], "--data", str(data))
            status, out = await call(http, "POST", target, mia["token"], {"choice": "block"})
            assert status == 401 and "removed" in out["detail"], out
    finally:
        node.stop()
    ballots = read_db(data, "SELECT ballot FROM ballots WHERE member_id = ?", (mia["id"],))
    assert [json.loads(b) for (b,) in ballots] == [{"choice": "agree"}]


async def test_within_one_batch_a_members_last_ballot_is_the_one_counted(
    services: NodeServices,
) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    mia = (await services.members.add("Mia")).member
    p = await services.proposals.create(org, NewProposal(title="Fence", method="consent"))
    await services.proposals.cast(mia, p.id, {"choice": "abstain"})
    choices = ["agree", "block", "disagree", "block", "agree", "disagree"]
    # queued together, they commit in one transaction, in arrival order
    outs = await asyncio.gather(
        *(services.proposals.cast(mia, p.id, {"choice": c}) for c in choices)
    )
    mine = await services.proposals.my_ballot(mia, p.id)
    assert mine is not None and mine.receipt == outs[-1]["receipt"]
    closed = await services.proposals.close(org, p.id)
    assert closed.tally is not None
    assert closed.tally["counts"] == {"agree": 0, "abstain": 0, "disagree": 1, "block": 0}


async def test_one_members_replayed_signed_ballot_never_fails_anothers(tmp_path: Path) -> None:
    """50 voters and 5 copies of one signed ballot at the same instant: the copies
    share group-commit batches with the others, and only the copies are refused."""
    data, port = tmp_path / "data", free_port()
    init_node(data, port)
    org = add_member(data, "Olu", "organizer")
    mia = add_member(data, "Mia")
    voters = await add_members_in_process(data, 50)
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            key = KEY.verify_key.multibase
            status, _ = await call(
                http, "POST", f"{node.url}/api/members/me/keys", mia["token"], {"key": key}
            )
            assert status == 201
            status, p = await call(
                http,
                "POST",
                f"{node.url}/api/proposals",
                org["token"],
                {"title": "Hall", "method": "consent"},
            )
            assert status == 201
            target = f"{node.url}/api/proposals/{p['id']}/ballots"
            signed = sign_member_ballot(KEY, p["object_id"], mia["id"], 1, {"choice": "block"})
            body = {
                name: getattr(signed, name) for name in signed.__struct_fields__
            }  # the signed form, as `convene ballot sign` prints it
            calls = [call(http, "POST", target, v.token, {"choice": "agree"}) for v in voters]
            calls[10:10] = [call(http, "POST", target, mia["token"], body) for _ in range(5)]
            answers = await asyncio.gather(*calls)
            copies = answers[10:15]
            others = answers[:10] + answers[15:]
            assert [status for status, _ in others] == [201] * 50, others
            assert sorted(status for status, _ in copies) == [201, 409, 409, 409, 409], copies
            for status, out in copies:
                if status == 409:
                    assert out["error"] == "replayed_ballot", out
                    assert mia["id"] in out["detail"] and p["id"] in out["detail"], out
            status, closed = await call(
                http, "POST", f"{node.url}/api/proposals/{p['id']}/close", org["token"]
            )
            assert status == 200
    finally:
        node.stop()
    tally = closed["tally"]
    assert tally["cast"] == 51
    assert tally["counts"] == {"agree": 50, "abstain": 0, "disagree": 0, "block": 1}
    assert read_db(data, "SELECT COUNT(*), COUNT(DISTINCT member_id) FROM ballots") == [(51, 51)]
    assert read_db(data, "SELECT member_id, counter FROM ballot_signatures") == [(mia["id"], 1)]
    entries = [
        json.loads(r[0]) for r in read_db(data, "SELECT entry FROM chain_entries ORDER BY seq")
    ]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    chain.verify_chain(entries)


async def test_within_one_batch_a_lower_signed_counter_is_a_replay(
    services: NodeServices,
) -> None:
    org = (await services.members.add("Olu", "organizer")).member
    mia = (await services.members.add("Mia")).member
    ben = (await services.members.add("Ben")).member
    key = KEY.verify_key.multibase
    await MemberKeys(services.db, services.ledger).register(mia, key)
    p = await services.proposals.create(org, NewProposal(title="Gate", method="consent"))

    def pending(member: str, receipt: str, choice: str, counter: int | None) -> PendingBallot:
        return PendingBallot(
            proposal_id=p.id,
            member_id=member,
            receipt=receipt * 64,
            ballot_json=json.dumps({"choice": choice}),
            nonce_hex="00" * 32,
            cast_at="2026-11-26T16:00:00Z",
            member_signature=None if counter is None else (counter, key, "z" + receipt),
        )

    # submitted in one go they queue in this order and commit as one batch:
    # counter 5 is stored, counter 3 after it (and 5 again) are replays, Ben unaffected
    outs = await asyncio.gather(
        services.ballot_box.submit(pending(mia.id, "a", "agree", 5)),
        services.ballot_box.submit(pending(mia.id, "b", "block", 3)),
        services.ballot_box.submit(pending(ben.id, "c", "disagree", None)),
        services.ballot_box.submit(pending(mia.id, "d", "block", 5)),
        return_exceptions=True,
    )
    assert outs[0] is None and outs[2] is None, outs
    for refused, counter in ((outs[1], 3), (outs[3], 5)):
        assert isinstance(refused, Conflict) and refused.code == "replayed_ballot", outs
        assert f"counter {counter}" in str(refused) and mia.id in str(refused)
    # a later batch still sees the stored counter
    with pytest.raises(Conflict, match="counter 4"):
        await services.ballot_box.submit(pending(mia.id, "e", "block", 4))
    closed = await services.proposals.close(org, p.id)
    assert closed.tally is not None
    assert closed.tally["counts"] == {"agree": 1, "abstain": 0, "disagree": 1, "block": 0}
