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

from node.federation_glue import ACTORS_KEY
from node.members import Member
from node.proposal_forms import NewProposal
from node.web import WEB_KEY
from node.web.session import COOKIE
from protocol import aggregate, ballots, chain, counting
from protocol.tally import Tally

HILL, VALE, DUNE = (f"https://{n}.example/actor" for n in ("hill", "vale", "dune"))


def spec(chapters: tuple[str, ...]) -> dict[str, object]:
    return {
        "method": "choice",
        "options": ("May", "June"),
        "quorum": "1/4",
        "scope": "regional",
        "rule": "pooled",
        "chapters": chapters,
    }


@pytest_asyncio.fixture
async def region(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, web.AppRunner]]:
    live, runner = await start_node(tmp_path / "region", "North Region", "region")
    yield live, runner
    await runner.cleanup()


def chapter_tally(
    chapters: tuple[str, ...],
    chapter: str,
    picks: list[str],
    eligible: int,
    object_id: str,
    digest: str,
) -> Tally:
    typed_spec = ballots.parse_spec(spec(chapters))
    typed = [ballots.validate_ballot(typed_spec, {"choice": c}) for c in picks]
    receipts = [hashlib.sha256(f"{chapter}{i}".encode()).hexdigest() for i in range(len(picks))]
    return counting.make_tally(
        typed_spec,
        chapter=chapter,
        proposal=object_id,
        proposal_digest=digest,
        ballots=typed,
        receipts=receipts,
        eligible=eligible,
        roster_root="ab" * 32,
        roster_size=eligible,
    )


async def decided(
    live: LiveNode,
    lead: Member,
    verification: str,
    extra: dict[str, str],
    chapters: tuple[str, ...] = (HILL, VALE, DUNE),
) -> str:
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
        chapters=list(chapters),
        quorum="1/4",
    )
    view = await live.services.proposals.create(lead, form)
    closed = await live.services.proposals.close(lead, view.id)
    assert closed.status == "closed" and closed.tally is None and view.object_id is not None
    question = next(e for e in await live.services.ledger.entries() if e["id"] == view.object_id)
    digest = chain.entry_digest(question)
    first, second = chapters[0], chapters[1]
    tallies = [
        chapter_tally(chapters, first, ["May", "May", "June"], 5, view.object_id, digest),
        chapter_tally(chapters, second, ["June"], 8, view.object_id, digest),  # below quorum
    ]
    pairs = [(hashlib.sha256(t.chapter.encode()).hexdigest(), t) for t in tallies]
    decision = aggregate.aggregate(
        ballots.parse_spec(spec(chapters)), pairs, proposal=view.object_id, proposal_digest=digest
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


ROW = re.compile(
    r'<tr(?: class="own")?><th scope="row"><a href="([^"]+)" title="\1" rel="nofollow">'
    r'([^<]+)</a>( <span class="own-chapter">\(this chapter\)</span>)?</th>'
    r"<td>([^<]+)</td><td>(\d+)</td><td>(\d+)</td>\s*<td>([^<]+)</td>"
)


def chapter_rows(html: str) -> list[tuple[str, ...]]:
    """The by-chapter table: (actor link, name shown, own mark, status, voted, members,
    result) per row."""
    return [tuple(m) for m in ROW.findall(html)]


async def test_regional_results_show_each_chapter_and_the_verified_badge(
    region: tuple[LiveNode, web.AppRunner],
) -> None:
    live, runner = region
    lead = (await live.services.members.add("Rui", "organizer")).member
    proposal = await decided(live, lead, "verified", {})
    html = await fetch(runner, live, lead, f"/proposals/{proposal}/results")
    assert '<span class="badge verified">verified</span>' in html
    assert "got the same result" in html
    assert chapter_rows(html) == [
        (HILL, "hill.example", "", "counted", "3", "5", "May"),
        (VALE, "vale.example", "", "below quorum", "1", "8", "not adopted"),
        (DUNE, "dune.example", "", "no tally", "0", "0", "–"),
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


async def test_chapters_are_named_by_their_actor_documents(
    region: tuple[LiveNode, web.AppRunner], tmp_path: Path
) -> None:
    """A chapter whose actor document the region holds is shown by its name; one it never
    fetched by its host (with the port, so loopback chapters stay apart); this node's own
    row is marked, and the actor id stays on each row for auditors."""
    live, runner = region
    hill, hill_runner = await start_node(tmp_path / "hill", "Hill & Dale <Chapter>")
    gone = "http://127.0.0.1:9/actor"  # never fetched: no name known
    try:
        # the region fetches the chapter's actor as it does to check a tally's signature
        fetched = await runner.app[ACTORS_KEY].get(hill.services.identity.actor)
        assert fetched.name == "Hill & Dale <Chapter>"
        lead = (await live.services.members.add("Rui", "organizer")).member
        own = live.services.identity.actor  # a region never lists itself; here it checks the mark
        chapters = (hill.services.identity.actor, gone, own)
        proposal = await decided(live, lead, "verified", {}, chapters)
        await hill_runner.cleanup()  # the page reads the cache, never the chapter itself
        html = await fetch(runner, live, lead, f"/proposals/{proposal}/results")
    finally:
        await hill_runner.cleanup()
    mark = ' <span class="own-chapter">(this chapter)</span>'
    assert chapter_rows(html) == [
        (chapters[0], "Hill &amp; Dale &lt;Chapter&gt;", "", "counted", "3", "5", "May"),
        (gone, "127.0.0.1:9", "", "below quorum", "1", "8", "not adopted"),
        (own, "North Region", mark, "no tally", "0", "0", "–"),
    ]
    assert html.count("(this chapter)") == 1
