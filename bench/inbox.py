"""Signed activities accepted per second by one inbox, beside a floor.

The load: N distinct Create activities, each carrying a signed chain entry
(eddsa-jcs-2022) and signed for transport (draft-cavage rsa-sha256, RSA-2048, with
Digest), all made before timing starts. They are sent from this process over 64
keep-alive connections, opened once and kept for the whole run, by a bare asyncio
protocol that writes pre-built HTTP/1.1 requests and reads only each answer's status
and length (about 50 us of CPU a request, which the server does not get on a 2-core
machine; floor and inbox are driven by the very same code). The server runs in
another process:

- floor: a bare aiohttp handler doing only the unavoidable work on each request:
  read the body, the RSA verify of the HTTP signature and the Ed25519 verify of the
  object proof (with the JCS hashing that proof needs), and answer 202;
- inbox: federation.inbox.Inbox, the real thing: body bound, signature and digest and
  date checks, signer = actor, strict JSON, entry envelope, proof at its seq,
  dedupe, durable storage in a SQLite file (WAL, synchronous=FULL, group commit).

Both servers get the same bytes and run on one core each. Key resolvers answer from
memory, as a warm actor cache does. Prints the ratio and ends with one RESULT line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from aiohttp import web  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from federation import httpsig  # noqa: E402
from federation.inbox import Inbox, IncomingActivity, TransportKey  # noqa: E402
from protocol import entries, proofs  # noqa: E402
from protocol.keys import SigningKey, VerifyKey  # noqa: E402

ACTOR = "https://chapter.bench/actor"
KEY_ID = f"{ACTOR}#main-key"
SEED = bytes(range(32))
# Requests in flight. The inbox answers each one only after its batch's fsync, a few
# turns of its event loop later; with too few in flight it idles waiting for its own
# commits whenever the machine is busy, and the figure measures latency rather than
# how many activities it can take. The floor answers at once and does not care.
CONNECTIONS = 128
WARMUP = 200
# Requests per round. A round ends with fewer requests in flight than connections, so
# rounds much shorter than this measure the tail more than the steady state.
ROUND = 1000


def _rsa_key(keys: Path) -> rsa.RSAPrivateKey:
    pem = keys / "rsa.pem"
    if not pem.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    loaded = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


# --- servers (run in a child process) ---------------------------------------------


def serve(kind: str, port: int, keys: Path, db: Path) -> None:
    public = _rsa_key(keys).public_key()
    entry_key = SigningKey.from_seed(SEED).verify_key

    if kind == "floor":

        async def floor(request: web.Request) -> web.Response:
            body = await request.read()
            parsed = httpsig.parse_signature_headers(
                "POST", request.raw_path, request.headers, body, scheme="http"
            )
            httpsig.verify_request(parsed, public, now=datetime.now(UTC))
            proofs.verify_proof(msgspec.json.decode(body)["object"], entry_key)
            return web.Response(status=202)

        app = web.Application()
        app.router.add_post("/inbox", floor)
    else:

        async def transport_key(key_id: str, refresh: bool) -> TransportKey:
            return TransportKey(ACTOR, public)

        async def entry_key_at(actor: str, seq: int, method: str) -> VerifyKey:
            return entry_key

        async def handled(activity: IncomingActivity) -> None:
            return None

        inbox = Inbox(
            db,
            transport_keys=transport_key,
            entry_keys=entry_key_at,
            handlers={"Create": handled},
            scheme="http",
        )

        async def ctx(app: web.Application) -> Any:
            await inbox.start()
            yield
            await inbox.stop()

        app = web.Application()
        app.cleanup_ctx.append(ctx)
        app.router.add_post("/inbox", inbox.handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- load (this process) ----------------------------------------------------------


def make_requests(n: int, port: int, keys: Path) -> list[bytes]:
    """Raw HTTP/1.1 requests: N activities, each signed for 127.0.0.1:port."""
    private = _rsa_key(keys)
    signer = SigningKey.from_seed(SEED)
    out: list[bytes] = []
    now = datetime.now(UTC)
    for i in range(n):
        entry = entries.make_entry(
            {"type": "Tally", "summary": f"tally {i}", "counts": {"agree": i, "block": 0}},
            actor=ACTOR,
            seq=i,
            prev=None if i == 0 else f"{i:064x}",
            key=signer,
            key_id=entries.key_id(ACTOR, 0),
            published="2026-11-26T14:00:00Z",
        )
        body = msgspec.json.encode(
            {
                "@context": "https://www.w3.org/ns/activitystreams",
                "id": f"https://chapter.bench/activities/{i}",
                "type": "Create",
                "actor": ACTOR,
                "to": ["https://region.bench/actor"],
                "object": entry,
            }
        )
        url = f"http://127.0.0.1:{port}/inbox"
        headers = {"Content-Type": "application/activity+json"}
        headers.update(
            httpsig.sign_request(
                "POST", url, headers, body, key_id=KEY_ID, private_key=private, now=now
            )
        )
        headers["Content-Length"] = str(len(body))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(f"POST /inbox HTTP/1.1\r\n{head}\r\n".encode() + body)
    return out


class _Connection(asyncio.Protocol):
    """One keep-alive connection of the load: it writes a pre-built request, reads
    the answer's status line and Content-Length, and writes the next one. A bare
    protocol rather than streams, so the load takes little of the CPU the server
    needs on a 2-core machine; both servers are driven by the very same code."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.round: _Round | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if self.round is not None:
            self.round.fail(f"connection closed: {exc}")

    def send_next(self) -> None:
        assert self.round is not None and self.transport is not None
        work = self.round.work
        if work:
            self.transport.write(work.pop())
        else:
            self.round.idle(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            at = head.lower().find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            if len(buf) < end + 4 + length:
                break
            buf = buf[end + 4 + length :]
            assert self.round is not None
            self.round.answered(int(head[9:12]))
            self.send_next()
        self.buf = buf


class _Round:
    """One batch of requests spread over the open connections; done when all are
    answered."""

    def __init__(self, requests: list[bytes], conns: list[_Connection]) -> None:
        self.work = list(reversed(requests))
        self.counts: dict[int, int] = {}
        self.busy = len(conns)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for c in conns:
            c.round = self
        for c in conns:
            c.send_next()

    def answered(self, status: int) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def idle(self, conn: _Connection) -> None:
        conn.round = None
        self.busy -= 1
        if self.busy == 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(SystemExit(f"load: {why}"))


class Load:
    """``connections`` keep-alive connections to one server, opened once and reused
    by every round, as federating peers keep their connections to a busy inbox."""

    def __init__(self, port: int, connections: int) -> None:
        self.port = port
        self.connections = connections
        self.conns: list[_Connection] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.connections):
            _, conn = await loop.create_connection(_Connection, "127.0.0.1", self.port)
            self.conns.append(conn)

    async def run(self, requests: list[bytes], kind: str) -> float:
        started = time.perf_counter()
        r = _Round(requests, self.conns)
        await r.done
        elapsed = time.perf_counter() - started
        if r.counts.get(202, 0) != len(requests):
            raise SystemExit(f"{kind}: expected only 202 answers, got {r.counts}")
        return elapsed

    def close(self) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(kind: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--keys", str(tmp)]
    proc = subprocess.Popen([*cmd, "--db", str(tmp / "inbox.db")])
    _wait_listening(port, proc)
    return proc


async def alternate(
    ports: dict[str, int],
    procs: dict[str, subprocess.Popen[bytes]],
    reqs: list[bytes],
    rounds: int,
    size: int,
    connections: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Warm up both servers, then alternate rounds of SIZE requests between them."""
    wall = {kind: 0.0 for kind in ports}
    cpu = {kind: 0.0 for kind in ports}
    loads = {kind: Load(port, connections) for kind, port in ports.items()}
    try:
        for kind, load in loads.items():
            await load.open()
            await load.run(reqs[:WARMUP], kind)
        for r in range(rounds):
            part = reqs[WARMUP + r * size : WARMUP + (r + 1) * size]
            for kind, load in loads.items():
                before = _cpu_seconds(procs[kind].pid)
                wall[kind] += await load.run(part, kind)
                cpu[kind] += _cpu_seconds(procs[kind].pid) - before
    finally:
        for load in loads.values():
            load.close()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    parser.add_argument("--serve", choices=["floor", "inbox"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--keys", type=Path)
    parser.add_argument("--db", type=Path)
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="requests in flight (both servers)"
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.keys, args.db)
        return
    rounds, size = (4, ROUND) if args.quick else (12, ROUND)
    n = WARMUP + rounds * size
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="convene-bench-") as d:
        tmp = Path(d)
        # Both servers get the very same bytes (neither checks Host against its own
        # port). The phases alternate in rounds of ROUND requests (about half a
        # second each), so that bursts of other load on the machine weigh on both alike.
        ports = {"floor": _free_port(), "inbox": _free_port()}
        t0 = time.perf_counter()
        reqs = make_requests(n, ports["floor"], tmp)
        print(f"signed {n} activities in {time.perf_counter() - t0:.1f} s")
        procs = {kind: start_server(kind, port, tmp) for kind, port in ports.items()}
        client0 = time.process_time()
        try:
            wall, cpu = asyncio.run(alternate(ports, procs, reqs, rounds, size, args.connections))
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=10)
        client_cpu = time.process_time() - client0
        with sqlite3.connect(tmp / "inbox.db") as conn:
            stored = conn.execute("SELECT COUNT(*) FROM fed_incoming").fetchone()[0]
        if stored != n:
            raise SystemExit(f"inbox stored {stored} of {n} activities")
    done = rounds * size
    load_end = os.getloadavg()[0]
    floor_rate, inbox_rate = done / wall["floor"], done / wall["inbox"]
    ratio = inbox_rate / floor_rate
    per = {kind: cpu[kind] / done * 1e6 for kind in cpu}
    print(f"floor (bare aiohttp, RSA + Ed25519 verify only): {floor_rate:,.0f} /s")
    print(f"inbox (verified, deduped, stored in SQLite):     {inbox_rate:,.0f} /s")
    for kind in ("floor", "inbox"):
        print(f"  {kind} server CPU per activity: {per[kind]:,.0f} us (all threads)")
    print(f"  load generator CPU per request: {client_cpu / (n * 2) * 1e6:,.0f} us")
    print(f"  load average: {load_start:.2f} at start, {load_end:.2f} at end (2 cores)")
    print(f"  {args.connections} keep-alive connections to each server")
    print(f"ratio inbox/floor: {ratio:.2f} (target >= 0.6); stored {stored} of {n}")
    print(
        f"RESULT accepted_per_s={inbox_rate:.0f} floor_per_s={floor_rate:.0f} ratio={ratio:.2f}"
        f" inbox_cpu_us={per['inbox']:.0f} floor_cpu_us={per['floor']:.0f}"
        f" load_start={load_start:.2f} load_end={load_end:.2f} connections={args.connections}"
    )


if __name__ == "__main__":
    main()
