"""Which actors a crawl goes on to from one chain (federation/crawl.py)."""

from __future__ import annotations

from federation.crawl import _named_actors

REGION = "https://region.example/actor"


def test_a_crawl_follows_followers_chapters_cited_authors_and_facilitators() -> None:
    chain = [
        {"type": "Accept", "actor": REGION, "follower": "https://a.example/actor"},
        {
            "type": "Question",
            "actor": REGION,
            "chapters": ["https://b.example/actor", "not a url"],
        },
        {"type": "Tally", "actor": REGION, "proposal": "https://c.example/actor/entries/4"},
        {"type": "FacilitatorGrant", "actor": REGION, "facilitator": "https://d.example/actor"},
        # a field of that name on another type names nobody to crawl
        {"type": "Note", "actor": REGION, "facilitator": "https://e.example/actor"},
        {"type": "Accept", "actor": REGION, "follower": REGION},  # never itself
    ]
    assert _named_actors(chain, REGION) == [
        "https://a.example/actor",
        "https://b.example/actor",
        "https://c.example/actor",
        "https://d.example/actor",
    ]
