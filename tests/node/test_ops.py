"""node/ops.py through its public faces: /healthz, /metrics, a proxy's X-Forwarded-*;
and the self-hosting guide's commands run in order (backup and restore included;
their own tests are in test_backup.py)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import click
import pytest
from aiohttp import web
from nodekit import (
    CONVENE,
    ROOT,
    add_member,
    call,
    free_port,
    run_cli,
)
from prometheus_client.parser import text_string_to_metric_families
from servekit import get, new_node, serving

from federation import store
from federation.httpsig import sign_request
from node.app import DB_KEY, IDENTITY_KEY
from node.federation_glue import DELIVERY_KEY

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
CONVENE_BIN = Path(sys.executable).parent / "convene"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, labels), parsed by the Prometheus project's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# --- /healthz -------------------------------------------------------------------------


async def test_healthz_is_200_and_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    data = await new_node(tmp_path, "riverside")
    async with serving(data) as (_, url), aiohttp.ClientSession() as http:
        status, body = await get(http, f"{url}/healthz")
        assert status == 200
        assert json.loads(body) == {
            "status": "ok",
            "database": "ok",
            "delivery": {"queue_depth": 0, "last_error": None},
        }
        # The volume goes away under the running node: health says so, then recovers.
        db = data / "convene.sqlite3"
        db.rename(tmp_path / "moved.sqlite3")
        status, body = await get(http, f"{url}/healthz")
        assert status == 503
        answer = json.loads(body)
        assert answer["status"] == "unavailable"
        assert "unreachable" in answer["database"] and "convene.sqlite3" in answer["database"]
        status, text = await get(http, f"{url}/metrics")
        assert status == 503 and "database unreachable" in text
        (tmp_path / "moved.sqlite3").rename(db)
        assert (await get(http, f"{url}/healthz"))[0] == 200


async def test_healthz_and_metrics_report_a_failing_delivery(tmp_path: Path) -> None:
    data = await new_node(tmp_path, "riverside")
    dead_inbox = f"http://127.0.0.1:{free_port()}/inbox"  # nothing listens there
    async with serving(data) as (app, url), aiohttp.ClientSession() as http:
        activity = {"@context": AS_CONTEXT, "id": f"{url}/x/1", "type": "Note"}
        async with app[DB_KEY].write() as tx:
            await store.enqueue(tx.connection, activity, [dead_inbox])
        app[DELIVERY_KEY].wake()
        for _ in range(100):
            health = json.loads((await get(http, f"{url}/healthz"))[1])
            if health["delivery"]["last_error"] is not None:
                break
            await asyncio.sleep(0.05)
        assert health["status"] == "ok"  # up, but not well: the operator can see why
        assert health["delivery"]["queue_depth"] == 1
        last = health["delivery"]["last_error"]
        assert last["inbox"] == dead_inbox and last["error"]
        datetime.strptime(last["at"], "%Y-%m-%dT%H:%M:%SZ")
        metrics = samples((await get(http, f"{url}/metrics"))[1])
        assert metrics[("convene_delivery_queue_depth", ())] == 1
        assert metrics[("convene_deliveries", (("state", "retrying"),))] == 1
        assert metrics[("convene_delivery_failed_attempts", ())] >= 1


# --- /metrics -------------------------------------------------------------------------


async def test_metrics_count_requests_ballots_chain_and_verification_failures(
    tmp_path: Path,
) -> None:
    data = await new_node(tmp_path, "riverside")
    org = add_member(data, "Olu", "organizer")
    voter = add_member(data, "Ama")
    async with serving(data) as (_, url), aiohttp.ClientSession() as http:
        status, p = await call(
            http, "POST", f"{url}/api/proposals", org["token"],
            {"title": "Rent strike", "method": "choice", "options": ["yes", "no"]},
        )  # fmt: skip
        assert status == 201
        for choice in ("yes", "no", "yes"):
            status, _ = await call(
                http, "POST", f"{url}/api/proposals/{p['id']}/ballots", voter["token"],
                {"choice": choice},
            )  # fmt: skip
            assert status == 201
        assert (await get(http, f"{url}/nowhere"))[0] == 404
        async with http.post(f"{url}/inbox", data=b"{}") as unsigned:
            assert unsigned.status == 401
            code = (await unsigned.json())["error"]
        async with http.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            text = await response.text()
    metrics = samples(text)
    assert metrics[("convene_http_requests_total", (("status", "201"),))] == 4
    assert metrics[("convene_http_requests_total", (("status", "404"),))] == 1
    assert metrics[("convene_verification_failures_total", (("code", code),))] == 1
    assert metrics[("convene_ballots", ())] == 3
    # Genesis, two members added, the proposal: the chain's own length.
    assert metrics[("convene_chain_length", ())] == 4
    assert metrics[("convene_proposals", (("status", "open"),))] == 1
    assert metrics[("convene_equivocations", ())] == 0
    # Every family has HELP and TYPE, in the exposition format's order.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            assert lines[i + 1].startswith("# TYPE " + line.split()[2] + " ")


# --- behind a reverse proxy -----------------------------------------------------------


def _signed_follow(
    sender: web.Application, public: str, proxied_to: str
) -> tuple[bytes, dict[str, str]]:
    """A Follow signed for `public`'s host, as a proxy passes it to `proxied_to`."""
    me = sender[IDENTITY_KEY]
    body = json.dumps(
        {"@context": AS_CONTEXT, "id": f"{me.url}/follows/1", "type": "Follow",
         "actor": me.actor, "object": f"{public}/actor"}
    ).encode()  # fmt: skip
    headers = sign_request(
        "POST", f"{public}/inbox", {"Content-Type": "application/activity+json"}, body,
        key_id=me.rsa_key_id, private_key=me.rsa_key, now=datetime.now(UTC),
    )  # fmt: skip
    # What nginx sends upstream by default: its own upstream address as Host.
    headers.update({
        "Content-Type": "application/activity+json",
        "Host": proxied_to.removeprefix("http://"),
        # A value the client sent, then the one the proxy appended: only the last counts.
        "X-Forwarded-Host": "spoofed.example, " + public.removeprefix("https://"),
        "X-Forwarded-Proto": "https",
    })  # fmt: skip
    return body, headers


