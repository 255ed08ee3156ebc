"""What every web page shares: the visit (session + member), forms, rendering, errors.

Each page handler is wrapped by `page`, which (1) reads the session cookie, issuing an
anonymous session when there is none or it is bad, so every form — the login form
too — carries a CSRF token; (2) re-reads the member through the members service, so
a removed member is logged out at once; (3) turns any error into a friendly HTML
page with the error's own status, never a stack trace; (4) sets the cookie when the
visit changed it. Handlers stay thin: read the form, call one service, render.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from federation.errors import FederationError
from node.api import SERVICES_KEY
from node.errors import NodeError, NotFound, Unauthorized
from node.members import Member, require_role
from node.services import NodeServices
from node.web.session import COOKIE, SessionCodec, SessionError, WebSession
from protocol.errors import ProtocolError

log = logging.getLogger("convene.web")


@dataclass
class WebState:
    codec: SessionCodec
    clock: Callable[[], float] = time.time


WEB_KEY = web.AppKey("convene_web", WebState)


@dataclass
class Visit:
    session: WebSession
    member: Member | None
    csrf: str
    cookie: str | None = None  # set when the response must carry a new cookie

    def need_member(self) -> Member:
        if self.member is None:
            raise Unauthorized("this page is for members; please log in first")
        return self.member

    def need_role(self, role: str, action: str) -> Member:
        member = self.need_member()
        require_role(member, role, action)
        return member


PageHandler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def services(request: web.Request) -> NodeServices:
    return request.app[SERVICES_KEY]


def state(request: web.Request) -> WebState:
    return request.app[WEB_KEY]


async def _visit(request: web.Request) -> Visit:
    web_state = state(request)
    codec, now = web_state.codec, web_state.clock()
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            session = codec.read(raw, now)
        except SessionError:
            pass  # a stale or forged cookie is replaced, not an error page
        else:
            member = None
            if session.member_id is not None:
                try:
                    member = await services(request).members.get(session.member_id)
                except NodeError:  # removed since: start over as a visitor
                    return start_visit(request, None)
            return Visit(session, member, codec.csrf_token(session))
    return start_visit(request, None)


def start_visit(request: web.Request, member: Member | None) -> Visit:
    """A fresh session (new nonce, new CSRF token) for `member` or an anonymous visitor."""
    codec = state(request).codec
    cookie = codec.issue(None if member is None else member.id, state(request).clock())
    session = codec.read(cookie, state(request).clock())
    return Visit(session, member, codec.csrf_token(session), cookie=cookie)


def switch_session(request: web.Request, visit: Visit, member: Member | None) -> None:
    """Log `member` in (None: out) on this visit, with a new session and CSRF token."""
    new = start_visit(request, member)
    visit.session, visit.member, visit.csrf, visit.cookie = (
        new.session,
        new.member,
        new.csrf,
        new.cookie,
    )


async def read_form(request: web.Request, visit: Visit, where: str) -> Mapping[str, Any]:
    """The POSTed form, refused (403) unless it carries this session's CSRF token."""
    form = await request.post()
    state(request).codec.check_csrf(visit.session, form.get("csrf"), where)
    return form


def render(
    request: web.Request,
    visit: Visit,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> web.Response:
    identity = services(request).identity
    base = {"visit": visit, "me": visit.member, "csrf": visit.csrf, "node": identity}
    response = aiohttp_jinja2.render_template(template, request, base | context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


# Pages load nothing from elsewhere and run only /static/site.js, so the policy can
# be strict; no-referrer keeps a login link's token out of any Referer header.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_TITLES = {
    400: "Something in the form was not right",
    401: "Please log in",
    403: "That is not allowed",
    404: "We could not find that",
    409: "That cannot be done right now",
    413: "That was too large",
}


def _error_page(request: web.Request, visit: Visit, status: int, detail: str) -> web.Response:
    title = _TITLES.get(status, "Something went wrong")
    return render(request, visit, "error.html", {"title": title, "detail": detail}, status)


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        visit = await _visit(request)
        response: web.StreamResponse
        try:
            response = await handler(request, visit)
        except (NodeError, FederationError) as exc:
            response = _error_page(request, visit, exc.status, exc.detail)
        except ProtocolError as exc:
            response = _error_page(request, visit, exc.status, exc.describe())
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error_page(request, visit, exc.status, exc.reason)
        except Exception:
            log.exception("page %s %s failed", request.method, request.path)
            detail = "The node hit an unexpected problem and logged it. Please try again."
            response = _error_page(request, visit, 500, detail)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if visit.cookie is not None:
            codec = state(request).codec
            response.set_cookie(
                COOKIE,
                visit.cookie,
                max_age=codec.ttl_s,
                httponly=True,
                samesite="Lax",
                secure=codec.secure,
                path="/",
            )
        return response

    wrapped.__name__ = handler.__name__
    return wrapped


# -- template helpers -------------------------------------------------------------------


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def time_left(closes_at: str | None, now: float) -> str:
    """'2 days 3 hours left', '5 minutes left', 'closing now' or 'no close time'."""
    if not closes_at:
        return "no close time set"
    seconds = int(_parse_time(closes_at) - now)
    if seconds <= 0:
        return "closing now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = max(1, rest // 60) if not (days or hours) else rest // 60

    def unit(n: int, word: str) -> str:
        return f"{n} {word}{'s' if n != 1 else ''}"

    if days:
        parts = [unit(days, "day")] + ([unit(hours, "hour")] if hours else [])
    elif hours:
        parts = [unit(hours, "hour")] + ([unit(minutes, "minute")] if minutes else [])
    else:
        parts = [unit(minutes, "minute")]
    return " ".join(parts) + " left"


_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")


def paragraphs(text: str) -> list[str]:
    """Plain text split at blank lines (browsers send CRLF), empty parts dropped."""
    return [part.strip() for part in _BLANK_LINE.split(text) if part.strip()]


def friendly_time(text: str | None) -> str:
    if not text:
        return ""
    return datetime.fromtimestamp(_parse_time(text), UTC).strftime("%d %b %Y, %H:%M UTC")


# -- pages for URLs no route matches ----------------------------------------------------

_MACHINE_PATHS = ("/api/", "/inbox", "/actor", "/outbox", "/followers", "/.well-known/", "/ns/")


@page
async def _no_such_page(request: web.Request, visit: Visit) -> web.Response:
    raise NotFound(f"there is no page at {request.path[:200]}")


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A browser asking for a URL no route matches gets the friendly 404 page, not JSON;
    API and federation clients keep the JSON errors of the node's own middleware."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        wants_html = "text/html" in request.headers.get("Accept", "")
        if not wants_html or request.path.startswith(_MACHINE_PATHS):
            raise
        return await _no_such_page(request)
