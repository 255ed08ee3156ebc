"""kill -9 in the middle of a stream of ballots: nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from nodekit import (
    NodeProcess,
    add_member,
    add_members_in_process,
    call,
    free_port,
    init_node,
    read_db,
)

from protocol import chain


async def test_kill9_mid_stream_keeps_every_acknowledged_ballot(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    init_node(data, port)
    org = add_member(data, "Olu", "organizer")
    voters = await add_members_in_process(data, 24)
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    acked: dict[str, str] = {}  # receipt → member id
    try:
        async with aiohttp.ClientSession() as http:
            status, p = await call(
                http,
                "POST",
                f"{node.url}/api/proposals",
                org["token"],
                {"title": "Rent strike", "method": "choice", "options": ["yes", "no"]},
            )
            assert status == 201
            target = f"{node.url}/api/proposals/{p['id']}/ballots"

            async def stream(voter: object, n: int) -> None:
                token, member_id = voter.token, voter.member.id  # type: ignore[attr-defined]
                for i in range(1000):
                    try:
                        status, out = await call(
                            http, "POST", target, token, {"choice": ("yes", "no")[i % 2]}
                        )
                    except aiohttp.ClientError:
                        return  # the node died under us: this ballot was never acknowledged
                    assert status == 201, out
                    acked[out["receipt"]] = member_id

            streams = [asyncio.create_task(stream(v, i)) for i, v in enumerate(voters)]
            while len(acked) < 300:
                await asyncio.sleep(0.01)
            node.kill9()
            await asyncio.gather(*streams)
    finally:
        node.stop()

    stored = {row[0]: row[1] for row in read_db(data, "SELECT receipt, member_id FROM ballots")}
    missing = [r for r in acked if r not in stored]
    assert missing == [], f"{len(missing)} acknowledged ballots lost"
    assert all(stored[r] == m for r, m in acked.items())
    entries = [
        json.loads(row[0]) for row in read_db(data, "SELECT entry FROM chain_entries ORDER BY seq")
    ]
    chain.verify_chain(entries)

    # The node comes back, closes the vote, and counts each voter's last stored ballot.
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node2.log")
    node.start()
    try:
        async with aiohttp.ClientSession() as http:
            status, closed = await call(
                http, "POST", f"{node.url}/api/proposals/{p['id']}/close", org["token"]
            )
            assert status == 200, closed
            voted = set(stored.values())
            assert closed["tally"]["cast"] == len(voted)
            last = read_db(
                data,
                "SELECT receipt FROM ballots WHERE id IN"
                " (SELECT MAX(id) FROM ballots GROUP BY member_id)",
            )
            for (receipt,) in last[:5]:
                status, proof = await call(
                    http, "GET", f"{node.url}/api/proposals/{p['id']}/receipts/{receipt}"
                )
                assert status == 200 and proof["root"] == closed["tally"]["ballots_root"]
    finally:
        node.stop()
    entries = [
        json.loads(row[0]) for row in read_db(data, "SELECT entry FROM chain_entries ORDER BY seq")
    ]
    chain.verify_chain(entries)
    assert entries[-1]["type"] == "Tally" and len(entries) == entries[-1]["seq"] + 1
