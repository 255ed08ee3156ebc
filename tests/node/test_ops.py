"""node/ops.py through its public faces: /healthz, /metrics, a proxy's X-Forwarded-*,
and `convene backup` / `convene restore` on real nodes and real SQLite files."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    NodeProcess,
    add_member,
    add_members_in_process,
    call,
    free_port,
    init_node,
    run_cli,
)
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from federation import store
from federation.httpsig import sign_request
from node import bootstrap, rotation
from node.app import DB_KEY, IDENTITY_KEY, create_app
from node.config import load_config
from node.federation_glue import DELIVERY_KEY
from node.ops import BACKUP_FILES, MANIFEST
from protocol import chain

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
CONVENE_BIN = Path(sys.executable).parent / "convene"


@asynccontextmanager
async def serving(data: Path, **options: Any) -> AsyncIterator[tuple[web.Application, str]]:
    """The node in `data` as create_app builds it, in-process, on the loopback port its
    URL names (or a free one when its URL is a public name)."""
    named = URL(bootstrap.identity_of(data).url)
    port = named.port if named.host == "127.0.0.1" and named.port else free_port()
    config = load_config(data, {"port": port, "allow_private_network": True, **options})
    app = create_app(config)
    rotation.setup(app)  # as `convene serve` does
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def new_node(tmp_path: Path, name: str, url: str | None = None) -> Path:
    data = tmp_path / name
    await bootstrap.init_node(data, name=name, url=url or f"http://127.0.0.1:{free_port()}")
    return data


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with http.get(url, **kw) as response:
        return response.status, await response.text()


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


# --- backup and restore ---------------------------------------------------------------


async def convene(*args: str) -> tuple[int, str, str]:
    """`convene ARGS` as its own process, without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *CONVENE, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_backup_during_a_ballot_stream_restores_every_acknowledged_ballot(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", free_port()
    init_node(data, port)
    org = add_member(data, "Olu", "organizer")
    voters = await add_members_in_process(data, 16)
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    acked: set[str] = set()
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as http:
            status, p = await call(
                http, "POST", f"{node.url}/api/proposals", org["token"],
                {"title": "Rent strike", "method": "choice", "options": ["yes", "no"]},
            )  # fmt: skip
            assert status == 201
            target = f"{node.url}/api/proposals/{p['id']}/ballots"

            async def stream(token: str) -> None:
                i = 0
                while not stop.is_set():
                    status, out = await call(http, "POST", target, token, {"choice": "yes"})
                    assert status == 201, out
                    acked.add(out["receipt"])
                    i += 1

            streams = [asyncio.create_task(stream(v.token)) for v in voters]
            while len(acked) < 200:
                await asyncio.sleep(0.01)
            before = set(acked)  # acknowledged before the backup began
            code, out, err = await convene(
                "backup", "--data", str(data), "--out", str(tmp_path / "b.tar.gz"), "--json"
            )
            during = len(acked) - len(before)
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*streams)
    finally:
        node.stop()
    assert code == 0, err
    assert during > 0, "the stream did not go on while the backup ran"
    manifest = json.loads(out)
    assert manifest["actor"] == f"http://127.0.0.1:{port}/actor"

    restored = tmp_path / "restored"
    result = run_cli("restore", str(tmp_path / "b.tar.gz"), "--data", str(restored), "--json")
    facts = json.loads(result.stdout)
    assert facts["chain_length"] == manifest["chain_length"]
    import sqlite3

    conn = sqlite3.connect(restored / "convene.sqlite3")
    receipts = {r[0] for r in conn.execute("SELECT receipt FROM ballots")}
    entries = [
        json.loads(r[0]) for r in conn.execute("SELECT entry FROM chain_entries ORDER BY seq")
    ]
    conn.close()
    assert before <= receipts, f"{len(before - receipts)} acknowledged ballots missing"
    assert receipts <= acked  # nothing invented
    state = chain.verify_chain(entries)
    assert state.actor == manifest["actor"] and state.next_seq == len(entries)
    assert oct(restored.stat().st_mode & 0o777) == "0o700"
    assert all((restored / name).stat().st_mode & 0o077 == 0 for name in BACKUP_FILES), (
        "keys and database readable by others"
    )

    # The restored folder is a working node: it serves, and closes the vote it held.
    async with serving(restored) as (_, url), aiohttp.ClientSession() as http:
        assert (await get(http, f"{url}/healthz"))[0] == 200
        status, closed = await call(
            http, "POST", f"{url}/api/proposals/{p['id']}/close", org["token"]
        )
        assert status == 200, closed
        assert closed["tally"]["cast"] == len(voters)


