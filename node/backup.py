"""Backup and restore of a node's data folder: `convene backup`, `convene restore`.

Theory of operation. `convene backup` copies the live database with SQLite's online
backup API in one step (one read transaction, so the copy is one consistent point in
time; in WAL mode the writer is never blocked) and archives it with the keys and the
config, each file listed with its SHA-256 in a manifest. The key files are copied at
the database copy's own instant, and the copy is retaken when a key rotation
straddles it. `convene restore` accepts only that layout, checks every digest, the
database's integrity, its signature chain and that the key is the chain's, and only
then moves the files in (the database last), never over an existing node.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import click

from node.cli_support import common_options, emit, guarded
from node.config import CONFIG_FILE, DATABASE_FILE
from node.errors import Conflict, NodeError, NotFound
from node.identity import ED25519_FILE, KEY_DIR, RSA_FILE
from protocol import chain
from protocol.errors import ProtocolError
from protocol.keys import SigningKey

BACKUP_FORMAT = "convene-backup"
BACKUP_VERSION = 1
MANIFEST = "manifest.json"
SEED_PATH = f"{KEY_DIR}/{ED25519_FILE}"
RSA_PATH = f"{KEY_DIR}/{RSA_FILE}"
# Exactly these members, nothing else: a restore never writes a name it did not expect.
BACKUP_FILES = (DATABASE_FILE, CONFIG_FILE, SEED_PATH, RSA_PATH)
_MANIFEST_MAX = 64 * 1024


class BackupError(NodeError):
    code = "bad_backup"
    status = 400


def _check_database(path: Path, where: str) -> dict[str, Any]:
    """Integrity, identity and a verified chain of the database at `path`."""
    conn = sqlite3.connect(path)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"{where}: the database fails its integrity check: {check}")
        row = conn.execute("SELECT actor, url, kind FROM node_identity WHERE id = 1").fetchone()
        if row is None:
            raise BackupError(f"{where}: the database holds no node identity")
        blobs = [r[0] for r in conn.execute("SELECT entry FROM chain_entries ORDER BY seq")]
        schema = dict(
            conn.execute("SELECT component, MAX(version) FROM schema_migrations GROUP BY component")
        )
        ballots = int(conn.execute("SELECT COUNT(*) FROM ballots").fetchone()[0])
    except sqlite3.Error as exc:
        raise BackupError(f"{where}: not a readable convene database: {exc}") from exc
    finally:
        conn.close()
    try:
        state = chain.verify_chain([json.loads(blob) for blob in blobs])
    except ProtocolError as exc:
        raise BackupError(
            f"{where}: the signature chain does not verify: {exc.describe()}"
        ) from exc
    return {
        "actor": row[0],
        "url": row[1],
        "kind": row[2],
        "chain_length": state.next_seq,
        "key": state.key.multibase,
        "ballots": ballots,
        "schema": schema,
    }


def _snapshot(database: Path, into: Path, beside: Callable[[], None]) -> None:
    """One consistent copy of a live database (SQLite online backup, a single step),
    with `beside()` (copying the key files) run at the instant the copy shows."""
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30.0)
    try:
        source.isolation_level = None
        target = sqlite3.connect(into)
        try:
            # The read transaction fixes the instant; the backup step reads inside it.
            source.execute("BEGIN")
            source.execute("SELECT COUNT(*) FROM chain_entries").fetchone()
            beside()
            source.backup(target)  # pages=-1: all in one step
            source.execute("COMMIT")
            # A self-contained file: no -wal beside it is needed to read the copy.
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    finally:
        source.close()  # also when the copy could not even be created


def backup(data_dir: Path, out: Path, *, now: float) -> dict[str, Any]:
    """Write a backup archive of the node in `data_dir` to `out`; returns its manifest."""
    database = data_dir / DATABASE_FILE
    if not database.exists():
        raise NotFound(f"no node in {data_dir}: {database} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".convene-backup-") as tmp:
        sources, facts = _capture(data_dir, Path(tmp))
        manifest = {
            "format": BACKUP_FORMAT,
            "version": BACKUP_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            **facts,
            "files": {
                n: {"sha256": _file_sha256(p), "size": p.stat().st_size} for n, p in sources.items()
            },
        }
        partial = Path(tmp) / "archive.tar.gz"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds the keys
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            _add(tar, MANIFEST, len(blob), io.BytesIO(blob), now)
            for name, path in sources.items():  # streamed: memory stays flat for big files
                with path.open("rb") as handle:
                    _add(tar, name, path.stat().st_size, handle, now)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, out)  # the old archive stays until the new one is whole
    return manifest


def _capture(data_dir: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """Copy the database (one instant) and the files beside it into `tmp`, checked.

    A key rotation swaps the seed file just after its transaction commits, so a copy
    taken across that moment holds a seed the copied chain does not name: take it again.
    """
    database = data_dir / DATABASE_FILE
    sources = {DATABASE_FILE: tmp / DATABASE_FILE}
    (tmp / KEY_DIR).mkdir(mode=0o700, exist_ok=True)
    for name in BACKUP_FILES[1:]:
        if name != CONFIG_FILE or (data_dir / name).exists():
            sources[name] = tmp / name

    def copy_files() -> None:
        for name, path in sources.items():
            if name != DATABASE_FILE:
                shutil.copyfile(data_dir / name, path)

    attempts = 0
    while True:
        attempts += 1
        sources[DATABASE_FILE].unlink(missing_ok=True)
        try:
            _snapshot(database, sources[DATABASE_FILE], copy_files)
        except sqlite3.Error as exc:
            raise NodeError(f"cannot copy {database}: {exc}", code="backup_failed") from exc
        facts = _check_database(sources[DATABASE_FILE], f"snapshot of {database}")
        try:
            _check_key(tmp / SEED_PATH, facts, str(data_dir))
        except BackupError:
            if attempts == 5:
                raise
            time.sleep(0.1)
        else:
            return sources, facts


def _add(tar: tarfile.TarFile, name: str, size: int, data: IO[bytes], now: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(now), 0o600
    tar.addfile(info, data)


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _check_key(seed_path: Path, facts: dict[str, Any], where: str) -> None:
    try:
        key = SigningKey.from_seed(seed_path.read_bytes())
    except (OSError, ValueError, ProtocolError) as exc:
        raise BackupError(f"{where}: cannot read the node's signing key: {exc}") from exc
    if key.verify_key.multibase != facts["key"]:
        raise BackupError(
            f"{where}: {SEED_PATH} is not the key the chain of {facts['actor']} names "
            f"at seq {facts['chain_length'] - 1} ({facts['key']})"
        )


def _unpack(archive: Path, staging: Path) -> dict[str, Any]:
    """Write the archive's files into `staging`, check them against its manifest."""
    digests: dict[str, str] = {}
    raw = b""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.name not in (MANIFEST, *BACKUP_FILES) or not member.isfile():
                    raise BackupError(f"{archive}: unexpected member {member.name!r}")
                source = tar.extractfile(member)
                assert source is not None  # isfile() above
                if member.name == MANIFEST:
                    raw = source.read(_MANIFEST_MAX + 1)
                    continue
                digests[member.name] = _write_private(staging / member.name, source, archive)
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise BackupError(f"{archive}: not a readable backup archive: {exc}") from exc
    if not raw or len(raw) > _MANIFEST_MAX:
        raise BackupError(f"{archive}: no usable {MANIFEST}; not a convene backup")
    try:
        manifest: dict[str, Any] = json.loads(raw)
        listed: dict[str, Any] = manifest["files"]
        ok = manifest["format"] == BACKUP_FORMAT and manifest["version"] == BACKUP_VERSION
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{archive}: {MANIFEST} is malformed: {exc}") from exc
    if not ok:
        raise BackupError(
            f"{archive}: format {manifest.get('format')!r} version "
            f"{manifest.get('version')!r} is not {BACKUP_FORMAT} {BACKUP_VERSION}"
        )
    for name in (DATABASE_FILE, SEED_PATH, RSA_PATH):
        if name not in digests or name not in listed:
            raise BackupError(f"{archive}: {name} is missing")
    for name, digest in digests.items():
        entry = listed.get(name)
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            raise BackupError(
                f"{archive}: {name} does not match the SHA-256 in {MANIFEST} "
                "(the archive is damaged or was altered)"
            )
    return manifest


