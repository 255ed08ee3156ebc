"""200 members vote at the same instant: every ballot counted once, the chain gap-free."""

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
