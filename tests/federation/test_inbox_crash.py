"""Store first, then act: an inbox process killed with -9 before its handlers ran
loses nothing. Real processes, real HTTP on 127.0.0.1, one real SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from federation import httpsig
from protocol import entries
from protocol.keys import SigningKey

ROOT = Path(__file__).resolve().parents[2]
ACTOR = "https://chapter.test/actor"
SEED = bytes(range(32))

SERVER = """
import asyncio, sys
from pathlib import Path
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from federation.inbox import Inbox, TransportKey
from protocol.keys import SigningKey

db, pem, mode, log = sys.argv[1], Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
public = serialization.load_pem_public_key(pem.read_bytes())
entry_key = SigningKey.from_seed(bytes(range(32))).verify_key

async def transport_key(key_id, refresh):
    return TransportKey("https://chapter.test/actor", public)

async def entry_key_at(actor, seq, method):
    return entry_key

async def on_create(activity):
    if mode == "stall":
        await asyncio.Event().wait()  # killed before any handler finishes
    with log.open("a") as f:
        f.write(activity.activity_id + "\\n")

async def main():
    inbox = Inbox(db, transport_keys=transport_key, entry_keys=entry_key_at,
                  handlers={"Create": on_create}, scheme="http")
    await inbox.start()
    app = web.Application()
    app.router.add_post("/inbox", inbox.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def spawn(tmp: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    script = tmp / "inbox_server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tmp / "node.db"),
            str(tmp / "key.pem"),
            mode,
            str(tmp / "handled.log"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def activity_body(n: int) -> bytes:
    entry = entries.make_entry(
        {"type": "Tally", "summary": f"tally {n}"},
        actor=ACTOR,
        seq=n,
        prev=None if n == 0 else "0" * 64,
        key=SigningKey.from_seed(SEED),
        key_id=entries.key_id(ACTOR, 0),
        published="2026-11-26T14:00:00Z",
    )
    return msgspec.json.encode(
        {
            "id": f"https://chapter.test/activities/{n}",
            "type": "Create",
            "actor": ACTOR,
            "object": entry,
        }
    )


async def deliver(port: int, key: rsa.RSAPrivateKey, n: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{port}/inbox"
    body = activity_body(n)
    headers = {"Content-Type": "application/activity+json"}
    headers.update(
        httpsig.sign_request(
            "POST",
            url,
            headers,
            body,
            key_id=f"{ACTOR}#main-key",
            private_key=key,
            now=datetime.now(UTC),
        )
    )
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        assert r.status == 202, await r.text()
        answer: dict[str, str] = await r.json()
        return answer


def handled(tmp: Path) -> list[str]:
    log = tmp / "handled.log"
    return log.read_text().split() if log.exists() else []


async def test_inbox_killed_before_processing_handles_everything_after_restart(
    tmp_path: Path,
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "key.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    proc, port = spawn(tmp_path, "stall")
    try:
        for n in range(5):
            assert (await deliver(port, key, n))["status"] == "accepted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with sqlite3.connect(tmp_path / "node.db") as conn:
        states = conn.execute("SELECT state FROM fed_incoming").fetchall()
    assert states == [("received",)] * 5  # acknowledged 202, stored, not yet acted on
    assert handled(tmp_path) == []

    proc, port = spawn(tmp_path, "work")
    try:
        deadline = time.monotonic() + 15
        while len(handled(tmp_path)) < 5:
            assert time.monotonic() < deadline, handled(tmp_path)
            await asyncio.sleep(0.05)
        # The sender, never sure its first try arrived, sends one again: not redone.
        assert (await deliver(port, key, 3))["status"] == "duplicate"
        await asyncio.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert sorted(handled(tmp_path)) == [f"https://chapter.test/activities/{n}" for n in range(5)]
