"""End to end on loopback: one region and two chapters as real `convene serve`
processes discover each other (WebFinger → actor), join, get accepted, leave; every
outbox is fetched and its chain verified with protocol/chain.py."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.client import FederationClient
from federation.documents import parse_actor, self_link
from federation.routes import context_document
from node.federation_glue import with_follow_service
from protocol import (
    agenda,
    audit_nesting,
    ballots,
    chain,
    events,
    facilitation,
    member_ballots,
    multiwinner,
    timepoll,
)
from protocol.keys import SigningKey

CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, root: Path, name: str, kind: str) -> None:
        self.data = root / name
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = subprocess.run(
            [
                *CONVENE,
                "init",
                "--name",
                name,
                "--url",
                self.url,
                "--kind",
                kind,
                "--data",
                str(self.data),
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        self.actor = json.loads(out.stdout)["actor"]
        self.log = (root / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [
                *CONVENE,
                "serve",
                "--data",
                str(self.data),
                "--port",
                str(self.port),
                "--allow-private-network",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (
                self.data.parent / f"{self.data.name}.log"
            ).read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.url} did not start")

    def following(self) -> list[tuple[str, str]]:
        with sqlite3.connect(f"file:{self.data}/convene.sqlite3?mode=ro", uri=True) as db:
            return [tuple(r) for r in db.execute("SELECT target, state FROM fed_following")]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _glue(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"from node.federation_glue import {command}; {command}()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    root = tmp_path_factory.mktemp("federation")
    specs = {
        "region": ("North Region", "region"),
        "a": ("Riverside", "chapter"),
        "b": ("Hillside", "chapter"),
    }
    with ThreadPoolExecutor(3) as pool:  # init makes an RSA key: do the three at once
        futures = {k: pool.submit(Node, root, name, kind) for k, (name, kind) in specs.items()}
        made = {k: f.result() for k, f in futures.items()}
    try:
        for node in made.values():
            node.wait_ready()
        yield made
    finally:
        for node in made.values():
            node.stop()


async def _eventually(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def _chain(client: FederationClient, actor: dict[str, Any]) -> list[dict[str, Any]]:
    collection = await client.get_json(actor["outbox"])
    entries: list[dict[str, Any]] = []
    page = collection.get("first")
    while page:
        body = await client.get_json(page)
        entries += body["orderedItems"]
        page = body.get("next")
    assert len(entries) == collection["totalItems"]
    return entries


async def test_region_and_chapters_discover_join_accept_and_leave(nodes: dict[str, Node]) -> None:
    region, a, b = nodes["region"], nodes["a"], nodes["b"]
    async with FederationClient(signer=None, allow_private_network=True) as client:
        # Discovery: the base URL answers AS2 with the actor; WebFinger finds it too.
        document = await client.get_json(region.url)
        actor = parse_actor(document, expected_id=region.actor)
        handle = f"acct:{actor.username}@127.0.0.1:{region.port}"
        jrd = await client.get_json(
            f"{region.url}/.well-known/webfinger?resource={handle}", accept="application/jrd+json"
        )
        assert self_link(jrd, handle) == region.actor

        # Join: one chapter by handle, one by base URL.
        joined_a = _glue(
            "join_command", handle, "--data", str(a.data), "--json", "--allow-private-network"
        )
        assert joined_a.returncode == 0, joined_a.stderr
        assert json.loads(joined_a.stdout)["region"] == region.actor
        joined_b = _glue(
            "join_command", region.url, "--data", str(b.data), "--json", "--allow-private-network"
        )
        assert joined_b.returncode == 0, joined_b.stderr

        async def both_followers() -> bool:
            followers = await client.get_json(document["followers"])
            return sorted(followers["orderedItems"]) == sorted([a.actor, b.actor])

        await _eventually(both_followers)

        async def accepted() -> bool:
            return a.following() == [(region.actor, "accepted")] and b.following() == [
                (region.actor, "accepted")
            ]

        await _eventually(accepted)

        # The Accepts are entries of the region's chain, and every chain verifies.
        entries = await _chain(client, document)
        state = chain.verify_chain(entries)
        assert state.actor == region.actor
        accepts = [e for e in entries if e["type"] == "Accept"]
        assert sorted(e["follower"] for e in accepts) == sorted([a.actor, b.actor])
        assert all(e["object"].startswith(e["follower"] + "/follows/") for e in accepts)
        # The actor document's key is the chain's latest key.
        (published_key,) = document["assertionMethod"]
        assert published_key["id"] == state.key_id
        assert published_key["publicKeyMultibase"] == state.key.multibase

        # A chapter publishes to its region and the region's other chapters.
        recipients = await with_follow_service(a.data, True, lambda service: service.recipients())
        assert sorted(r.target for r in recipients) == sorted(
            [f"{region.url}/inbox", f"{b.url}/inbox"]
        )
        region_recipients = await with_follow_service(
            region.data, True, lambda service: service.recipients()
        )
        assert sorted(r.target for r in region_recipients) == sorted(
            [f"{a.url}/inbox", f"{b.url}/inbox"]
        )

        # Every project field of the entries is a term of the shipped context.
        assert _not_in_context(entries) == set()
        for chapter in (a, b):
            chapter_doc = await client.get_json(chapter.actor)
            assert chain.verify_chain(await _chain(client, chapter_doc)).actor == chapter.actor

        # Leave: Undo Follow removes chapter b from the region's followers.
        left = _glue(
            "leave_command", region.url, "--data", str(b.data), "--json", "--allow-private-network"
        )
        assert left.returncode == 0, left.stderr
        assert json.loads(left.stdout)["state"] == "left"

        async def only_a() -> bool:
            followers = await client.get_json(document["followers"])
            return bool(followers["orderedItems"] == [a.actor])

        await _eventually(only_a)
        # Joining again is accepted again, with a new Accept entry.
        again = _glue(
            "join_command", region.url, "--data", str(b.data), "--json", "--allow-private-network"
        )
        assert again.returncode == 0, again.stderr
        await _eventually(both_followers)


def test_join_names_bad_regions_clearly(nodes: dict[str, Node]) -> None:
    a, region = nodes["a"], nodes["region"]
    cases = [
        (f"acct:nobody@127.0.0.1:{region.port}", "not_found"),
        ("not a handle", "bad_resource"),
        (f"http://127.0.0.1:{_port()}/", "fetch_failed"),
        (a.url, "bad_follow"),  # itself
    ]
    for name, code in cases:
        done = _glue(
            "join_command", name, "--data", str(a.data), "--json", "--allow-private-network"
        )
        assert done.returncode == 1, done.stdout
        assert json.loads(done.stderr)["error"] == code, done.stderr
    # Without --allow-private-network a region on loopback is refused (SSRF guard).
    blocked = _glue("join_command", region.url, "--data", str(a.data), "--json")
    assert blocked.returncode == 1
    answer = json.loads(blocked.stderr)
    assert answer["error"] == "blocked_address" and "127.0.0.1" in answer["detail"]


def _member(node: Node, name: str, role: str) -> str:
    done = subprocess.run(
        [*CONVENE, "member", "add", name, "--role", role, "--data", str(node.data), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(done.stdout)["token"])


async def test_organizer_federation_api(nodes: dict[str, Node]) -> None:
    region, a = nodes["region"], nodes["a"]
    organizer, member = _member(a, "olga", "organizer"), _member(a, "mo", "member")
    region_organizer = _member(region, "rita", "organizer")
    async with aiohttp.ClientSession() as http:

        async def call(
            method: str, node: Node, path: str, token: str | None, body: Any = None
        ) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, node.url + path, headers=headers, json=body) as r:
                return r.status, await r.json()

        # Joining through the API (idempotent if the CLI test joined already).
        status, body = await call(
            "POST", a, "/api/federation/join", organizer, {"region": region.url}
        )
        assert status == 202 and body["region"] == region.actor

        async def accepted() -> bool:
            status, body = await call("GET", a, "/api/federation", organizer)
            assert status == 200
            return bool(
                body["following"]
                == [
                    {
                        "region": region.actor,
                        "state": "accepted",
                        "follow": body["following"][0]["follow"],
                    }
                ]
            )

        await _eventually(accepted)
        status, body = await call("GET", region, "/api/federation", region_organizer)
        assert status == 200 and a.actor in [f["actor"] for f in body["followers"]]
        assert (await call("GET", a, "/api/federation", None))[0] == 401
        assert (await call("GET", a, "/api/federation", member))[0] == 403
        status, body = await call("POST", a, "/api/federation/join", organizer, {"regio": "x"})
        assert status == 400 and body["error"] == "bad_request"
        status, body = await call(
            "POST",
            region,
            "/api/federation/followers/approve",
            region_organizer,
            {"actor": a.actor},
        )
        assert status == 404 and "no pending Follow" in body["detail"]
        # Joining the region again through the API is idempotent once accepted.
        status, body = await call(
            "POST", a, "/api/federation/join", organizer, {"region": region.url}
        )
        assert status == 202 and body["state"] == "accepted"


# Fields and types the entries take from ActivityStreams 2.0 and Data Integrity, whose
# contexts come first in every entry's @context (§1); everything else must be ours.
_SHARED_FIELDS = {"@context", "id", "type", "actor", "object", "published", "proof"}
_AS2_FIELDS = {"name", "startTime", "endTime", "location", "url", "summary"}
_AS2_TYPES = {"Accept", "Collection", "Event", "Follow", "Note", "Place", "Question"}
# Objects in another vocabulary as a whole: Data Integrity proofs, Multikeys (security
# context), and a ballot, which our context types as @json.
_OPAQUE = {"proof", "assertionKey", "ballot"}


def _not_in_context(bodies: list[dict[str, Any]]) -> set[str]:
    """Field names and `type` values of `bodies` (nested objects included) that are
    neither a term of the shipped context nor AS2's / Data Integrity's."""
    terms = set(json.loads(context_document())["@context"])
    missing: set[str] = set()
    for body in bodies:
        for key, value in body.items():
            if key not in terms | _SHARED_FIELDS | _AS2_FIELDS:
                missing.add(key)
            if key == "type" and value not in terms | _AS2_TYPES:
                missing.add(f"type {value}")
            if isinstance(value, dict) and key not in _OPAQUE:
                missing |= _not_in_context([value])
    return missing


def test_every_convening_body_field_is_a_context_term() -> None:
    """The convening bodies as protocol/'s own builders make them (§10), and a
    member-signed ballot statement: no field the shipped context leaves undefined."""
    region, chapter = "https://region.example/actor", "https://north.example/actor"
    digest = "ab" * 32
    event = events.event_body(
        "Spring assembly",
        "2026-12-05T14:00:00Z",
        "2026-12-05T18:00:00Z",
        location="Town hall",
        url="https://meet.example/spring",
        capacity=120,
        chapters=[chapter],
    )
    attendance = events.attendance_body(
        f"{region}/entries/3", digest, events.RsvpCounts(going=3, maybe=1), members=9
    )
    config = agenda.config_body("Spring", [chapter], min_sponsors=2, min_share="1/2")
    submission = agenda.submission_body(region, digest, "Rent strike", "Why and how")
    sponsorship = agenda.sponsorship_body(region, digest, digest)
    poll = timepoll.time_poll_spec(
        [
            ("2026-12-05T14:00:00Z", "2026-12-05T18:00:00Z"),
            ("2026-12-06T14:00:00Z", "2026-12-06T18:00:00Z"),
        ],
        chapters=[chapter],
    )
    demands = ballots.ProposalSpec(method="approval", options=("housing", "transit", "wages"))
    demands_question = {
        "type": "Question",
        **ballots.spec_fields(demands),
        "seats": multiwinner.check_seats(demands, 2),
        "agenda_item": digest,
    }
    signed = member_ballots.sign_member_ballot(
        SigningKey.from_seed(bytes(32)), f"{region}/proposals/p1", "m-1", 0, {"choices": ["x"]}
    )
    statement = json.loads(
        member_ballots.signed_ballot_payload(signed.proposal, signed.member, 0, signed.ballot)
    )
    bodies = [
        event,
        attendance,
        config,
        submission,
        sponsorship,
        {"type": "Question", **ballots.spec_fields(poll)},
        demands_question,
        statement,
        {k: getattr(signed, k) for k in signed.__struct_fields__},
        agenda.close_body(digest),
        facilitation.grant_body(chapter, "Spring assembly"),
        facilitation.revoke_body(digest),
        facilitation.request_body(region, digest, "propose", {"title": "Rent strike"}),
        {**demands_question, "requested_by": digest},
        audit_nesting.level_body(demands_question, digest, [chapter]),
    ]
    assert {"maximumAttendeeCapacity", "event_digest", "seats", "agenda_item"} <= {
        k for b in bodies for k in b
    }, "the builders still make the fields this test is about"
    assert _not_in_context(bodies) == set()
    # And the check itself bites: a field or type the context lacks is named.
    assert _not_in_context([{**config, "quorum_share": "1/2"}]) == {"quorum_share"}
    assert _not_in_context([{**attendance, "type": "Headcount"}]) == {"type Headcount"}
