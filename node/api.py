"""The JSON API (ARCHITECTURE "JSON API"): thin handlers, one error middleware.

Each handler decodes, calls one service, encodes. Every failure leaves through
`error_middleware` as `{"error": code, "detail": text}` with the status the exception
carries (node/, protocol/ and federation/ errors all carry one), and every request
leaves one structured log line without secrets (login-link paths are masked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from federation.errors import FederationError
from node.errors import BadRequest, NodeError, TooLarge, Unauthorized
from node.members import Member, require_role
from node.proposal_forms import decode_new_proposal
from node.services import NodeServices
from protocol.canonical import decode_json
from protocol.errors import ProtocolError

log = logging.getLogger("convene.http")

SERVICES_KEY = web.AppKey("convene_services", NodeServices)
MAX_JSON_BYTES_KEY = web.AppKey("convene_max_json_bytes", int)
MEMBER_KEY = web.RequestKey("convene_member", Member)  # who made this request, once known

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _error(status: int, code: str, detail: str) -> web.Response:
    return json_response({"error": code, "detail": detail}, status=status)


def _loggable_path(path: str) -> str:
    return "/login/…" if path.startswith("/login/") else path


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    member = "-"
    try:
        response = await handler(request)
    except (NodeError, FederationError) as exc:
        response = _error(exc.status, exc.code, exc.detail)
    except ProtocolError as exc:
        where = exc.actor is not None or exc.seq is not None
        response = _error(exc.status, exc.code, exc.describe() if where else exc.detail)
    except web.HTTPRequestEntityTooLarge as exc:
        response = _error(413, TooLarge.code, exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, _loggable_path(request.path))
        response = _error(500, "internal", "internal error; the node logged it")
    found = request.get(MEMBER_KEY)
    if found is not None:
        member = found.id
    # An accepted ballot is the request a node sees thousands of a second, and /metrics
    # counts it: its line goes to DEBUG (at INFO it cost a sixth of a ballot's CPU).
    ballot_ok = response.status == 201 and request.path.endswith("/ballots")
    level = logging.DEBUG if ballot_ok else logging.INFO
    if not log.isEnabledFor(level):
        return response
    log.log(
        level,
        "request method=%s path=%s status=%d ms=%.1f member=%s",
        request.method,
        _loggable_path(request.path),
        response.status,
        (time.perf_counter() - started) * 1000,
        member,
    )
    return response


async def read_body(request: web.Request) -> bytes:
    """The body, refusing (413) anything over the limit before reading it all."""
    limit = request.app[MAX_JSON_BYTES_KEY]
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes exceeds the limit of {limit}")
    # read(n) returns what has arrived so far, not n bytes: gather until EOF or over.
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds the limit of {limit} bytes")
    return b"".join(parts)


async def read_json(request: web.Request) -> object:
    data = await read_body(request)
    if not data:
        raise BadRequest("the request needs a JSON body")
    return decode_json(data, max_bytes=request.app[MAX_JSON_BYTES_KEY])


async def authenticate(request: web.Request, *, voting: bool = False) -> Member:
    """The member behind the bearer token; `voting` takes the ballot path's cache."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("missing 'Authorization: Bearer TOKEN' header")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer TOKEN'")
    members = request.app[SERVICES_KEY].members
    token = token.strip()
    member = await (members.voter(token) if voting else members.authenticate(token))
    request[MEMBER_KEY] = member
    return member


def _services(request: web.Request) -> NodeServices:
    return request.app[SERVICES_KEY]


async def create_proposal(request: web.Request) -> web.Response:
    member = await authenticate(request)
    require_role(member, "organizer", "creating a proposal")
    form = decode_new_proposal(await read_body(request))
    view = await _services(request).proposals.create(member, form)
    return json_response(view, status=201)


async def list_proposals(request: web.Request) -> web.Response:
    await authenticate(request)
    return json_response({"items": await _services(request).proposals.all()})


async def get_proposal(request: web.Request) -> web.Response:
    await authenticate(request)
    return json_response(await _services(request).proposals.get(request.match_info["id"]))


async def cast_ballot(request: web.Request) -> web.Response:
    member = await authenticate(request, voting=True)
    raw = await read_json(request)
    receipt = await _services(request).proposals.cast(member, request.match_info["id"], raw)
    return json_response(receipt, status=201)


async def open_proposal(request: web.Request) -> web.Response:
    member = await authenticate(request)
    view = await _services(request).proposals.open(member, request.match_info["id"])
    return json_response(view)


async def close_proposal(request: web.Request) -> web.Response:
    member = await authenticate(request)
    view = await _services(request).proposals.close(member, request.match_info["id"])
    return json_response(view)


async def receipt_proof(request: web.Request) -> web.Response:
    proof = await _services(request).proposals.receipt_proof(
        request.match_info["id"], request.match_info["receipt"]
    )
    return json_response(proof)


async def list_members(request: web.Request) -> web.Response:
    member = await authenticate(request)
    require_role(member, "organizer", "listing members")
    items = [m.to_json() for m in await _services(request).members.all()]
    return json_response({"items": items})


class _LoginRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: str


async def login(request: web.Request) -> web.Response:
    """Spend a one-time login link's token; answer with the member and a session cookie."""
    try:
        body = msgspec.json.decode(await read_body(request), type=_LoginRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"login: {exc}") from None
    services = _services(request)
    session, cookie = await services.members.use_login_link(body.token)
    request[MEMBER_KEY] = session.member
    response = json_response({"member": session.member.to_json(), "csrf": session.csrf})
    response.set_cookie(
        "convene_session",
        cookie,
        max_age=services.config.session_ttl_s,
        httponly=True,
        samesite="Lax",
        secure=services.identity.url.startswith("https://"),
        path="/",
    )
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/proposals", create_proposal)
    app.router.add_get("/api/proposals", list_proposals)
    app.router.add_get("/api/proposals/{id}", get_proposal)
    app.router.add_post("/api/proposals/{id}/ballots", cast_ballot)
    app.router.add_post("/api/proposals/{id}/open", open_proposal)
    app.router.add_post("/api/proposals/{id}/close", close_proposal)
    app.router.add_get("/api/proposals/{id}/receipts/{receipt}", receipt_proof)
    app.router.add_get("/api/members", list_members)
    app.router.add_post("/api/login", login)
