"""The public, read-only ActivityPub routes of a node.

Theory of operation. Everything here is a GET that another server (or an auditor)
makes without credentials: discovery (WebFinger RFC 7033, NodeInfo 2.1), the actor
document (ActivityPub §4.1), the outbox — which *is* the node's signature chain, oldest
first, as a paged ``OrderedCollection`` (docs/protocol.md §9.2) — the followers
collection, single chain entries by id, and the project's JSON-LD context.

Handlers are thin: they ask a ``FederationSource`` (the node, or anything else that
can answer the same questions) and encode. Chain entries are passed through as the
stored bytes (``msgspec.Raw``), never re-encoded, so what is served is exactly what
was signed.

Content negotiation at the base URL is a middleware, not a route: the node's own web
page owns ``GET /`` for browsers, and only a request that asks for an AS2 media type
is answered with the actor document here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol
from xml.sax.saxutils import escape as xml_escape

import msgspec
from aiohttp import web
from yarl import URL

from federation.client import ACTIVITY_JSON, JRD_JSON
from federation.documents import (
    AS_CONTEXT,
    NODEINFO_PROFILE,
    DocumentError,
    LocalActor,
    actor_document,
    nodeinfo_document,
    nodeinfo_links,
    webfinger_document,
)
from federation.errors import FederationError

OUTBOX_PAGE_SIZE = 100
CONTEXT_MEDIA_TYPE = "application/ld+json"
AS2_MEDIA_TYPES = frozenset({"application/activity+json", "application/ld+json"})


class FederationSource(Protocol):
    """What the routes need to know about the node serving them."""

    async def local_actor(self) -> LocalActor: ...

    async def chain_length(self) -> int: ...

    async def chain_entries(self, start: int, limit: int) -> list[bytes]:
        """Stored entries from ``seq`` = ``start`` on, oldest first, as signed bytes."""
        ...

    async def followers(self) -> list[str]:
        """Actor ids of accepted followers."""
        ...

    async def member_count(self) -> int: ...


SOURCE: web.AppKey[FederationSource] = web.AppKey("federation_source", FederationSource)


def context_document() -> bytes:
    """The project's JSON-LD context, as shipped in the package (never fetched)."""
    return resources.files("federation").joinpath("context.jsonld").read_bytes()


