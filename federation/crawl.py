"""Collect an audit bundle over HTTP: actors, their outboxes, and the chains they name.

Theory of operation. ``convene audit URL`` audits live nodes the way it audits an
exported file, so this module only *gathers* records; protocol/audit.py judges them.
From the starting URL it fetches the actor document (ActivityPub §3.2: GET with the
activity media types; a node's base URL answers with its actor), walks its outbox (an
``OrderedCollection``, paged with ``first``/``next``, oldest entry first, as
docs/protocol.md §5 says the chain is served), and then does the same for every actor
the chain names: the followers of ``Accept`` entries, the chapters a regional proposal
lists and a decision counts, and the authors of entries that tallies, decisions and
proposals refer to by id (``{actor}/entries/{seq}``), the chapters a lower region's
``Level`` names (§10.6), and the facilitators a region granted (§10.7). Two hops from
the start reach every chapter of a region and, from a chapter, its region and the
region's other chapters; each level of nesting (state → city → chapter) adds one, so the
bound is four: a state's cities' neighbourhood regions' chapters.

Everything fetched is hostile until the audit says otherwise, so every bound is
explicit: the client bounds each answer's bytes and time; here the number of actors,
pages per outbox and items overall are bounded, and a page loop is detected. Failures
are ``CrawlError`` naming the URL and what went wrong.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from federation.client import FederationClient, FetchError
from federation.errors import FederationError
from protocol.bundle import ActorRecord, Body, EntryRecord

ENTRY_ID = re.compile(r"^(https?://.+)/entries/\d+$")


class CrawlError(FederationError):
    """The crawl cannot go on: an answer is malformed or a bound is exceeded."""

    code = "crawl_failed"
    status = 502

    def __init__(self, detail: str, *, url: str, code: str | None = None) -> None:
        self.url = url
        super().__init__(f"{url}: {detail}", code=code)


class CrawlLimits(msgspec.Struct, frozen=True):
    max_actors: int = 500
    max_pages_per_outbox: int = 10_000
    max_items: int = 2_000_000
    max_hops: int = 4


async def crawl(
    url: str, client: FederationClient, limits: CrawlLimits | None = None
) -> tuple[str, list[Body]]:
    """Fetch the actor at ``url`` and every actor its chain names, with their chains.

    Returns the starting actor's id and the records (actors first, then each actor's
    entries oldest first), ready for ``protocol.audit.audit_bundle``.
    """
    bounds = limits if limits is not None else CrawlLimits()
    start = await _fetch_actor(client, url)
    start_id = _actor_id(start, url)
    actors: dict[str, dict[str, Any]] = {start_id: start}
    entries: dict[str, list[dict[str, Any]]] = {}
    frontier = [start_id]
    items = 0
    for hop in range(bounds.max_hops + 1):
        named: list[str] = []
        for actor_id in frontier:
            chain = await _fetch_outbox(client, actors[actor_id], actor_id, bounds, items)
            items += len(chain)
            entries[actor_id] = chain
            named += [a for a in _named_actors(chain, actor_id) if a not in actors]
        if hop == bounds.max_hops:
            break
        frontier = []
        for actor_id in dict.fromkeys(named):
            if len(actors) >= bounds.max_actors:
                raise CrawlError(
                    f"more than {bounds.max_actors} actors named", url=url, code="too_many_actors"
                )
            document = await _fetch_actor(client, actor_id)
            got = _actor_id(document, actor_id)
            if got != actor_id:
                raise CrawlError(f"actor document has id {got!r}", url=actor_id, code="wrong_id")
            actors[actor_id] = document
            frontier.append(actor_id)
    records: list[Body] = [ActorRecord(document=d) for d in actors.values()]
    for chain in entries.values():
        records += [EntryRecord(entry=e) for e in chain]
    return start_id, records


async def fetch_chain(
    client: FederationClient, actor_id: str, limits: CrawlLimits | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One actor's document and its whole chain from its outbox, oldest first."""
    bounds = limits if limits is not None else CrawlLimits()
    document = await _fetch_actor(client, actor_id)
    got = _actor_id(document, actor_id)
    if got != actor_id:
        raise CrawlError(f"actor document has id {got!r}", url=actor_id, code="wrong_id")
    return document, await _fetch_outbox(client, document, actor_id, bounds, 0)


