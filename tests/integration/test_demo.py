"""`convene demo --no-wait --out FILE` as a user runs it: four real node processes, a
regional vote, the printed decision and audit; the bundle it writes audits clean with
`convene audit`, and a copy with one tally count changed does not."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from node.cli import main

CONVENE = [sys.executable, "-c", "from node.cli import main; main()"]


def audit(path: Path) -> tuple[int, str]:
    outcome = CliRunner().invoke(main, ["audit", str(path), "--jobs", "1"])
    return outcome.exit_code, outcome.stdout


def test_the_demo_votes_end_to_end_and_its_bundle_audits(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    started = time.monotonic()
    done = subprocess.run(
        [*CONVENE, "demo", "--no-wait", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert elapsed < 60
    printed = done.stdout
    for name in ("Riverside", "Hillcrest", "Lakeview"):
        assert f"{name} computed it itself: verified (same outcome: True)" in printed
    assert "rule double-majority: PASSED" in printed
    assert "failed (counted)" in printed  # Lakeview disagreed
    assert "VALID: every signature" in printed and "decisions  1/1 verified" in printed

    code, report = audit(out)
    assert code == 0, report
    assert "tallies    3/3 verified" in report

    lines = out.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"type":"Tally"' in line)
    found = re.search(rb'"agree":(\d+)', lines[at])
    assert found is not None
    more = b'"agree":%d' % (int(found[1]) + 1)  # one more agree than was signed
    lines[at] = lines[at][: found.start()] + more + lines[at][found.end() :]
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines))
    code, report = audit(tampered)
    assert code == 1, report
    assert "INVALID" in report