@pytest.mark.parametrize("trust", [False, True])
async def test_forwarded_headers_only_when_trusted_and_ids_from_the_public_url(
    tmp_path: Path, trust: bool
) -> None:
    public = "https://riverside.example"
    sender_data = await new_node(tmp_path, "sender")
    data = await new_node(tmp_path, "riverside", url=public)
    async with (
        serving(sender_data) as (sender, _),
        serving(data, trust_forwarded=trust) as (_, url),
        aiohttp.ClientSession() as http,
    ):
        # Ids and signatures name the configured public URL, whatever the headers say.
        for headers in ({}, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}):
            async with http.get(
                f"{url}/actor", headers={"Accept": "application/activity+json", **headers}
            ) as response:
                actor = await response.json(content_type=None)
            assert actor["id"] == f"{public}/actor"
            assert actor["inbox"].startswith(public)
        body, headers = _signed_follow(sender, public, url)
        async with http.post(f"{url}/inbox", data=body, headers=headers) as response:
            answer = await response.json()
        if trust:
            assert response.status == 202, answer
        else:
            # The signed host is not the one the node sees, and it must not guess.
            assert response.status == 401, answer
            assert answer["error"] == "bad_signature", answer
        for name, value in (("X-Forwarded-Proto", "gopher"), ("X-Forwarded-Host", "a.example/x")):
            async with http.get(f"{url}/healthz", headers={name: value}) as response:
                assert response.status == (400 if trust else 200)
                if trust:
                    answer = await response.json()
                    assert answer["error"] == "bad_request"
                    assert name in answer["detail"] and value in answer["detail"]


# --- the self-hosting guide -----------------------------------------------------------

GUIDE = ROOT / "docs" / "self-hosting.md"


def guide_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def unit_value(unit: str, key: str) -> str:
    (line,) = [x for x in unit.splitlines() if x.startswith(f"{key}=")]
    return line.split("=", 1)[1]


def check_mention(words: list[str]) -> None:
    """An inline `convene ...` in the guide names a real command and real options."""
    from node.cli import main

    command: click.Command = main
    rest = list(words[1:])
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        found = command.get_command(click.Context(command), rest.pop(0))
        assert found is not None, f"the guide mentions an unknown command: {words}"
        command = found
    known = {opt for param in command.params for opt in param.opts}
    unknown = [w for w in rest if w.startswith("--") and w.split("=")[0] not in known]
    assert unknown == [], f"{words}: no such option {unknown}"


