"""Discovery and read-only routes, fetched over real HTTP on loopback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fedkit import StaticSource, make_actor

from federation.client import FederationClient, FetchError
from federation.documents import CONVENE_CONTEXT, parse_actor, self_link
from federation.routes import OUTBOX_PAGE_SIZE, setup_routes, wants_activity_json


def _entries(n: int) -> list[dict[str, Any]]:
    return [{"type": "RosterChange", "seq": i, "note": "é ✓"} for i in range(n)]


@pytest.fixture
async def node(serve) -> tuple[str, StaticSource]:  # type: ignore[no-untyped-def]
    source = StaticSource(make_actor("http://placeholder"), _entries(OUTBOX_PAGE_SIZE * 2 + 5))
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        del request
        return web.Response(text="<h1>web page</h1>", content_type="text/html")

    app.router.add_get("/", page)
    setup_routes(app, source)
    base: str = await serve(app)
    source.actor = make_actor(base)
    return base, source


async def _get(url: str, accept: str = "*/*") -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": accept}) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.read()


@pytest.mark.parametrize(
    "accept",
    [
        "application/activity+json",
        'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
        "text/html;q=0.5, application/activity+json",
    ],
)
async def test_base_url_answers_as2_with_the_actor(
    node: tuple[str, StaticSource], accept: str
) -> None:
    base, source = node
    status, ctype, body = await _get(base + "/", accept)
    assert status == 200 and ctype.startswith("application/activity+json")
    document = json.loads(body)
    assert document["id"] == source.actor.id and document["type"] == "Group"


async def test_base_url_answers_browsers_with_the_page(node: tuple[str, StaticSource]) -> None:
    base, _ = node
    status, ctype, body = await _get(base + "/", "text/html,application/xhtml+xml")
    assert status == 200 and ctype.startswith("text/html") and b"web page" in body


def test_accept_header_parsing() -> None:
    assert wants_activity_json("application/activity+json")
    assert wants_activity_json("APPLICATION/LD+JSON; profile=x")
    assert not wants_activity_json("application/activity+json;q=0, text/html")
    assert not wants_activity_json("application/json")
    assert not wants_activity_json("")


async def test_actor_document_shape(node: tuple[str, StaticSource]) -> None:
    base, source = node
    async with FederationClient(signer=None, allow_private_network=True) as client:
        document = await client.get_json(source.actor.id)
    assert CONVENE_CONTEXT in document["@context"]
    for field, path in [("inbox", "/inbox"), ("outbox", "/outbox"), ("followers", "/followers")]:
        assert document[field] == base + path
    assert document["publicKey"]["id"] == source.actor.id + "#main-key"
    assert document["publicKey"]["owner"] == source.actor.id
    assert document["publicKey"]["publicKeyPem"].startswith("-----BEGIN PUBLIC KEY-----")
    (key,) = document["assertionMethod"]
    assert key["type"] == "Multikey" and key["controller"] == source.actor.id
    assert key["publicKeyMultibase"].startswith("z6Mk")
    remote = parse_actor(document, expected_id=source.actor.id)
    assert remote.assertion_key(source.actor.id + "#ed25519-0") is not None


async def test_webfinger_resolves_the_handle_to_the_actor(node: tuple[str, StaticSource]) -> None:
    base, source = node
    host = base.removeprefix("http://")
    resource = f"acct:riverside@{host}"
    status, ctype, body = await _get(f"{base}/.well-known/webfinger?resource={resource}")
    assert status == 200 and ctype.startswith("application/jrd+json")
    jrd = json.loads(body)
    assert jrd["subject"] == resource
    assert self_link(jrd, resource) == source.actor.id


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "bad_resource"),
        ("?resource=", 400, "bad_resource"),
        ("?resource=acct:nobody", 400, "bad_resource"),
        ("?resource=acct:a@b@c", 400, "bad_resource"),
        ("?resource=acct:someone@{host}", 404, "not_found"),
        ("?resource=acct:riverside@elsewhere.example", 404, "not_found"),
    ],
)
async def test_webfinger_bad_resources(
    node: tuple[str, StaticSource], query: str, status: int, code: str
) -> None:
    base, _ = node
    got_status, _, body = await _get(base + "/.well-known/webfinger" + query.format(host=base[7:]))
    assert got_status == status
    answer = json.loads(body)
    assert answer["error"] == code and answer["detail"]


async def test_nodeinfo_is_schema_shaped(node: tuple[str, StaticSource]) -> None:
    base, _ = node
    async with FederationClient(signer=None, allow_private_network=True) as client:
        links = await client.get_json(base + "/.well-known/nodeinfo")
        (link,) = links["links"]
        assert link["rel"] == "http://nodeinfo.diaspora.software/ns/schema/2.1"
        info = await client.get_json(link["href"])
    assert info["version"] == "2.1"
    assert info["software"]["name"] == "convene"
    assert info["protocols"] == ["activitypub"]
    assert info["services"] == {"inbound": [], "outbound": []}
    assert info["openRegistrations"] is False
    assert info["usage"]["users"]["total"] == 3
    assert isinstance(info["metadata"], dict)


async def test_outbox_pages_serve_the_chain_oldest_first_verbatim(
    node: tuple[str, StaticSource],
) -> None:
    base, source = node
    seen: list[bytes] = []
    async with FederationClient(signer=None, allow_private_network=True) as client:
        collection = await client.get_json(base + "/outbox")
        assert collection["type"] == "OrderedCollection"
        assert collection["totalItems"] == len(source.entries)
        url: str | None = collection["first"]
        while url:
            _status, _, raw = await _get(url)
            page = json.loads(raw)
            assert page["type"] == "OrderedCollectionPage" and page["partOf"] == base + "/outbox"
            seen += [
                json.dumps(i, ensure_ascii=False, separators=(",", ":")).encode()
                for i in page["orderedItems"]
            ]
            url = page.get("next")
    assert seen == source.entries
    assert [json.loads(e)["seq"] for e in seen] == list(range(len(source.entries)))


@pytest.mark.parametrize(("page", "status"), [("x", 400), ("-1", 400), ("99", 404)])
async def test_outbox_bad_pages(node: tuple[str, StaticSource], page: str, status: int) -> None:
    base, _ = node
    got, _, body = await _get(f"{base}/outbox?page={page}")
    assert got == status and json.loads(body)["detail"]


async def test_single_entries_by_id(node: tuple[str, StaticSource]) -> None:
    _base, source = node
    status, _, body = await _get(source.actor.id + "/entries/7")
    assert status == 200 and body == source.entries[7]
    status, _, _ = await _get(source.actor.id + "/entries/100000")
    assert status == 404


async def test_followers_collection(node: tuple[str, StaticSource]) -> None:
    base, source = node
    source.follower_ids = ["https://a.example/actor"]
    async with FederationClient(signer=None, allow_private_network=True) as client:
        followers = await client.get_json(base + "/followers")
    assert followers["totalItems"] == 1 and followers["orderedItems"] == source.follower_ids


async def test_context_document_served_and_defines_the_chain_terms(
    node: tuple[str, StaticSource],
) -> None:
    base, _ = node
    status, ctype, body = await _get(base + "/ns/v1")
    assert status == 200 and ctype.startswith("application/ld+json")
    terms = json.loads(body)["@context"]
    for term in [
        "seq",
        "prev",
        "Genesis",
        "KeyRotation",
        "RosterChange",
        "Tally",
        "Decision",
        "assertionKey",
        "method",
        "threshold",
        "quorum",
        "rule",
        "scope",
        "counts",
        "tallies_due",
    ]:
        assert term in terms, term
    # a regional Question's signed deadline is a time, like its close time (§8.4)
    assert terms["tallies_due"] == {"@id": "cv:talliesDue", "@type": "xsd:dateTime"}


async def test_unknown_path_stays_unknown(node: tuple[str, StaticSource]) -> None:
    base, _ = node
    async with FederationClient(signer=None, allow_private_network=True) as client:
        with pytest.raises(FetchError):
            await client.get_json(base + "/nope")


async def test_host_meta_points_to_webfinger(node: tuple[str, StaticSource]) -> None:
    base, _ = node
    status, ctype, body = await _get(base + "/.well-known/host-meta")
    assert status == 200 and ctype.startswith("application/xrd+xml")
    assert f'template="{base}/.well-known/webfinger?resource={{uri}}"' in body.decode()
