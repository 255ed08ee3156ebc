"""Ballots accepted per second over HTTP, beside plain aiohttp POSTs on the same machine.

A real `convene serve` process on loopback takes ballots from 50 concurrent clients;
each ballot is authenticated, validated, given a receipt and committed durably
(synchronous=FULL, group commit) before its 201. The floor is a bare aiohttp server
(its own process) that decodes the JSON body and answers 201, driven by the same
clients for the same time. A second floor is the disk's: bare SQLite commits a second
(WAL, synchronous=FULL, one small row each) in the same folder, since a durable
ballot can never be acknowledged faster than its commit. Also reports the node's CPU
per ballot, the machine's load average at the start, and the idle RSS of `convene serve`.

    python bench/node_ballots.py [--quick]

Ends with one line: RESULT ballots_per_s=... plain_post_per_s=... ratio=... idle_rss_mb=...
node_cpu=... cpu_us_per_ballot=... commits_per_s=... load1=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIENTS = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commit_floor(folder: Path, seconds: float) -> float:
    """Bare durable SQLite commits a second on this disk (the storage floor)."""
    conn = sqlite3.connect(folder / "floor.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (x TEXT)")
        done, stop_at = 0, time.monotonic() + seconds
        started = time.monotonic()
        while time.monotonic() < stop_at:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 300,))
            conn.execute("COMMIT")
            done += 1
        return done / (time.monotonic() - started)
    finally:
        conn.close()


def plain_server(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"ok": bool(body)}, status=201)

    app = web.Application()
    app.router.add_post("/post", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def drive(url: str, tokens: list[str], body: dict[str, Any], seconds: float) -> int:
    """CLIENTS loops posting until the time is up; returns how many got a 201."""
    done = 0
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(i: int) -> None:
            nonlocal done
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
            while time.monotonic() < stop_at:
                async with http.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status != 201:
                        raise SystemExit(f"unexpected {response.status} from {url}")
                    done += 1

        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return done


async def setup_node(data: Path) -> tuple[list[str], str]:
    from node.bootstrap import init_node
    from node.config import load_config
    from node.services import build_services

    await init_node(data, name="Bench", url="http://127.0.0.1:1")
    services = build_services(load_config(data))
    await services.db.open()
    try:
        org = await services.members.add("organizer", "organizer")
        voters = [await services.members.add(f"voter {i}") for i in range(CLIENTS)]
    finally:
        await services.db.close()
    return [v.token for v in voters], org.token


async def run(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        tokens, org_token = await setup_node(data)
        port = free_port()
        node = subprocess.Popen(
            [sys.executable, "-c", "from node.cli import main; main()", "serve", "--data",
             str(data), "--port", str(port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port, node)
            await asyncio.sleep(1.0)
            idle = rss_mb(node.pid)
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{port}/api/proposals",
                    json={"title": "bench", "method": "choice", "options": ["a", "b"]},
                    headers={"Authorization": f"Bearer {org_token}"},
                ) as response,
            ):
                proposal = await response.json()
            target = f"http://127.0.0.1:{port}/api/proposals/{proposal['id']}/ballots"
            await drive(target, tokens, {"choice": "a"}, min(1.0, seconds / 3))  # warm up
            started, cpu = time.monotonic(), cpu_seconds(node.pid)
            ballots = await drive(target, tokens, {"choice": "b"}, seconds)
            elapsed = time.monotonic() - started
            ballots_per_s = ballots / elapsed
            node_cpu = (cpu_seconds(node.pid) - cpu) / elapsed
        finally:
            node.terminate()
            node.wait(timeout=10)
        commits_per_s = commit_floor(Path(tmp), min(2.0, seconds / 2))

    port = free_port()
    plain = subprocess.Popen([sys.executable, __file__, "--plain-server", str(port)], cwd=ROOT)
    try:
        wait_port(port, plain)
        target = f"http://127.0.0.1:{port}/post"
        await drive(target, ["x"], {"choice": "a"}, min(1.0, seconds / 3))
        started = time.monotonic()
        posts = await drive(target, ["x"], {"choice": "b"}, seconds)
        plain_per_s = posts / (time.monotonic() - started)
    finally:
        plain.terminate()
        plain.wait(timeout=10)
    return {
        "ballots_per_s": ballots_per_s,
        "plain_post_per_s": plain_per_s,
        "ratio": ballots_per_s / plain_per_s,
        "idle_rss_mb": idle,
        "node_cpu": node_cpu,
        "cpu_us_per_ballot": node_cpu / ballots_per_s * 1e6,
        "commits_per_s": commits_per_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    parser.add_argument("--plain-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_server:
        plain_server(args.plain_server)
        return
    seconds = 4.0 if args.quick else 15.0
    load1 = os.getloadavg()[0]
    result = asyncio.run(run(seconds))
    print(f"ballots accepted/s (durable, 50 clients): {result['ballots_per_s']:.0f}")
    print(f"plain aiohttp POST/s (floor, same clients): {result['plain_post_per_s']:.0f}")
    print(
        f"ratio: {result['ratio']:.2f}   idle RSS of convene serve: {result['idle_rss_mb']:.1f} MB"
    )
    print(
        f"node CPU: {result['node_cpu']:.2f} cores, {result['cpu_us_per_ballot']:.0f} µs a ballot"
    )
    print(
        f"bare durable SQLite commits/s on this disk (floor): {result['commits_per_s']:.0f}"
        f"   load average at start: {load1:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        "RESULT "
        f"ballots_per_s={result['ballots_per_s']:.0f} "
        f"plain_post_per_s={result['plain_post_per_s']:.0f} "
        f"ratio={result['ratio']:.3f} "
        f"idle_rss_mb={result['idle_rss_mb']:.1f} "
        f"node_cpu={result['node_cpu']:.2f} "
        f"cpu_us_per_ballot={result['cpu_us_per_ballot']:.0f} "
        f"commits_per_s={result['commits_per_s']:.0f} "
        f"load1={load1:.1f}"
    )


if __name__ == "__main__":
    main()