def test_every_command_in_the_self_hosting_guide_works(tmp_path: Path) -> None:
    """The guide's shell lines in its order, with /var/lib/convene made a temp folder:
    `convene ...` lines run as they are; `systemctl start/stop convene` start and stop
    the node with the unit's own ExecStart; the rest needs root or the internet and is
    left out. The node serves, is backed up live (by hand and by the timer's command),
    restored, rotates its keys, and is exported and audited."""
    home = str(tmp_path)
    port = free_port()

    def local(text: str) -> str:
        return text.replace("/var/lib/convene", home)

    sh = [line.strip() for block in guide_blocks("sh") for line in block.splitlines()]
    commands = [local(line) for line in sh if line.startswith("convene ")]
    names = [" ".join(shlex.split(c)[1:3]) for c in commands]
    for needed in ("init", "member add", "serve", "backup", "restore", "key rotate", "audit"):
        assert any(n.startswith(needed) for n in names), f"the guide never runs {needed}"
    service = next(b for b in guide_blocks("ini") if "convene serve" in b)
    timer_job = next(b for b in guide_blocks("ini") if "convene backup" in b)
    exec_start = shlex.split(local(unit_value(service, "ExecStart")))
    assert (
        exec_start[1:]
        == shlex.split(next(c for c in commands if c.startswith("convene serve")))[1:]
    ), "systemd runs the command the guide tries by hand"
    (toml_edit,) = guide_blocks("toml")
    data = Path(home) / "data"
    log_path = tmp_path / "serve.log"
    node: subprocess.Popen[bytes] | None = None
    actors: list[dict[str, Any]] = []

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            proc = subprocess.Popen([*CONVENE, *exec_start[1:]], cwd=ROOT, stdout=log, stderr=log)
        _wait_health(port, proc, log_path)
        actors.append(_actor(port))
        return proc

    def edit_config() -> None:
        config = (data / "convene.toml").read_text()
        for line in toml_edit.splitlines():
            key, value = (part.strip() for part in line.split("#")[0].split("=", 1))
            value = str(port) if key == "port" else value
            config, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", config)
            assert n == 1, f"convene.toml has no {key} line to edit"
        (data / "convene.toml").write_text(config)

    try:
        for line in sh:
            command = local(line)
            if command.startswith("convene serve") or command == "systemctl enable --now convene":
                if node is None:  # by hand first; systemd then runs the same line
                    edit_config()
                    node = start()
            elif command == "systemctl stop convene":
                assert node is not None
                node.send_signal(signal.SIGINT)
                node.wait(timeout=20)
                node = None
            elif command in ("systemctl start convene", "systemctl restart convene"):
                assert node is None
                node = start()
            elif command.startswith("convene "):
                done = run_cli(*shlex.split(command)[1:], check=False)
                assert done.returncode == 0, f"{command}: {done.stderr}"
        assert node is not None, "the guide leaves the node running"
        health = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
        )
        shown = re.search(r'`(\{"status": "ok".*?\})`', GUIDE.read_text(), flags=re.S)
        assert shown is not None and json.loads(shown.group(1).replace("\n", " ")) == health
        # The nightly timer's command, as systemd's sh runs it ("%%" is "%"), after the
        # rotation: the backup verifies a chain whose key changed.
        args = shlex.split(local(unit_value(timer_job, "ExecStart")).replace("%%", "%"))
        script = args[2].replace(f"{home}/venv/bin/convene", str(CONVENE_BIN))
        ran = subprocess.run([args[0], args[1], script], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert len(list((Path(home) / "backups").glob("convene-[1-7].tar.gz"))) == 1
    finally:
        if node is not None:
            node.send_signal(signal.SIGINT)
            node.wait(timeout=20)
    # The restart after `key rotate --rsa` serves new keys of both kinds.
    first, last = actors[0], actors[-1]
    assert len(actors) == 2
    assert first["publicKey"]["publicKeyPem"] != last["publicKey"]["publicKeyPem"]
    assert first["assertionMethod"] != last["assertionMethod"]
    restored = Path(home) / "data-restored"
    assert (restored / "convene.sqlite3").exists() and (restored / "keys" / "rsa.pem").exists()
    for mention in re.findall(r"`(convene [^`]+)`", GUIDE.read_text().replace("\n", " ")):
        check_mention(shlex.split(mention))


def _wait_health(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import time

    deadline = time.monotonic() + 90  # generous for a loaded machine
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(log.read_text()[-3000:])


def _actor(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/actor", headers={"Accept": "application/activity+json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        actor: dict[str, Any] = json.load(response)
    return actor