async def _fetch_actor(client: FederationClient, url: str) -> dict[str, Any]:
    document: dict[str, Any] = await client.get_json(url, sign=False)
    return document


def _actor_id(document: dict[str, Any], url: str) -> str:
    actor_id = document.get("id")
    if not isinstance(actor_id, str) or not actor_id:
        raise CrawlError("actor document has no id", url=url, code="bad_actor")
    return actor_id


async def _fetch_outbox(
    client: FederationClient,
    actor: dict[str, Any],
    actor_id: str,
    bounds: CrawlLimits,
    items_so_far: int,
) -> list[dict[str, Any]]:
    outbox = actor.get("outbox")
    if not isinstance(outbox, str):
        raise CrawlError("actor document names no outbox", url=actor_id, code="no_outbox")
    collection = await client.get_json(outbox, sign=False)
    chain = list(_items(collection, outbox))
    page = collection.get("first")
    seen: set[str] = set()
    pages = 0
    while page is not None:
        if isinstance(page, dict):  # an embedded first page
            body, page_url = page, str(page.get("id", outbox))
        elif isinstance(page, str):
            if page in seen:
                raise CrawlError("outbox pages loop", url=page, code="page_loop")
            seen.add(page)
            body, page_url = await client.get_json(page, sign=False), page
        else:
            raise CrawlError("page link is neither a URL nor a page", url=outbox)
        pages += 1
        if pages > bounds.max_pages_per_outbox:
            raise CrawlError(
                f"more than {bounds.max_pages_per_outbox} pages", url=outbox, code="too_many_pages"
            )
        chain += _items(body, page_url)
        if items_so_far + len(chain) > bounds.max_items:
            raise CrawlError(
                f"more than {bounds.max_items} items in all", url=page_url, code="too_many_items"
            )
        nxt = body.get("next")
        page = nxt.get("id") if isinstance(nxt, dict) else nxt
    return chain


def _items(collection: dict[str, Any], url: str) -> list[dict[str, Any]]:
    raw = collection.get("orderedItems", collection.get("items", []))
    if not isinstance(raw, list):
        raise CrawlError("orderedItems is not a list", url=url, code="bad_page")
    out: list[dict[str, Any]] = []
    for item in raw:
        # An outbox may wrap each entry in the activity that published it; the chain
        # entry is the object that carries a seq.
        if isinstance(item, dict) and "seq" not in item and isinstance(item.get("object"), dict):
            item = item["object"]
        if not isinstance(item, dict):
            raise CrawlError("an outbox item is not an object", url=url, code="bad_page")
        out.append(item)
    return out


def _named_actors(chain: list[dict[str, Any]], own: str) -> list[str]:
    found: list[str] = []
    for entry in chain:
        follower = entry.get("follower")
        if entry.get("type") == "Accept" and isinstance(follower, str):
            found.append(follower)
        # a partner facilitator's chain holds the requests the region cites (§10.7)
        facilitator = entry.get("facilitator")
        if entry.get("type") == "FacilitatorGrant" and isinstance(facilitator, str):
            found.append(facilitator)
        # a regional proposal lists its chapters; a decision names each one it counted;
        # a lower region's Level names the chapters of its level
        chapters = entry.get("chapters")
        if entry.get("type") in ("Question", "Decision", "Level") and isinstance(chapters, list):
            for chapter in chapters:
                named = chapter.get("chapter") if isinstance(chapter, dict) else chapter
                if isinstance(named, str) and named.startswith(("https://", "http://")):
                    found.append(named)
        for key, value in entry.items():
            if key not in ("id", "prev", "proof", "@context"):
                found += _entry_authors(value)
    return [a for a in dict.fromkeys(found) if a != own]


def _entry_authors(value: Any) -> list[str]:
    if isinstance(value, str):
        m = ENTRY_ID.match(value)
        return [m.group(1)] if m else []
    if isinstance(value, list):
        return [a for v in value for a in _entry_authors(v)]
    if isinstance(value, dict):
        return [a for v in value.values() for a in _entry_authors(v)]
    return []


__all__ = ["CrawlError", "CrawlLimits", "FetchError", "crawl", "fetch_chain"]
