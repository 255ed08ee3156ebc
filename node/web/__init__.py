"""The node's web pages for members and organizers (server-rendered, work without JS).

`setup_web(app)` is called by the node's app factory after its services are in the
app (`node.api.SERVICES_KEY`). It loads the web session secret from the data folder
(`keys/web-session.key`, made on first use), sets up Jinja2 with autoescaping and
adds the page routes and `/static/`.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from node.api import SERVICES_KEY
from node.identity import KEY_DIR
from node.web.audit_page import add_audit_routes
from node.web.member_pages import add_member_routes
from node.web.organizer_pages import add_organizer_routes
from node.web.page import WEB_KEY, WebState, friendly_time, html_errors, paragraphs
from node.web.region_page import add_region_routes
from node.web.session import SessionCodec, load_or_create_secret

HERE = Path(__file__).parent

__all__ = ["WEB_KEY", "setup_web"]


def setup_web(app: web.Application) -> None:
    services = app[SERVICES_KEY]
    secret = load_or_create_secret(Path(services.config.data_dir) / KEY_DIR)
    codec = SessionCodec(
        secret,
        ttl_s=services.config.session_ttl_s,
        secure=services.identity.url.startswith("https://"),
    )
    app[WEB_KEY] = WebState(codec=codec)
    app.middlewares.append(html_errors)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = friendly_time
    env.filters["paragraphs"] = paragraphs
    add_member_routes(app)
    add_organizer_routes(app)
    add_audit_routes(app)
    add_region_routes(app)
    app.router.add_static("/static/", HERE / "static")
