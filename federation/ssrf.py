"""The SSRF guard: a node fetches and delivers only to public addresses.

Theory of operation. A remote actor document, a WebFinger answer or an inbox URL is
attacker-controlled input, so a naive fetch could be aimed at the node's own loopback
services or at the private network it sits in (server-side request forgery, OWASP
SSRF cheat sheet). The guard works at two points, because each covers a hole the other
leaves open:

1. ``check_url`` before any request: only ``http``/``https``, a host must be present,
   and a host written as an IP literal must be public. aiohttp never calls the
   resolver for IP literals, so this is the only place those are seen.
2. ``GuardedResolver`` inside the connector: every name is resolved once and the
   addresses are filtered right there, so the address that is checked is the address
   that is connected to (no DNS-rebinding window between a check and the connect).

Redirects are not followed by aiohttp (the client follows them itself, passing every
hop through ``check_url`` again). ``allow_private_network`` turns both checks off for
tests and the loopback demo.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from federation.errors import BlockedAddressError, FederationError

ALLOWED_SCHEMES = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public_address(address: IPAddress) -> bool:
    """True for addresses on the public internet only.

    ``is_global`` is false for loopback, RFC 1918 private ranges, link-local, carrier
    NAT (100.64/10), unspecified, documentation and reserved ranges. Multicast is
    refused separately because some multicast ranges count as global. An IPv4-mapped
    IPv6 address is judged by the IPv4 address it carries.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str | URL, *, allow_private_network: bool) -> URL:
    """Parse ``url`` and refuse it if it may not be fetched; return the parsed URL.

    Raises ``FederationError`` (code ``bad_url``) for a malformed URL or another
    scheme, and ``BlockedAddressError`` for an IP literal that is not public.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise FederationError(f"{url!r} is not a URL: {exc}", code="bad_url") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        raise FederationError(
            f"{url!s} uses scheme {parsed.scheme!r}; only http and https are fetched",
            code="bad_url",
        )
    if not parsed.host:
        raise FederationError(f"{url!s} has no host", code="bad_url")
    if parsed.user is not None or parsed.password is not None:
        raise FederationError(f"{url!s} carries credentials in the URL", code="bad_url")
    address = _literal_address(parsed.host)
    if address is not None and not allow_private_network and not is_public_address(address):
        raise BlockedAddressError(
            f"{url!s}: {address} is a private, loopback or reserved address "
            "(start the node with --allow-private-network to allow it)"
        )
    return parsed


class GuardedResolver(AbstractResolver):
    """A resolver that drops non-public addresses, so the connector never sees them."""

    def __init__(
        self, *, allow_private_network: bool, inner: AbstractResolver | None = None
    ) -> None:
        self._allow_private_network = allow_private_network
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._allow_private_network:
            return results
        allowed = [r for r in results if is_public_address(ipaddress.ip_address(r["host"]))]
        if not allowed:
            found = ", ".join(sorted({r["host"] for r in results})) or "nothing"
            raise BlockedAddressError(
                f"{host} resolves to {found}: private, loopback or reserved addresses only "
                "(start the node with --allow-private-network to allow it)"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()
