"""node/cli_support.py through the real `convene` script: errors leave as one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

CONVENE = str(Path(sys.executable).with_name("convene"))


def test_an_os_error_is_one_line_and_status_1_not_a_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [CONVENE, "init", "--name", "c", "--url", "http://127.0.0.1:9", "--data", str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        done = subprocess.run(
            [CONVENE, "serve", "--host", "127.0.0.1", "--port", port, "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (last,) = [line for line in done.stderr.splitlines() if line.startswith("convene: ")]
    assert "address already in use" in last and port in last


def test_with_json_the_error_is_a_json_object(tmp_path: Path) -> None:
    done = subprocess.run(
        [CONVENE, "member", "list", "--data", str(tmp_path / "none"), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    answer = json.loads(done.stderr)
    assert answer["error"] and str(tmp_path / "none") in answer["detail"]
