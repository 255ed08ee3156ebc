"""node/backup.py through `convene backup` / `convene restore` and its functions, on
real nodes and real SQLite files."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from pathlib import Path

import aiohttp
import pytest
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
from servekit import get, new_node, serving

from node.backup import BACKUP_FILES, MANIFEST
from protocol import chain


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
    from node.backup import backup, restore

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
