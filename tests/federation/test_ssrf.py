"""The SSRF guard: private and loopback addresses refused unless allowed, both ways."""

from __future__ import annotations

import ipaddress

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.client import FederationClient, FetchError
from federation.errors import BlockedAddressError, FederationError
from federation.ssrf import GuardedResolver, check_url, is_public_address

BLOCKED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier NAT
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@settings(max_examples=200)
@given(st.ip_addresses(network="10.0.0.0/8") | st.ip_addresses(network="192.168.0.0/16"))
def test_every_rfc1918_address_is_refused(address: ipaddress.IPv4Address) -> None:
    with pytest.raises(BlockedAddressError):
        check_url(f"http://{address}/actor", allow_private_network=False)


@pytest.mark.parametrize("address", BLOCKED)
def test_check_url_refuses_literals_and_names_them(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(BlockedAddressError) as info:
        check_url(f"http://{host}:8080/inbox", allow_private_network=False)
    assert "--allow-private-network" in info.value.detail
    assert info.value.status == 400


def test_check_url_allows_literals_when_private_network_allowed() -> None:
    assert check_url("http://127.0.0.1:8080/x", allow_private_network=True).port == 8080


@pytest.mark.parametrize(
    "url",
    ["ftp://example.org/x", "file:///etc/passwd", "http:///nohost", "http://u:p@example.org/"],
)
def test_check_url_refuses_other_schemes_and_shapes(url: str) -> None:
    with pytest.raises(FederationError) as info:
        check_url(url, allow_private_network=True)
    assert info.value.code == "bad_url"


async def test_resolver_drops_loopback_names() -> None:
    resolver = GuardedResolver(allow_private_network=False)
    try:
        with pytest.raises(BlockedAddressError) as info:
            await resolver.resolve("localhost", 80)
        assert "localhost resolves to" in info.value.detail
    finally:
        await resolver.close()


async def test_resolver_passes_loopback_names_when_allowed() -> None:
    resolver = GuardedResolver(allow_private_network=True)
    try:
        results = await resolver.resolve("localhost", 80)
        assert any(ipaddress.ip_address(r["host"]).is_loopback for r in results)
    finally:
        await resolver.close()


async def _hello(request: web.Request) -> web.Response:
    del request
    return web.json_response({"hello": "world"})


async def test_client_refuses_loopback_by_name_and_by_literal(serve) -> None:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/x", _hello)
    base = await serve(app)
    port = base.rsplit(":", 1)[1]
    async with FederationClient(signer=None, allow_private_network=False) as client:
        with pytest.raises(BlockedAddressError):
            await client.get_json(f"{base}/x")
        with pytest.raises(BlockedAddressError):
            await client.get_json(f"http://localhost:{port}/x")
        with pytest.raises(BlockedAddressError):
            await client.post(f"http://localhost:{port}/x", b"{}")


async def test_client_fetches_loopback_when_allowed(serve) -> None:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/x", _hello)
    base = await serve(app)
    port = base.rsplit(":", 1)[1]
    async with FederationClient(signer=None, allow_private_network=True) as client:
        assert await client.get_json(f"{base}/x") == {"hello": "world"}
        assert await client.get_json(f"http://localhost:{port}/x") == {"hello": "world"}


async def test_every_redirect_hop_is_checked(serve) -> None:  # type: ignore[no-untyped-def]
    async def to_file(request: web.Request) -> web.Response:
        del request
        raise web.HTTPFound("file:///etc/passwd")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.url))

    app = web.Application()
    app.router.add_get("/file", to_file)
    app.router.add_get("/loop", loop)
    base = await serve(app)
    async with FederationClient(signer=None, allow_private_network=True) as client:
        with pytest.raises(FederationError) as info:
            await client.get(f"{base}/file")
        assert info.value.code == "bad_url"
        with pytest.raises(FetchError) as fetch:
            await client.get(f"{base}/loop")
        assert fetch.value.code == "too_many_redirects"


async def test_blocked_address_is_not_a_fetch_error() -> None:
    # A refused address must be told apart from an unreachable one.
    assert not issubclass(BlockedAddressError, FetchError)