def wants_activity_json(accept: str) -> bool:
    """True if an Accept header names an AS2 media type (with any q above zero)."""
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if media not in AS2_MEDIA_TYPES:
            continue
        q = next((p[2:] for p in parts[1:] if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True
    return False


def _json(body: Any, content_type: str = ACTIVITY_JSON, status: int = 200) -> web.Response:
    response = web.Response(
        body=msgspec.json.encode(body), status=status, content_type=content_type.split(";")[0]
    )
    if ";" in content_type:  # keep a profile parameter verbatim
        response.headers["Content-Type"] = content_type
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Vary"] = "Accept"
    return response


def error_response(exc: FederationError) -> web.Response:
    return _json({"error": exc.code, "detail": exc.detail}, "application/json", exc.status)


async def _actor(request: web.Request) -> web.Response:
    actor = await request.app[SOURCE].local_actor()
    return _json(actor_document(actor))


async def _webfinger(request: web.Request) -> web.Response:
    resource = request.query.get("resource")
    if not resource:
        return error_response(
            DocumentError("the resource query parameter is required", code="bad_resource")
        )
    actor = await request.app[SOURCE].local_actor()
    try:
        return _json(webfinger_document(actor, resource), JRD_JSON)
    except DocumentError as exc:
        return error_response(exc)


async def _host_meta(request: web.Request) -> web.Response:
    """RFC 6415 host-meta: older fediverse software finds WebFinger through it."""
    actor = await request.app[SOURCE].local_actor()
    template = xml_escape(actor.url(".well-known/webfinger") + "?resource={uri}", {'"': "&quot;"})
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
        f'  <Link rel="lrdd" type="application/jrd+json" template="{template}"/>\n'
        "</XRD>\n"
    )
    return web.Response(text=body, content_type="application/xrd+xml")


async def _nodeinfo_links(request: web.Request) -> web.Response:
    actor = await request.app[SOURCE].local_actor()
    return _json(nodeinfo_links(actor.base_url), "application/json")


async def _nodeinfo(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    actor = await source.local_actor()
    document = nodeinfo_document(
        actor, members=await source.member_count(), entries=await source.chain_length()
    )
    return _json(document, NODEINFO_PROFILE)


def _page_number(request: web.Request) -> int | None:
    raw = request.query.get("page")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise FederationError(f"page must be a non-negative integer, not {raw!r}", code="bad_page")
    return int(raw)


async def _outbox(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    actor = await source.local_actor()
    outbox = actor.url("outbox")
    try:
        page = _page_number(request)
    except FederationError as exc:
        return error_response(exc)
    total = await source.chain_length()
    pages = max(1, -(-total // OUTBOX_PAGE_SIZE))

    def page_url(n: int) -> str:
        return str(URL(outbox).with_query(page=n))

    if page is None:
        return _json(
            {
                "@context": AS_CONTEXT,
                "id": outbox,
                "type": "OrderedCollection",
                "totalItems": total,
                "first": page_url(0),
                "last": page_url(pages - 1),
            }
        )
    if page >= pages:
        return error_response(
            FederationError(
                f"page {page} is past the last page {pages - 1}", code="not_found", status=404
            )
        )
    start = page * OUTBOX_PAGE_SIZE
    entries = await source.chain_entries(start, OUTBOX_PAGE_SIZE)
    body: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "id": page_url(page),
        "type": "OrderedCollectionPage",
        "partOf": outbox,
        "startIndex": start,
        "orderedItems": [msgspec.Raw(entry) for entry in entries],
    }
    if page > 0:
        body["prev"] = page_url(page - 1)
    if page + 1 < pages:
        body["next"] = page_url(page + 1)
    return _json(body)


async def _entry(request: web.Request) -> web.Response:
    raw = request.match_info["seq"]
    if not raw.isdigit() or len(raw) > 12:
        return error_response(FederationError(f"{raw!r} is not a seq", code="bad_seq"))
    entries = await request.app[SOURCE].chain_entries(int(raw), 1)
    if not entries:
        return error_response(
            FederationError(f"no chain entry with seq {raw}", code="not_found", status=404)
        )
    return web.Response(
        body=entries[0],
        content_type=ACTIVITY_JSON,
        headers={"Access-Control-Allow-Origin": "*"},
    )


async def _followers(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    actor = await source.local_actor()
    followers = await source.followers()
    return _json(
        {
            "@context": AS_CONTEXT,
            "id": actor.url("followers"),
            "type": "OrderedCollection",
            "totalItems": len(followers),
            "orderedItems": followers,
        }
    )


async def _context(request: web.Request) -> web.Response:
    del request
    return web.Response(
        body=context_document(),
        content_type=CONTEXT_MEDIA_TYPE,
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=86400"},
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def negotiation_middleware(base_path: str) -> Any:
    """Answer ``GET {base_path}`` with the actor document when AS2 is asked for."""

    @web.middleware
    async def negotiate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method in ("GET", "HEAD")
            and request.path == base_path
            and wants_activity_json(request.headers.get("Accept", ""))
        ):
            return await _actor(request)
        return await handler(request)

    return negotiate


def setup_routes(
    app: web.Application, source: FederationSource, *, actor_path: str = "/actor"
) -> None:
    """Add the read-only federation routes and the base-URL negotiation to ``app``."""
    app[SOURCE] = source
    app.middlewares.append(negotiation_middleware("/"))
    app.router.add_get(actor_path, _actor)
    app.router.add_get(actor_path.rstrip("/") + "/entries/{seq}", _entry)
    app.router.add_get("/.well-known/webfinger", _webfinger)
    app.router.add_get("/.well-known/host-meta", _host_meta)
    app.router.add_get("/.well-known/nodeinfo", _nodeinfo_links)
    app.router.add_get("/nodeinfo/2.1", _nodeinfo)
    app.router.add_get("/outbox", _outbox)
    app.router.add_get("/followers", _followers)
    app.router.add_get("/ns/v1", _context)
