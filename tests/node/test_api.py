"""End to end over HTTP against one running `convene serve` process (real SQLite)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nodekit import NodeProcess, add_member, call, free_port, init_node, run_process

from protocol import ballots, chain, roster
from protocol.errors import MerkleError
from protocol.keys import SigningKey
from protocol.member_ballots import sign_member_ballot
from protocol.merkle import hashes_from_hex, verify_inclusion_data


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("api")
    data, port = base / "data", free_port()
    init = init_node(data, port)
    people = {
        "admin": add_member(data, "Ada", "admin"),
        "org": add_member(data, "Olu", "organizer"),
        "m1": add_member(data, "Mia", "member"),
        "m2": add_member(data, "Max", "member"),
        "m3": add_member(data, "Moe", "member"),
    }
    proc = NodeProcess(data=data, port=port, log_path=base / "node.log")
    proc.start()
    try:
        yield {"init": init, "proc": proc, "people": people, "data": data, "url": proc.url}
    finally:
        proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tok(node: dict[str, Any], who: str) -> str:
    token: str = node["people"][who]["token"]
    return token


async def new_proposal(
    http: aiohttp.ClientSession, node: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    body = {"title": "Park cleanup day", "body": "Saturday?", "method": "consent", **fields}
    status, out = await call(http, "POST", f"{node['url']}/api/proposals", tok(node, "org"), body)
    assert status == 201, out
    result: dict[str, Any] = out
    return result


def chain_entries(data: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(data / "convene.sqlite3")
    try:
        rows = conn.execute("SELECT entry FROM chain_entries ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [json.loads(row[0]) for row in rows]


async def test_full_vote_with_changed_ballot_and_inclusion_proofs(
    node: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    url = node["url"]
    p = await new_proposal(
        http, node, method="choice", options=["north", "south", "east"], secret=True
    )
    assert p["status"] == "open" and p["tally"] is None and p["decision"] is None
    assert p["url"].endswith(f"/proposals/{p['id']}")
    ballots_url = f"{url}/api/proposals/{p['id']}/ballots"

    receipts: dict[str, dict[str, Any]] = {}
    for who, choice in (("m1", "north"), ("m2", "south"), ("m3", "north"), ("org", "east")):
        status, out = await call(http, "POST", ballots_url, tok(node, who), {"choice": choice})
        assert status == 201, out
        receipts[who] = out
    # m2 changes their mind: the last ballot counts, the first is kept but superseded.
    status, changed = await call(http, "POST", ballots_url, tok(node, "m2"), {"choice": "north"})
    assert status == 201

    status, closed = await call(
        http, "POST", f"{url}/api/proposals/{p['id']}/close", tok(node, "org")
    )
    assert status == 200, closed
    assert closed["status"] == "decided"
    tally = closed["tally"]
    assert tally["type"] == "Tally"
    assert tally["counts"] == {"votes": {"north": 3, "south": 0, "east": 1}}
    assert tally["cast"] == 4 and tally["eligible"] == 5
    assert closed["decision"]["outcome"]["winner"] == "north"

    # Every current ballot proves into the signed ballots root; the superseded one does not.
    for out in (receipts["m1"], receipts["m3"], receipts["org"], changed):
        status, proof = await call(
            http, "GET", f"{url}/api/proposals/{p['id']}/receipts/{out['receipt']}"
        )
        assert status == 200, proof
        assert proof["root"] == tally["ballots_root"] and proof["tree_size"] == 4
        verify_inclusion_data(
            bytes.fromhex(out["receipt"]),
            proof["leaf_index"],
            proof["tree_size"],
            hashes_from_hex(proof["path"]),
            bytes.fromhex(proof["root"]),
        )
    # The member alone can open their receipt: ballot + nonce give it back.
    recomputed = ballots.ballot_receipt(
        changed["proposal"], ballots.ChoiceBallot(choice="north"), bytes.fromhex(changed["nonce"])
    )
    assert recomputed == changed["receipt"]
    status, gone = await call(
        http, "GET", f"{url}/api/proposals/{p['id']}/receipts/{receipts['m2']['receipt']}"
    )
    assert status == 404 and "superseded" in gone["detail"]

    # A tampered proof fails against the root.
    status, proof = await call(
        http, "GET", f"{url}/api/proposals/{p['id']}/receipts/{receipts['m1']['receipt']}"
    )
    bad = bytearray(bytes.fromhex(receipts["m1"]["receipt"]))
    bad[0] ^= 1
    with pytest.raises(MerkleError):
        verify_inclusion_data(
            bytes(bad),
            proof["leaf_index"],
            proof["tree_size"],
            hashes_from_hex(proof["path"]),
            bytes.fromhex(proof["root"]),
        )

    # The chain verifies, holds the Question and the Tally, and its roster matches.
    entries = chain_entries(node["data"])
    chain.verify_chain(entries)
    types = [e["type"] for e in entries]
    assert types[0] == "Genesis" and "Question" in types and types[-1] == "Tally"
    size, root = roster.roster_root(roster.roster_at(entries))
    assert (size, root) == (tally["roster_size"], tally["roster_root"])
    # Secret vote: no nonce and no choice leave the node; the DB keeps no nonce.
    conn = sqlite3.connect(node["data"] / "convene.sqlite3")
    nonces = conn.execute("SELECT nonce FROM ballots WHERE proposal_id = ?", (p["id"],)).fetchall()
    conn.close()
    assert nonces and all(n[0] is None for n in nonces)
    tally_text = json.dumps(entries[-1])
    assert not any(node["people"][who]["id"] in tally_text for who in node["people"])


async def test_draft_then_open_and_listing(
    node: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    url = node["url"]
    p = await new_proposal(http, node, draft=True)
    assert p["status"] == "draft"
    status, out = await call(
        http, "POST", f"{url}/api/proposals/{p['id']}/ballots", tok(node, "m1"), {"choice": "agree"}
    )
    assert status == 409 and out["error"] == "conflict"
    status, opened = await call(
        http, "POST", f"{url}/api/proposals/{p['id']}/open", tok(node, "org")
    )
    assert status == 200 and opened["status"] == "open"
    status, _ = await call(http, "POST", f"{url}/api/proposals/{p['id']}/open", tok(node, "org"))
    assert status == 409
    status, listing = await call(http, "GET", f"{url}/api/proposals", tok(node, "m1"))
    assert status == 200 and p["id"] in [item["id"] for item in listing["items"]]
    status, members = await call(http, "GET", f"{url}/api/members", tok(node, "org"))
    assert status == 200
    assert {m["name"] for m in members["items"]} >= {"Ada", "Olu", "Mia", "Max", "Moe"}
    assert set(members["items"][0]) == {"id", "name", "role"}


async def test_every_error_status(node: dict[str, Any], http: aiohttp.ClientSession) -> None:
    url = node["url"]
    p = await new_proposal(http, node)
    ballots_url = f"{url}/api/proposals/{p['id']}/ballots"
    m1 = tok(node, "m1")

    cases: list[tuple[int, str, tuple[Any, ...]]] = [
        (400, "malformed JSON", ("POST", ballots_url, m1, None, b"{not json")),
        (
            400,
            "duplicate key",
            ("POST", ballots_url, m1, None, b'{"choice":"agree","choice":"block"}'),
        ),
        (400, "wrong ballot", ("POST", ballots_url, m1, {"choice": "maybe"})),
        (400, "wrong shape", ("POST", ballots_url, m1, {"ranking": ["agree"]})),
        (
            400,
            "unknown field",
            (
                "POST",
                f"{url}/api/proposals",
                tok(node, "org"),
                {"title": "x", "method": "consent", "colour": "red"},
            ),
        ),
        (
            400,
            "bad method",
            ("POST", f"{url}/api/proposals", tok(node, "org"), {"title": "x", "method": "lottery"}),
        ),
        (
            400,
            "bad threshold",
            (
                "POST",
                f"{url}/api/proposals",
                tok(node, "org"),
                {"title": "x", "method": "consent", "threshold": "3/2"},
            ),
        ),
        (
            400,
            "past close",
            (
                "POST",
                f"{url}/api/proposals",
                tok(node, "org"),
                {"title": "x", "method": "consent", "closes_at": "2001-01-01T00:00:00Z"},
            ),
        ),
        (
            400,
            "regional on chapter",
            (
                "POST",
                f"{url}/api/proposals",
                tok(node, "org"),
                {"title": "x", "method": "consent", "scope": "regional", "chapters": ["a"]},
            ),
        ),
        (401, "no token", ("POST", ballots_url, None, {"choice": "agree"})),
        (401, "forged token", ("POST", ballots_url, "cvn_" + "A" * 43, {"choice": "agree"})),
        (
            403,
            "member creates",
            ("POST", f"{url}/api/proposals", m1, {"title": "x", "method": "consent"}),
        ),
        (403, "member closes", ("POST", f"{url}/api/proposals/{p['id']}/close", m1)),
        (403, "member lists members", ("GET", f"{url}/api/members", m1)),
        (404, "unknown proposal", ("GET", f"{url}/api/proposals/p-nope", m1)),
        (404, "unknown receipt", ("GET", f"{url}/api/proposals/p-nope/receipts/{'0' * 64}")),
        (404, "unknown route", ("GET", f"{url}/api/nothing", m1)),
        (413, "oversized", ("POST", ballots_url, m1, None, b'{"choice":"' + b"a" * 70_000 + b'"}')),
    ]
    for want, what, args in cases:
        status, out = await call(http, *args)
        assert status == want, (what, out)
        assert set(out) == {"error", "detail"} and out["detail"], (what, out)
    # Bearer scheme missing entirely.
    async with http.post(ballots_url, headers={"Authorization": m1}, json={"choice": "agree"}) as r:
        assert r.status == 401

    status, _ = await call(http, "POST", f"{url}/api/proposals/{p['id']}/close", tok(node, "org"))
    assert status == 200
    status, out = await call(http, "POST", ballots_url, m1, {"choice": "agree"})
    assert status == 409 and out["error"] == "conflict"


async def test_permissions_on_every_write_endpoint(
    node: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    url = node["url"]
    new = {"title": "Perm", "method": "consent", "draft": True}
    who_may = {  # endpoint → the roles that may use it
        "create": {"org", "admin"},
        "open": {"org", "admin"},
        "close": {"org", "admin"},
        "ballot": {"m1", "org", "admin"},
    }
    for endpoint, allowed in who_may.items():
        for who in (None, "m1", "org", "admin"):
            p = await new_proposal(http, node, draft=endpoint == "open")
            if endpoint == "create":
                args: tuple[Any, ...] = ("POST", f"{url}/api/proposals", None, new)
            elif endpoint == "ballot":
                args = ("POST", f"{url}/api/proposals/{p['id']}/ballots", None, {"choice": "agree"})
            else:
                args = ("POST", f"{url}/api/proposals/{p['id']}/{endpoint}", None, None)
            status, out = await call(
                http, args[0], args[1], tok(node, who) if who else None, args[3]
            )
            want = 401 if who is None else (201 if endpoint in ("create", "ballot") else 200)
            if who is not None and who not in allowed:
                want = 403
            assert status == want, (endpoint, who, out)


async def test_removed_member_token_is_refused_and_login_link_is_one_time(
    node: dict[str, Any], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url, data = node["url"], node["data"]
    gone = json.loads(run_process("member", "add", "Temp", "--data", str(data), "--json").stdout)
    status, _ = await call(http, "GET", f"{url}/api/proposals", gone["token"])
    assert status == 200
    login_token = gone["login_url"].rsplit("/", 1)[1]
    status, first = await call(http, "POST", f"{url}/api/login", body={"token": login_token})
    assert status == 200 and first["member"]["id"] == gone["id"]
    status, replay = await call(http, "POST", f"{url}/api/login", body={"token": login_token})
    assert status == 401, replay
    run_process("member", "remove", gone["id"], "--data", str(data))
    status, out = await call(http, "GET", f"{url}/api/proposals", gone["token"])
    assert status == 401 and "removed" in out["detail"]
    # The database holds only hashes of secrets.
    conn = sqlite3.connect(data / "convene.sqlite3")
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert node["people"]["m1"]["token"] not in dump and login_token not in dump


async def test_bodies_arriving_in_pieces(node: dict[str, Any], http: aiohttp.ClientSession) -> None:
    """A body sent chunked, without Content-Length, is read whole; over the limit is 413."""

    async def pieces(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
        for at in range(0, len(data), size):
            yield data[at : at + size]

    text = "Long deliberation. " * 900  # about 17 kB, under the 64 KiB limit
    body = json.dumps({"title": "Long one", "body": text, "method": "consent"}).encode()
    headers = {"Authorization": f"Bearer {tok(node, 'org')}", "Content-Type": "application/json"}
    async with http.post(f"{node['url']}/api/proposals", data=pieces(body), headers=headers) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["body"] == text
    huge = json.dumps({"title": "x", "body": "y" * 70_000, "method": "consent"}).encode()
    async with http.post(f"{node['url']}/api/proposals", data=pieces(huge), headers=headers) as r:
        assert r.status == 413
        assert (await r.json())["error"] == "too_large"


def test_docs_show_every_api_route() -> None:
    """docs/api.md carries a real exchange for every route the JSON API serves."""
    from aiohttp import web

    from node.api import add_routes

    app = web.Application()
    add_routes(app)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    shown = re.findall(r"^(GET|POST) (/api/\S+)$", docs, flags=re.MULTILINE)
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        pattern = re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "$")
        assert any(m == route.method and pattern.match(p) for m, p in shown), (
            f"{route.method} {path} is not shown in docs/api.md"
        )


async def test_the_answer_states_the_block_limit_the_question_signs(
    node: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    url = node["url"]
    consent = await new_proposal(http, node, block_limit=2)
    choice = await new_proposal(http, node, method="choice", options=["Hall", "Park"])
    assert consent["block_limit"] == 2 and choice["block_limit"] is None
    status, got = await call(http, "GET", f"{url}/api/proposals/{consent['id']}", tok(node, "m1"))
    assert status == 200 and got["block_limit"] == 2
    signed = next(e for e in chain_entries(node["data"]) if e["id"] == consent["object_id"])
    assert signed["block_limit"] == got["block_limit"]
    status, listing = await call(http, "GET", f"{url}/api/proposals", tok(node, "m1"))
    by_id = {item["id"]: item for item in listing["items"]}
    assert by_id[consent["id"]]["block_limit"] == 2 and by_id[choice["id"]]["block_limit"] is None


async def test_a_region_that_approves_followers_keeps_a_join_pending_until_approved(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    region_data, chapter_data = tmp_path / "region", tmp_path / "chapter"
    region_port, chapter_port = free_port(), free_port()
    init_node(region_data, region_port, kind="region")
    chapter_init = init_node(chapter_data, chapter_port)
    rita = add_member(region_data, "Rita", "organizer")["token"]
    olga = add_member(chapter_data, "Olga", "organizer")["token"]
    region = NodeProcess(
        region_data, region_port, tmp_path / "region.log", extra=["--approve-followers"]
    )
    chapter = NodeProcess(chapter_data, chapter_port, tmp_path / "chapter.log")
    region.start()
    chapter.start()
    try:
        headers = {"Accept": "application/activity+json"}
        async with http.get(f"{region.url}/actor", headers=headers) as r:
            assert (await r.json(content_type=None))["manuallyApprovesFollowers"] is True

        async def states() -> tuple[list[Any], list[Any]]:
            _, mine = await call(http, "GET", f"{chapter.url}/api/federation", olga)
            _, theirs = await call(http, "GET", f"{region.url}/api/federation", rita)
            return mine["following"], theirs["followers"]

        status, _ = await call(
            http, "POST", f"{chapter.url}/api/federation/join", olga, {"region": region.url}
        )
        assert status == 202
        for _ in range(100):  # the Follow arrives; the region holds it for an organizer
            following, followers = await states()
            if followers:
                break
            await asyncio.sleep(0.1)
        assert [(f["actor"], f["state"]) for f in followers] == [(chapter_init["actor"], "pending")]
        await asyncio.sleep(1.0)  # nothing accepts it behind the organizer's back
        following, followers = await states()
        assert [f["state"] for f in following] == ["requested"]
        assert [f["state"] for f in followers] == ["pending"]

        status, out = await call(
            http,
            "POST",
            f"{region.url}/api/federation/followers/approve",
            rita,
            {"actor": chapter_init["actor"]},
        )
        assert status == 200 and out["state"] == "accepted", out
        for _ in range(100):  # the Accept is delivered to the chapter
            following, followers = await states()
            if following and following[0]["state"] == "accepted":
                break
            await asyncio.sleep(0.1)
        assert [f["state"] for f in following] == ["accepted"]
        assert [f["state"] for f in followers] == ["accepted"]
    finally:
        chapter.stop()
        region.stop()


async def test_the_answer_counts_member_signed_and_custodial_ballots(
    node: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    key = SigningKey(b"\x33" * 32)
    mia = node["people"]["m1"]
    status, out = await call(
        http,
        "POST",
        f"{node['url']}/api/members/me/keys",
        mia["token"],
        {"key": key.verify_key.multibase, "label": "api test"},
    )
    assert status == 201, out
    p = await new_proposal(http, node, title="Signed and custodial")
    url = f"{node['url']}/api/proposals/{p['id']}"
    signed = sign_member_ballot(key, p["object_id"], mia["id"], 1, {"choice": "agree"})
    body = {name: getattr(signed, name) for name in signed.__struct_fields__}
    status, out = await call(http, "POST", f"{url}/ballots", mia["token"], body)
    assert (status, out["custody"]) == (201, "member-signed"), out
    for who in ("m2", "m3"):
        status, out = await call(
            http, "POST", f"{url}/ballots", tok(node, who), {"choice": "agree"}
        )
        assert (status, out["custody"]) == (201, "custodial"), out
    status, out = await call(http, "GET", url, tok(node, "m2"))
    assert status == 200 and (out["signed"], out["custodial"]) == (None, None), out
    status, out = await call(http, "POST", f"{url}/close", tok(node, "org"))
    assert status == 200 and out["tally"]["cast"] == 3, out
    status, out = await call(http, "GET", url, tok(node, "m2"))
    assert status == 200 and (out["signed"], out["custodial"]) == (1, 2), out
