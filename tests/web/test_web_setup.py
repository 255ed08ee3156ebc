"""setup_web as the node's app factory wires it: the secret file, cookie flags by URL."""

from __future__ import annotations

import stat
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from node.api import SERVICES_KEY
from node.app import create_app
from node.bootstrap import init_node
from node.config import load_config
from node.web import WEB_KEY
from node.web.session import COOKIE


async def _client(tmp_path: Path, url: str) -> TestClient:
    data = tmp_path / "data"
    await init_node(data, name="Harbour", url=url, kind="chapter")
    app = create_app(load_config(data))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_https_node_sets_a_secure_httponly_lax_cookie(tmp_path: Path) -> None:
    client = await _client(tmp_path, "https://harbour.example")
    try:
        assert client.app is not None and client.app[WEB_KEY].codec.secure is True
        answer = await client.get("/login")
        assert answer.status == 200
        cookie = answer.cookies[COOKIE]
        assert cookie["secure"] is True
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Lax"
        secret = tmp_path / "data" / "keys" / "web-session.key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    finally:
        await client.close()


async def test_http_node_cookie_is_not_secure_and_pages_are_not_cached(tmp_path: Path) -> None:
    client = await _client(tmp_path, "http://127.0.0.1:9")
    try:
        answer = await client.get("/login")
        assert answer.cookies[COOKIE]["secure"] == ""
        assert answer.headers["Cache-Control"] == "no-store"
        assert "script-src 'self';" in answer.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert '<html lang="en">' in await answer.text()
    finally:
        await client.close()


async def test_forged_cookie_becomes_a_fresh_visitor_session(tmp_path: Path) -> None:
    client = await _client(tmp_path, "http://127.0.0.1:9")
    try:
        answer = await client.get("/proposals/p-1", cookies={COOKIE: "v1.bWVtYmVy.9999999999.x.y"})
        assert answer.status == 401
        assert "Please log in" in await answer.text()
        assert answer.cookies[COOKIE].value != "v1.bWVtYmVy.9999999999.x.y"
    finally:
        await client.close()


async def test_an_oversized_form_gets_the_friendly_413_page(tmp_path: Path) -> None:
    client = await _client(tmp_path, "http://127.0.0.1:9")
    try:
        assert client.app is not None
        limit = client.app[SERVICES_KEY].config.max_body_bytes
        answer = await client.post("/login", data={"name": "x" * (limit + 4096), "csrf": "t"})
        assert answer.status == 413
        text = await answer.text()
        assert "That was too large" in text and "Traceback" not in text
    finally:
        await client.close()