def _write_private(path: Path, source: IO[bytes], archive: Path) -> str:
    """Copy `source` to a new 0600 file, durably; return its SHA-256."""
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise BackupError(f"{archive}: {path.name} appears twice") from exc
    with os.fdopen(fd, "wb") as handle:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return digest.hexdigest()


def restore(archive: Path, data_dir: Path) -> dict[str, Any]:
    """Restore `archive` into `data_dir`, which must not exist or be empty."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        live = " (it holds a node)" if (data_dir / DATABASE_FILE).exists() else ""
        raise Conflict(
            f"refusing to restore into {data_dir}: it is not empty{live}; "
            "restore into a new, empty folder"
        )
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    # Staged inside the target itself: it may be a volume's mount point, which can be
    # neither replaced nor have a writable parent (Docker's /data).
    staging = Path(tempfile.mkdtemp(dir=data_dir, prefix=".restoring-"))
    try:
        (staging / KEY_DIR).mkdir(mode=0o700)
        manifest = _unpack(archive, staging)
        facts = _check_database(staging / DATABASE_FILE, str(archive))
        if facts["actor"] != manifest.get("actor"):
            raise BackupError(
                f"{archive}: the database is {facts['actor']}, the manifest says "
                f"{manifest.get('actor')}"
            )
        _check_key(staging / SEED_PATH, facts, str(archive))
        # The database last: the folder holds a node only once everything else is there.
        for name in (KEY_DIR, CONFIG_FILE, DATABASE_FILE):
            if (staging / name).exists():
                os.replace(staging / name, data_dir / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    staging.rmdir()
    return facts


# --- the commands --------------------------------------------------------------------


@click.command("backup")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="archive to write (.tar.gz); replaced only once the new one is complete",
)
@common_options
@guarded
def backup_command(out: Path, data: Path, as_json: bool) -> None:
    """Back up the node (database, keys, config), safely while it serves."""
    m = {**backup(data, out, now=time.time()), "out": str(out)}
    emit(
        as_json,
        m,
        f"backed up {m['actor']} ({m['chain_length']} chain entries, "
        f"{m['ballots']} ballots) to {m['out']}",
    )


@click.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@common_options
@guarded
def restore_command(archive: Path, data: Path, as_json: bool) -> None:
    """Restore a backup into an empty data folder (never over an existing node)."""
    f = {**restore(archive, data), "data": str(data)}
    emit(
        as_json,
        f,
        f"restored {f['actor']} into {f['data']}: chain of {f['chain_length']} "
        f"entries verified, {f['ballots']} ballots",
    )