async def test_backups_taken_while_keys_rotate_always_restore(tmp_path: Path) -> None:
    """A rotation swaps the seed file just after its commit; a backup spanning that
    moment takes its copy again rather than pair a chain with the wrong key."""
    from node.ops import backup, restore

    data = await new_node(tmp_path, "riverside")
    admin = add_member(data, "Ada", "admin")
    async with serving(data) as (_, url), aiohttp.ClientSession() as http:
        rotations = 0

        async def rotate() -> None:
            nonlocal rotations
            for _ in range(12):
                status, out = await call(http, "POST", f"{url}/api/keys/rotate", admin["token"])
                assert status == 200, out
                rotations += 1
                await asyncio.sleep(0.05)  # spread over several backups

        rotating = asyncio.create_task(rotate())
        archives: list[Path] = []
        while not rotating.done():
            out = tmp_path / f"b{len(archives)}.tar.gz"
            await asyncio.to_thread(backup, data, out, now=1_800_000_000.0)
            archives.append(out)
        await rotating
    assert rotations == 12 and len(archives) >= 2
    for i, archive in enumerate(archives):
        facts = restore(archive, tmp_path / f"r{i}")
        assert facts["chain_length"] >= 2  # genesis, the admin, rotations so far


def cli(*args: str) -> tuple[int, str, str]:
    """`convene ARGS` in this process (click's runner): the fast path for sync tests."""
    done = run_cli(*args, check=False)
    return done.returncode, done.stdout, done.stderr


