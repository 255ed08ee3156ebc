"""The outgoing HTTP client: signed GET and POST behind the SSRF guard, with limits.

Theory of operation. Everything a node fetches from or posts to another server goes
through ``FederationClient`` so that four rules hold everywhere at once:

- the SSRF guard (federation/ssrf.py) sees every URL and every resolved address;
  redirects are followed here, hop by hop, so each hop is checked too;
- every request is signed by the node's actor (draft-cavage HTTP Signatures as
  Mastodon speaks them, so "authorized fetch" servers answer our GETs);
- every response is bounded: a total time limit and a byte limit enforced while
  reading, not after (a hostile server cannot make us buffer a gigabyte);
- failures are ``FetchError`` naming the URL and what went wrong, never ``None``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import msgspec
from yarl import URL

from federation.errors import FederationError
from federation.httpsig import PrivateKey, sign_request
from federation.ssrf import GuardedResolver, check_url

ACTIVITY_JSON = "application/activity+json"
LD_JSON_AS = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
JRD_JSON = "application/jrd+json"
# What we ask for when fetching an ActivityPub object (AP §3.2: both types, either is fine).
AS_ACCEPT = f"{ACTIVITY_JSON}, {LD_JSON_AS}"
JSON_ACCEPT = f"{JRD_JSON}, application/json"

USER_AGENT = "convene/0.1 (+https://w3id.org/convene/v1)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class FetchError(FederationError):
    """A remote fetch or post failed: unreachable, timed out, too large, not JSON, ..."""

    code = "fetch_failed"
    status = 502

    def __init__(self, detail: str, *, url: str, code: str | None = None) -> None:
        self.url = url
        super().__init__(f"{url}: {detail}", code=code)


class RequestSigner(Protocol):
    """Signs one outgoing request: returns the headers to add (Date, Digest, Signature)."""

    def __call__(
        self, method: str, url: URL, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def http_signer(
    key_id: str, private_key: PrivateKey, *, clock: Callable[[], datetime] = _utc_now
) -> RequestSigner:
    """A signer for the node's actor key (``{actor}#main-key``): draft-cavage, as
    Mastodon verifies it (federation/httpsig.py)."""

    def sign(
        method: str, url: URL, headers: Mapping[str, str], body: bytes | None
    ) -> Mapping[str, str]:
        return sign_request(
            method, str(url), headers, body, key_id=key_id, private_key=private_key, now=clock()
        )

    return sign


class Limits(msgspec.Struct, frozen=True):
    """Bounds on one request. Defaults fit actor documents and outbox pages."""

    max_bytes: int = 1_000_000
    total_seconds: float = 15.0
    connect_seconds: float = 5.0
    max_redirects: int = 3


class Response(msgspec.Struct, frozen=True):
    url: str  # the final URL after redirects
    status: int
    content_type: str
    body: bytes
    location: str = ""  # the Location header of a redirect


class FederationClient:
    """One aiohttp session for all federation traffic of a node."""

    def __init__(
        self,
        *,
        signer: RequestSigner | None,
        allow_private_network: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.signer = signer
        self.allow_private_network = allow_private_network
        self.limits = limits if limits is not None else Limits()
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(allow_private_network=allow_private_network),
            limit_per_host=8,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # a proxy from the environment would bypass the guard
            timeout=aiohttp.ClientTimeout(
                total=self.limits.total_seconds, sock_connect=self.limits.connect_seconds
            ),
            headers={"User-Agent": USER_AGENT},
            auto_decompress=True,
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> FederationClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(self, url: str, *, accept: str = AS_ACCEPT, sign: bool = True) -> Response:
        """A (signed) GET, following up to ``max_redirects`` redirects, each checked."""
        current = check_url(url, allow_private_network=self.allow_private_network)
        for _ in range(self.limits.max_redirects + 1):
            response = await self._send("GET", current, {"Accept": accept}, None, sign=sign)
            if response.status not in REDIRECT_STATUSES:
                return response
            location = response.location
            if not location:
                raise FetchError("redirect without a Location", url=str(current))
            current = check_url(
                current.join(URL(location)), allow_private_network=self.allow_private_network
            )
        raise FetchError(
            f"more than {self.limits.max_redirects} redirects", url=url, code="too_many_redirects"
        )

    async def get_json(self, url: str, *, accept: str = AS_ACCEPT, sign: bool = True) -> Any:
        """GET a JSON document; anything but a 2xx JSON object is a ``FetchError``."""
        response = await self.get(url, accept=accept, sign=sign)
        if not 200 <= response.status < 300:
            raise FetchError(
                f"answered HTTP {response.status}",
                url=response.url,
                code="not_found" if response.status in (404, 410) else "remote_status",
            )
        return decode_json_object(response)

    async def post(
        self, url: str, body: bytes, *, content_type: str = ACTIVITY_JSON, sign: bool = True
    ) -> Response:
        """A signed POST (no redirects: a delivery goes where the inbox says, or fails)."""
        target = check_url(url, allow_private_network=self.allow_private_network)
        headers = {"Content-Type": content_type, "Accept": f"{ACTIVITY_JSON}, application/json"}
        return await self._send("POST", target, headers, body, sign=sign)

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None, *, sign: bool
    ) -> Response:
        headers = dict(headers)
        headers["Host"] = url.raw_authority
        if sign and self.signer is not None:
            headers.update(self.signer(method, url, headers, body))
        try:
            async with self._session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as resp:
                if resp.status in REDIRECT_STATUSES:
                    return Response(
                        url=str(url),
                        status=resp.status,
                        content_type="",
                        body=b"",
                        location=resp.headers.get("Location", ""),
                    )
                data = await self._read_bounded(resp, str(url))
                return Response(
                    url=str(url),
                    status=resp.status,
                    content_type=resp.headers.get("Content-Type", ""),
                    body=data,
                )
        except FederationError:
            raise
        except TimeoutError as exc:
            raise FetchError(
                f"no complete answer within {self.limits.total_seconds:g} s",
                url=str(url),
                code="timeout",
            ) from exc
        except aiohttp.ClientError as exc:
            raise FetchError(f"request failed: {exc}", url=str(url)) from exc
        except asyncio.CancelledError:
            raise

    async def _read_bounded(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
        limit = self.limits.max_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise FetchError(
                f"answer is {resp.content_length} bytes, more than the limit of {limit}",
                url=url,
                code="too_large",
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise FetchError(
                    f"answer exceeds the limit of {limit} bytes", url=url, code="too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)


def decode_json_object(response: Response) -> dict[str, Any]:
    """Decode a response body that must be a JSON object (leniently: any fields)."""
    media_type = response.content_type.split(";")[0].strip().lower()
    if media_type and not (media_type.endswith("/json") or media_type.endswith("+json")):
        raise FetchError(
            f"answered {media_type!r}, not a JSON media type", url=response.url, code="not_json"
        )
    try:
        value = msgspec.json.decode(response.body)
    except msgspec.DecodeError as exc:
        raise FetchError(
            f"answer is not valid JSON: {exc}", url=response.url, code="not_json"
        ) from exc
    if not isinstance(value, dict):
        raise FetchError(
            f"answer is JSON {type(value).__name__}, not an object",
            url=response.url,
            code="not_json",
        )
    return value
