"""The `convene` command line: init, member add/list/remove/role, serve's first run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
from nodekit import NodeProcess, call, cli_json, free_port, init_node, run_cli


def test_init_and_roster_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = init_node(data, 8123, kind="region")
    assert created == {
        "actor": "http://127.0.0.1:8123/actor",
        "url": "http://127.0.0.1:8123",
        "kind": "region",
    }
    assert (data / "keys" / "rsa.pem").stat().st_mode & 0o777 == 0o600
    assert (data / "keys" / "ed25519.seed").stat().st_mode & 0o777 == 0o600
    again = run_cli("init", "--data", str(data), "--name", "X", "--url", "http://a", check=False)
    assert again.returncode == 1 and "already holds a node" in again.stderr

    new = cli_json("member", "add", "Ada Lovelace", "--role", "organizer", "--data", str(data))
    assert set(new) == {"id", "name", "role", "token", "login_url"}
    assert new["role"] == "organizer" and new["login_url"].startswith("http://127.0.0.1:8123/")
    listed = cli_json("member", "list", "--data", str(data))
    assert listed == {"items": [{"id": new["id"], "name": "Ada Lovelace", "role": "organizer"}]}
    assert cli_json("member", "role", new["id"], "admin", "--data", str(data))["role"] == "admin"
    assert cli_json("member", "remove", new["id"], "--data", str(data))["id"] == new["id"]
    assert cli_json("member", "list", "--data", str(data)) == {"items": []}
    missing = run_cli("member", "remove", new["id"], "--data", str(data), "--json", check=False)
    assert missing.returncode == 1
    assert json.loads(missing.stderr)["error"] == "not_found"


def test_bad_init_input_is_refused(tmp_path: Path) -> None:
    result = run_cli(
        "init", "--data", str(tmp_path / "d"), "--name", "X", "--url", "ftp://x", check=False
    )
    assert result.returncode == 1 and "--url" in result.stderr
    assert not (tmp_path / "d" / "convene.sqlite3").exists()


def test_serve_help_documents_every_option() -> None:
    text = run_cli("serve", "--help").stdout
    for flag in ("--host", "--port", "--allow-private-network", "--max-body-bytes", "--data"):
        assert flag in text


async def test_first_serve_creates_a_chapter_and_prints_how_to_log_in(tmp_path: Path) -> None:
    data, port = tmp_path / "fresh", free_port()
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    try:
        printed = (tmp_path / "node.log").read_text()
        token = re.search(r"API token \(admin\): (\S+)", printed)
        link = re.search(r"log in once at: (\S+)", printed)
        assert token and link, printed
        assert link.group(1).startswith(f"http://127.0.0.1:{port}/login/")
        async with aiohttp.ClientSession() as http:
            status, members = await call(http, "GET", f"{node.url}/api/members", token.group(1))
        assert status == 200 and members["items"][0]["role"] == "admin"
    finally:
        node.stop()
    # One structured line per request, and no secret in any of them.
    requests = [
        line for line in (tmp_path / "node.log").read_text().splitlines() if "request " in line
    ]
    assert requests and all("status=200" in line for line in requests)
    assert not any(token.group(1) in line for line in requests)