def test_restore_refuses_a_folder_that_holds_a_node(tmp_path: Path) -> None:
    data = asyncio.run(new_node(tmp_path, "riverside"))
    out = tmp_path / "b.tar.gz"
    assert (cli("backup", "--data", str(data), "--out", str(out)))[0] == 0
    before = (data / "convene.sqlite3").read_bytes()
    code, _, err = cli("restore", str(out), "--data", str(data), "--json")
    assert code == 1
    answer = json.loads(err)
    assert answer["error"] == "conflict" and "holds a node" in answer["detail"]
    assert (data / "convene.sqlite3").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = cli("restore", str(out), "--data", str(tmp_path / "other"))
    assert code == 1 and "not empty" in err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_restore_fills_an_empty_folder_in_place(tmp_path: Path) -> None:
    """Like Docker's /data: the folder exists, is empty, and must stay the same folder
    (a volume's mount point can be neither removed nor replaced)."""
    data = asyncio.run(new_node(tmp_path, "riverside"))
    out = tmp_path / "b.tar.gz"
    assert cli("backup", "--data", str(data), "--out", str(out))[0] == 0
    volume = tmp_path / "volume"
    volume.mkdir()
    inode = volume.stat().st_ino
    code, _, err = cli("restore", str(out), "--data", str(volume))
    assert code == 0, err
    assert volume.stat().st_ino == inode
    assert sorted(p.name for p in volume.iterdir()) == ["convene.sqlite3", "convene.toml", "keys"]
    assert (volume / "convene.sqlite3").read_bytes() != b""


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def _write(
    archive: Path, members: dict[str, bytes], *, fix_manifest: bool = False, twice: str = ""
) -> None:
    if fix_manifest:
        import hashlib

        manifest = json.loads(members[MANIFEST])
        for name, blob in members.items():
            if name != MANIFEST:
                manifest["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest()}
        members = {**members, MANIFEST: json.dumps(manifest).encode()}
    items = list(members.items()) + ([(twice, members[twice])] if twice else [])
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in items:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


def _tamper_chain(db: bytes, tmp: Path) -> bytes:
    """The database with one signed chain entry's name changed (proof left alone)."""
    import sqlite3

    path = tmp / "t.sqlite3"
    path.write_bytes(db)
    conn = sqlite3.connect(path)
    blob = conn.execute("SELECT entry FROM chain_entries WHERE seq = 0").fetchone()[0]
    entry = json.loads(blob)
    entry["name"] = entry["name"] + "!"
    conn.execute("UPDATE chain_entries SET entry = ? WHERE seq = 0", (json.dumps(entry),))
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    "damage, why",
    [
        ("flip_database", "convene.sqlite3 does not match the SHA-256"),
        ("flip_key", "keys/ed25519.seed does not match the SHA-256"),
        ("stray_member", "unexpected member '../evil'"),
        ("no_key", "keys/rsa.pem is missing"),
        ("not_an_archive", "not a readable backup archive"),
        ("chain", "the signature chain does not verify: actor"),
        ("other_key", "is not the key the chain of"),
        ("version", "is not convene-backup 1"),
        ("twice", "convene.sqlite3 appears twice"),
    ],
)
def test_restore_names_what_is_wrong_with_a_bad_archive(
    tmp_path: Path, damage: str, why: str
) -> None:
    data = asyncio.run(new_node(tmp_path, "riverside"))
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    assert (cli("backup", "--data", str(data), "--out", str(good)))[0] == 0
    m = _members(good)
    if damage == "flip_database":
        _write(bad, {**m, "convene.sqlite3": _flip(m["convene.sqlite3"], 5000)})
    elif damage == "flip_key":
        _write(bad, {**m, "keys/ed25519.seed": _flip(m["keys/ed25519.seed"], 0)})
    elif damage == "stray_member":
        _write(bad, {**m, "../evil": b"x"})
    elif damage == "no_key":
        _write(bad, {k: v for k, v in m.items() if k != "keys/rsa.pem"})
    elif damage == "not_an_archive":
        bad.write_bytes(os.urandom(2048))
    elif damage == "chain":
        _write(bad, {**m, "convene.sqlite3": _tamper_chain(m["convene.sqlite3"], tmp_path)},
               fix_manifest=True)  # fmt: skip
    elif damage == "other_key":
        _write(bad, {**m, "keys/ed25519.seed": bytes(32)}, fix_manifest=True)
    elif damage == "twice":
        _write(bad, m, twice="convene.sqlite3")
    elif damage == "version":
        manifest = {**json.loads(m[MANIFEST]), "version": 99}
        _write(bad, {**m, MANIFEST: json.dumps(manifest).encode()})
    code, _, err = cli("restore", str(bad), "--data", str(tmp_path / "r"), "--json")
    assert code == 1
    answer = json.loads(err)
    assert answer["error"] == "bad_backup"
    assert why in answer["detail"] and str(bad) in answer["detail"], answer
    assert not (tmp_path / "r").exists(), "a refused restore leaves nothing behind"
    # The untouched archive restores: the failure above is the damage, not the tool.
    code, _, err = cli("restore", str(good), "--data", str(tmp_path / "r"))
    assert code == 0, err


def test_backup_of_a_missing_node_says_where(tmp_path: Path) -> None:
    code, _, err = cli(
        "backup", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "b.tar.gz")
    )
    assert code == 1
    assert "no node in" in err and str(tmp_path / "none") in err
    assert not (tmp_path / "b.tar.gz").exists()


def test_backup_to_a_place_it_cannot_write_says_why(tmp_path: Path) -> None:
    data = asyncio.run(new_node(tmp_path, "riverside"))
    (tmp_path / "a-file").write_text("not a folder")
    target = tmp_path / "a-file" / "b.tar.gz"
    code, _, err = cli("backup", "--data", str(data), "--out", str(target), "--json")
    assert code == 1
    answer = json.loads(err)
    assert answer["error"] == "io_error" and "a-file" in answer["detail"]


def test_backup_commands_are_on_the_convene_cli() -> None:
    out = run_cli("--help").stdout
    assert "backup" in out and "restore" in out


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
