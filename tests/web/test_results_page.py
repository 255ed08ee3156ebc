"""The results page over HTTP for a regional proposal: the region's counts, the
per-chapter breakdown and the verified / disputed badge, from signed entries."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from aiohttp import ClientSession, CookieJar, web
from livenode import LiveNode, start_node
from yarl import URL

from node.members import Member
from node.proposal_forms import NewProposal
from node.web import WEB_KEY
from node.web.session import COOKIE
from protocol import aggregate, ballots, chain, counting
from protocol.tally import Tally

HILL, VALE, DUNE = (f"https://{n}.example/actor" for n in ("hill", "vale", "dune"))
SPEC = {
    "method": "choice",
    "options": ("May", "June"),
    "quorum": "1/4",
    "scope": "regional",
    "rule": "pooled",
    "chapters": (HILL, VALE, DUNE),
}


@pytest_asyncio.fixture
async def region(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, web.AppRunner]]:
    live, runner = await start_node(tmp_path / "region", "North Region", "region")
    yield live, runner
    await runner.cleanup()


def chapter_tally(
    chapter: str, picks: list[str], eligible: int, object_id: str, digest: str
) -> Tally:
    spec = ballots.parse_spec(SPEC)
    typed = [ballots.validate_ballot(spec, {"choice": c}) for c in picks]
    receipts = [hashlib.sha256(f"{chapter}{i}".encode()).hexdigest() for i in range(len(picks))]
    return counting.make_tally(
        spec,
        chapter=chapter,
        proposal=object_id,
        proposal_digest=digest,
        ballots=typed,
        receipts=receipts,
        eligible=eligible,
        roster_root="ab" * 32,
        roster_size=eligible,
    )


async def decided(live: LiveNode, lead: Member, verification: str, extra: dict[str, str]) -> str:
    """A regional proposal closed on the region and decided from two chapters' tallies.

    The region counts no ballots itself; the decision is what protocol/aggregate.py
    makes of the chapters' tallies (built here as chapters would sign them).
    """
    form = NewProposal(
        title="Regional day of action",
        method="choice",
        options=["May", "June"],
        scope="regional",
        rule="pooled",
        chapters=[HILL, VALE, DUNE],
        quorum="1/4",
    )
    view = await live.services.proposals.create(lead, form)
    closed = await live.services.proposals.close(lead, view.id)
    assert closed.status == "closed" and closed.tally is None and view.object_id is not None
    question = next(e for e in await live.services.ledger.entries() if e["id"] == view.object_id)
    digest = chain.entry_digest(question)
    tallies = [
        chapter_tally(HILL, ["May", "May", "June"], 5, view.object_id, digest),
        chapter_tally(VALE, ["June"], 8, view.object_id, digest),  # below the 1/4 quorum
    ]
    pairs = [(hashlib.sha256(t.chapter.encode()).hexdigest(), t) for t in tallies]
    decision = aggregate.aggregate(
        ballots.parse_spec(SPEC), pairs, proposal=view.object_id, proposal_digest=digest
    )
    body = {**aggregate.decision_body(decision), **extra}
    await live.services.proposals.record_decision(view.id, body, verification)
    return view.id


async def fetch(runner: web.AppRunner, live: LiveNode, member: Member, path: str) -> str:
    cookie = runner.app[WEB_KEY].codec.issue(member.id, time.time())
    jar = CookieJar(unsafe=True)  # a bare IP address
    jar.update_cookies({COOKIE: cookie}, URL(live.url))
    async with ClientSession(cookie_jar=jar) as session, session.get(live.at(path)) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.text()


async def test_regional_results_show_each_chapter_and_the_verified_badge(
    region: tuple[LiveNode, web.AppRunner],
) -> None:
    live, runner = region
    lead = (await live.services.members.add("Rui", "organizer")).member
    proposal = await decided(live, lead, "verified", {})
    html = await fetch(runner, live, lead, f"/proposals/{proposal}/results")
    assert '<span class="badge verified">verified</span>' in html
    assert "got the same result" in html
    rows = re.findall(
        r'<tr><th scope="row">([^<]+)</th><td>([^<]+)</td><td>(\d+)</td><td>(\d+)</td>\s*'
        r"<td>([^<]+)</td>",
        html,
    )
    assert rows == [
        (HILL, "counted", "3", "5", "May"),
        (VALE, "below quorum", "1", "8", "not adopted"),
        (DUNE, "no tally", "0", "0", "–"),
    ]
    assert "1 of 3 chapters counted" in html
    # The region's chart sums only the counted chapter: May 2, June 1.
    assert "Votes per option: May: 2 votes (winner); June: 1 vote" in html
    assert "3 of 5 members voted (60%)" in html
    assert "This chapter" not in html  # the region has no tally of its own
    # While open, the region's page explains who votes instead of offering a ballot.
    form = NewProposal(title="Open", method="consent", scope="regional", chapters=[HILL])
    still_open = await live.services.proposals.create(lead, form)
    page = await fetch(runner, live, lead, f"/proposals/{still_open.id}")
    assert "Members vote on this in their own chapters" in page
    assert 'class="ballot"' not in page


async def test_disputed_decision_says_so_and_why(region: tuple[LiveNode, web.AppRunner]) -> None:
    live, runner = region
    lead = (await live.services.members.add("Rui", "organizer")).member
    why = "decision field 'outcome' differs from the recount"
    proposal = await decided(live, lead, "disputed", {"dispute": why})
    html = await fetch(runner, live, lead, f"/proposals/{proposal}/results")
    assert '<span class="badge disputed">disputed</span>' in html
    assert "<strong>different</strong> result" in html
    assert why.replace("'", "&#39;") in html
