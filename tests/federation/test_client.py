"""The federation client against real servers on loopback: limits and clear errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from aiohttp import web
from fedkit import rsa_key
from yarl import URL

from federation import httpsig
from federation.client import AS_ACCEPT, FederationClient, FetchError, Limits, http_signer


def _app() -> web.Application:
    async def big(request: web.Request) -> web.Response:
        del request
        return web.Response(body=b'{"a":"' + b"x" * 5000 + b'"}', content_type="application/json")

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()  # no Content-Length: the limit applies while reading
        await response.prepare(request)
        await response.write(b'{"a":"')
        for _ in range(10):
            await response.write(b"x" * 1000)
        await response.write(b'"}')
        return response

    async def html(request: web.Request) -> web.Response:
        del request
        return web.Response(text="<html></html>", content_type="text/html")

    async def broken(request: web.Request) -> web.Response:
        del request
        return web.Response(text='{"a": ', content_type="application/activity+json")

    async def array(request: web.Request) -> web.Response:
        del request
        return web.json_response([1, 2])

    async def slow(request: web.Request) -> web.Response:
        del request
        await asyncio.sleep(1)
        return web.json_response({})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "accept": request.headers.get("Accept"),
                "signature": request.headers.get("Signature"),
                "body": (await request.read()).decode(),
                "content_type": request.headers.get("Content-Type"),
            }
        )

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/streamed", streamed)
    app.router.add_get("/html", html)
    app.router.add_get("/broken", broken)
    app.router.add_get("/array", array)
    app.router.add_get("/slow", slow)
    app.router.add_get("/echo", echo)
    app.router.add_post("/echo", echo)
    return app


def _signer(
    method: str, url: URL, headers: Mapping[str, str], body: bytes | None
) -> dict[str, str]:
    return {"Signature": f'keyId="k",signature="{method} {url.path} {len(body or b"")}"'}


@pytest.fixture
async def base(serve) -> str:  # type: ignore[no-untyped-def]
    url: str = await serve(_app())
    return url


def _client(**limits: float) -> FederationClient:
    return FederationClient(
        signer=_signer,
        allow_private_network=True,
        limits=Limits(**limits),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("path", ["/big", "/streamed"])
async def test_oversized_answers_are_refused(base: str, path: str) -> None:
    async with _client(max_bytes=4096) as client:
        with pytest.raises(FetchError) as info:
            await client.get_json(base + path)
    assert info.value.code == "too_large"
    assert path in info.value.detail and "4096" in info.value.detail


async def test_answers_within_the_limit_pass(base: str) -> None:
    async with _client(max_bytes=20_000) as client:
        assert len((await client.get_json(base + "/streamed"))["a"]) == 10_000


@pytest.mark.parametrize(
    ("path", "fragment"),
    [("/html", "text/html"), ("/broken", "not valid JSON"), ("/array", "not an object")],
)
async def test_non_json_answers_are_refused(base: str, path: str, fragment: str) -> None:
    async with _client() as client:
        with pytest.raises(FetchError) as info:
            await client.get_json(base + path)
    assert info.value.code == "not_json"
    assert fragment in info.value.detail


async def test_missing_document_is_not_found(base: str) -> None:
    async with _client() as client:
        with pytest.raises(FetchError) as info:
            await client.get_json(base + "/nothing")
    assert info.value.code == "not_found" and "404" in info.value.detail


async def test_slow_servers_time_out(base: str) -> None:
    async with _client(total_seconds=0.3) as client:
        with pytest.raises(FetchError) as info:
            await client.get_json(base + "/slow")
    assert info.value.code == "timeout"


async def test_unreachable_server_is_a_fetch_error() -> None:
    async with _client() as client:
        with pytest.raises(FetchError) as info:
            await client.get_json("http://127.0.0.1:9/nothing-listens-here")
    assert info.value.code == "fetch_failed"


async def test_gets_and_posts_are_signed_and_ask_for_activity_json(base: str) -> None:
    async with _client() as client:
        got = await client.get_json(base + "/echo")
        assert got["accept"] == AS_ACCEPT
        assert got["signature"] == 'keyId="k",signature="GET /echo 0"'
        posted = await client.post(base + "/echo", b'{"type":"Follow"}')
    assert posted.status == 200
    echoed = json.loads(posted.body)
    assert echoed["body"] == '{"type":"Follow"}'
    assert echoed["content_type"] == "application/activity+json"
    assert echoed["signature"] == 'keyId="k",signature="POST /echo 17"'


async def test_unsigned_get_carries_no_signature(base: str) -> None:
    async with _client() as client:
        assert (await client.get_json(base + "/echo", sign=False))["signature"] is None


async def test_node_signer_verifies_as_draft_cavage(serve) -> None:  # type: ignore[no-untyped-def]
    """The signer the node uses (RSA, keyId #main-key) produces what a receiver checks."""
    key = rsa_key()
    seen: list[str] = []

    async def verify(request: web.Request) -> web.Response:
        body = await request.read() if request.method == "POST" else None
        parsed = httpsig.parse_signature_headers(
            request.method, request.path_qs, request.headers, body, scheme="http"
        )
        httpsig.verify_request(parsed, key.public_key(), now=datetime.now(UTC))
        seen.append(f"{request.method} {parsed.key_id}")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/verify", verify)
    base = await serve(app)
    signer = http_signer("https://n.example/actor#main-key", key)
    async with FederationClient(signer=signer, allow_private_network=True) as client:
        assert await client.get_json(base + "/verify?x=1") == {"ok": True}
        assert (await client.post(base + "/verify", b'{"type":"Follow"}')).status == 200
    assert seen == ["GET https://n.example/actor#main-key", "POST https://n.example/actor#main-key"]
