"""Render time of the web pages a member sees most: home, a proposal, its results.

A real node (its own create_app, a real SQLite file, real HTTP on 127.0.0.1) holds a
chapter of 1,000 members and 200 proposals (150 open, 50 closed with ballots cast).
A logged-in client fetches each page in turn and times the whole request. The floor
is a plain aiohttp handler on the same machine returning the very same bytes, so the
ratio is what rendering (queries, Jinja2, charts) costs over just serving the bytes.

    python bench/pages.py [--quick]

Ends with one line: RESULT p95_ms=... ratio=... (worst page) and per-page figures.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from node.api import SERVICES_KEY
from node.app import create_app
from node.bootstrap import init_node
from node.config import load_config
from node.proposal_forms import NewProposal
from node.web import WEB_KEY
from node.web.session import COOKIE

MEMBERS = 1000
PROPOSALS = 200
CLOSED = 50
BALLOTS_PER_CLOSED = 40
METHODS = ("consent", "choice", "approval", "ranked", "score")
OPTIONS = ["Rent strike support", "Tenant union drive", "Transit campaign", "Park cleanup"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ballot(method: str, i: int) -> object:
    pick = OPTIONS[i % len(OPTIONS)]
    return {
        "consent": {"choice": ("agree", "agree", "abstain", "disagree", "block")[i % 5]},
        "choice": {"choice": pick},
        "approval": {"choices": OPTIONS[: 1 + i % 3]},
        "ranked": {"ranking": OPTIONS[i % 4 :] + OPTIONS[: i % 4]},
        "score": {"scores": {o: (i + j) % 6 for j, o in enumerate(OPTIONS)}},
    }[method]


async def seed(app: web.Application) -> tuple[str, str, str]:
    """Fill the chapter; return (an organizer's id, an open and a closed proposal id).

    The chain grows to about 1,450 entries (genesis, 1,001 roster changes, 200
    questions, 50 tallies), which is what the audit page re-verifies."""
    services = app[SERVICES_KEY]
    organizer = (await services.members.add("Organizer", "organizer")).member
    members = [organizer]
    for start in range(1, MEMBERS, 50):  # concurrent adds share the writer; order is free
        batch = [services.members.add(f"Member {i}") for i in range(start, start + 50)]
        members += [added.member for added in await asyncio.gather(*batch)]
    ids = []
    for i in range(PROPOSALS):
        method = METHODS[i % len(METHODS)]
        form = NewProposal(
            title=f"Proposal {i}: what we do next about item {i}",
            body="We propose to act together.\n\nHere is why, in some detail. " * 3,
            method=method,
            options=[] if method == "consent" else OPTIONS,
            quorum="1/10",
            closes_at="2099-01-01T00:00:00Z",
        )
        ids.append((await services.proposals.create(organizer, form)).id)
    for i, proposal_id in enumerate(ids[:CLOSED]):
        method = METHODS[i % len(METHODS)]
        casts = [
            services.proposals.cast(members[j], proposal_id, ballot(method, j))
            for j in range(BALLOTS_PER_CLOSED)
        ]
        await asyncio.gather(*casts)
        await services.proposals.close(organizer, proposal_id)
    return organizer.id, ids[-1], ids[0]


async def timed_gets(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    for _ in range(3):  # warm up: template compilation, caches
        async with session.get(url) as r:
            await r.read()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        async with session.get(url) as r:
            await r.read()
            assert r.status == 200, (url, r.status)
        out.append((time.perf_counter() - t) * 1000)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


async def main(quick: bool) -> None:
    n = 40 if quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        await init_node(data, name="Bench Chapter", url=url, kind="chapter")
        app = create_app(load_config(data, {"port": port}))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        t = time.perf_counter()
        organizer, open_id, closed_id = await seed(app)
        print(f"seeded {MEMBERS} members, {PROPOSALS} proposals in {time.perf_counter() - t:.1f}s")
        cookie = app[WEB_KEY].codec.issue(organizer, time.time())
        pages = {"home": "/", "proposal": f"/proposals/{open_id}"}
        pages["results"] = f"/proposals/{closed_id}/results"
        pages["audit"] = "/audit"  # re-verifies the whole chain: shown, not in the verdict

        jar = aiohttp.CookieJar(unsafe=True)  # cookies for a bare IP address
        jar.update_cookies({COOKIE: cookie}, aiohttp.client.URL(url))
        bodies: dict[str, bytes] = {}
        page_ms: dict[str, list[float]] = {}
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            for name, path in pages.items():
                async with session.get(url + path) as r:
                    bodies[name] = await r.read()
                page_ms[name] = await timed_gets(session, url + path, n)

        # Where the home page's time goes: the proposals service's list alone.
        service_ms = []
        for _ in range(n):
            t = time.perf_counter()
            await app[SERVICES_KEY].proposals.all()
            service_ms.append((time.perf_counter() - t) * 1000)

        floor_port = free_port()
        floor = web.Application()

        def same_bytes(body: bytes) -> web.Response:
            return web.Response(body=body, content_type="text/html")

        for name, body in bodies.items():
            floor.router.add_get(f"/{name}", lambda _r, b=body: _async(same_bytes(b)))
        floor_runner = web.AppRunner(floor, access_log=None)
        await floor_runner.setup()
        await web.TCPSite(floor_runner, "127.0.0.1", floor_port).start()
        floor_ms: dict[str, list[float]] = {}
        async with aiohttp.ClientSession() as session:
            for name in pages:
                floor_ms[name] = await timed_gets(
                    session, f"http://127.0.0.1:{floor_port}/{name}", n
                )
        await floor_runner.cleanup()
        await runner.cleanup()

    print(f"{'page':<10}{'bytes':>8}{'p50 ms':>9}{'p95 ms':>9}{'floor p95':>11}{'ratio':>8}")
    results = []
    for name in pages:
        page_p95, floor_p95 = p95(page_ms[name]), p95(floor_ms[name])
        ratio = page_p95 / floor_p95
        results.append((name, page_p95, ratio))
        print(
            f"{name:<10}{len(bodies[name]):>8}{statistics.median(page_ms[name]):>9.2f}"
            f"{page_p95:>9.2f}{floor_p95:>11.2f}{ratio:>8.1f}"
        )
    print(f"of which proposals.all() (service, {PROPOSALS} views): p95 {p95(service_ms):.2f} ms")
    worst = max((r for r in results if r[0] != "audit"), key=lambda r: r[1])
    verdict = "under" if worst[1] < 50 else "OVER"
    print(f"worst p95 of home/proposal/results {worst[1]:.1f} ms ({worst[0]}): {verdict} 50 ms")
    per_page = " ".join(f"{name}_p95_ms={ms:.2f}" for name, ms, _ in results)
    print(f"RESULT p95_ms={worst[1]:.2f} ratio={worst[2]:.1f} {per_page}")


async def _async(response: web.Response) -> web.Response:
    return response


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (under 30 s)")
    asyncio.run(main(parser.parse_args().quick))
