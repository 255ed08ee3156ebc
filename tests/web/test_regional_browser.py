"""A real regional vote seen in a real Chromium: one region and three chapters as
`convene serve` processes on loopback (node/demo.py's `Cluster`), two chapters agree
and one disagrees, and a chapter organizer opens the results page on their own node.

What a person sees there must be the decision the chapter recounted itself from the
signed tallies (docs/protocol.md §8.5), so it must not change when the region's
server goes away.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from livenode import ARTIFACTS, use_link
from playwright.async_api import Browser, Page

from node.demo import Cluster

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLOSES_IN = 6  # seconds: time for three chapters to open the proposal and vote, loaded
GRACE = 5  # --regional-grace-s: how long after close a late tally still counts
BALLOTS = {
    "Riverside": ["agree", "agree", "abstain"],
    "Hillcrest": ["agree", "agree", "disagree"],
    "Lakeview": ["disagree", "disagree", "agree"],  # below consent's threshold here
}


@pytest_asyncio.fixture(loop_scope="session")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("regional"), list(BALLOTS), grace_s=GRACE) as c:
        await c.create(members_per_chapter=3, start=True)
        await c.join()
        yield c


async def run_vote(cluster: Cluster) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The region proposes, every chapter votes; each chapter's local id and settled view."""
    proposal = await cluster.propose(
        CLOSES_IN,
        title="Join the regional tenants' union campaign",
        body="Each chapter votes; the region aggregates the signed tallies.",
        method="consent",
        rule="double-majority",
        quorum="1/2",
    )
    local: dict[str, str] = {}
    for chapter in cluster.chapters:
        local[chapter.name] = await cluster.adopted(chapter, proposal["object_id"])
        ballots = [{"choice": c} for c in BALLOTS[chapter.name]]
        await cluster.vote(chapter, local[chapter.name], ballots)
    views = {c.name: await cluster.settled(c, local[c.name], timeout=40) for c in cluster.chapters}
    return local, views


async def results_seen(page: Page) -> dict[str, Any]:
    """What the results page shows, read as a person reads it."""
    rows = []
    for row in await page.locator("#chapters tbody tr").all():
        cells = [" ".join(c.split()) for c in await row.locator("th, td").all_inner_texts()]
        # the chapter's actor id, kept on its name for auditors
        rows.append((await row.locator("th a").get_attribute("title"), *cells))
    turnout = page.locator("#region-h ~ svg.chart.turnout")
    return {
        "outcome": " ".join((await page.inner_text("#outcome")).split()),
        "badge": (await page.inner_text("#verification .badge")).strip(),
        "verification": " ".join((await page.inner_text("#verification")).split()),
        "region": " ".join((await page.inner_text("section[aria-labelledby=region-h]")).split()),
        "turnout": await turnout.get_attribute("aria-label"),
        "rows": rows,
        "own": " ".join((await page.inner_text("section[aria-labelledby=turnout-h] p")).split()),
    }


async def test_a_chapter_shows_the_verified_regional_decision_without_the_region(
    browser: Browser, cluster: Cluster
) -> None:
    started = time.monotonic()
    local, views = await run_vote(cluster)
    riverside = cluster.chapters[0]
    decision = views["Riverside"]["decision"]
    assert decision["outcome"]["result"] == "passed"  # two chapters of three, 5 of 9 agree

    ctx = await browser.new_context(viewport={"width": 412, "height": 915})
    try:
        page = await ctx.new_page()
        await use_link(page, riverside.organizer["login_url"], passphrase=None)
        results = riverside.url + f"/proposals/{local['Riverside']}/results"
        await page.goto(results)
        seen = await results_seen(page)

        assert seen["outcome"] == "Passed"
        assert seen["badge"] == "verified"
        assert (
            "recounted the decision from the signed tallies and got the same result"
            in (seen["verification"])
        )
        assert "a majority of members and a majority of chapters" in seen["region"]
        assert "3 of 3 chapters counted" in seen["region"]
        actor = {c.actor: c.name for c in cluster.chapters}
        # each row shows its chapter's own name (this node's row marked), never an URL
        names = [r[1] for r in seen["rows"]]
        assert sorted(names) == sorted(["Riverside (this chapter)", "Hillcrest", "Lakeview"])
        by_name = {r[1].removesuffix(" (this chapter)"): r for r in seen["rows"]}
        assert set(by_name) == set(BALLOTS)  # every chapter, each named once
        for name, picks in BALLOTS.items():
            chapter_result = next(
                c for c in decision["chapters"] if actor.get(c["chapter"]) == name
            )
            shown = "Passed" if picks.count("agree") >= 2 else "not adopted"
            link, _, status, voted, members, result = by_name[name]
            assert actor[link] == name  # the name is that of the actor the row links
            assert (status, voted) == ("counted", str(len(picks)))
            assert members == str(chapter_result["eligible"])
            assert result.lower() == shown.lower(), (name, result)
        cast, eligible = decision["cast"], decision["eligible"]
        assert cast == sum(len(p) for p in BALLOTS.values())
        percent = round(100 * cast / eligible)
        assert seen["turnout"] == (
            f"Turnout: {cast} of {eligible} members voted ({percent}%); quorum 50%; quorum met"
        )
        own = next(c for c in decision["chapters"] if c["chapter"] == riverside.actor)
        assert seen["own"] == (
            f"3 of {own['eligible']} members voted. Quorum: 1/2 of members had to vote."
        )
        # Wide enough that the by-chapter table shows every column in the picture.
        await page.set_viewport_size({"width": 760, "height": 915})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "regional.png"), full_page=True)

        # The region's server goes away; the chapter kept the signed entries and its own
        # recount, so the page a member sees does not change.
        cluster.region.stop()
        assert cluster.region.proc is None
        await page.goto(results)
        assert await results_seen(page) == seen
    finally:
        await ctx.close()
    assert time.monotonic() - started < 60
