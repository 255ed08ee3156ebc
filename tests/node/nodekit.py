"""Running real `convene` processes on loopback for the node's tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]


class FakeClock:
    """A clock tests move by hand (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_process(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`convene ARGS` as its own process (use inside a running event loop)."""
    result = subprocess.run([*CONVENE, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"convene {' '.join(args)} failed: {result.stderr}")
    return result


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, check: bool = True) -> CliResult:
    """`convene ARGS` in this process through click's runner (fast); inside a running
    event loop (where the commands' own asyncio.run cannot nest) as its own process."""
    import asyncio

    from click.testing import CliRunner

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        done = run_process(*args, check=check)
        return CliResult(done.returncode, done.stdout, done.stderr)

    from node.cli import main

    outcome = CliRunner().invoke(main, list(args))
    result = CliResult(outcome.exit_code, outcome.stdout, outcome.stderr)
    if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    if check and result.returncode != 0:
        raise AssertionError(f"convene {' '.join(args)} failed: {result.stderr}")
    return result


def cli_json(*args: str) -> Any:
    return json.loads(run_cli(*args, "--json").stdout)


@dataclass
class NodeProcess:
    data: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *CONVENE,
                "serve",
                "--data",
                str(self.data),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--allow-private-network",
                *self.extra,
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=self.log,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"node did not start: {self.log_path.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        if hasattr(self, "log"):
            self.log.close()


def init_node(data: Path, port: int, *, kind: str = "chapter") -> dict[str, Any]:
    out: dict[str, Any] = cli_json(
        "init",
        "--data",
        str(data),
        "--name",
        "Riverside",
        "--url",
        f"http://127.0.0.1:{port}",
        "--kind",
        kind,
    )
    return out


def add_member(data: Path, name: str, role: str = "member") -> dict[str, Any]:
    out: dict[str, Any] = cli_json("member", "add", name, "--role", role, "--data", str(data))
    return out


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = bearer(token) if token else {}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, headers=headers) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except json.JSONDecodeError:
            return response.status, text


async def add_members_in_process(data: Path, count: int, role: str = "member") -> list[Any]:
    """Many members at once through the Members service on the node's own file."""
    from node.config import load_config
    from node.services import build_services

    services = build_services(load_config(data))
    await services.db.open()
    try:
        return [await services.members.add(f"voter {i}", role) for i in range(count)]
    finally:
        await services.db.close()


def read_db(data: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(data / "convene.sqlite3")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
