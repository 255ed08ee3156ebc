"""`convene ballot keygen` and `convene ballot sign`: member-signed ballots without a
browser (docs/protocol.md §7.5, docs/api.md).

The key file is the member's own, never the node's: it holds an Ed25519 key as a JSON
object {"publicKeyMultibase", "secretKeyMultibase"} (Multikey encodings), written with
mode 0600 and never overwritten. Register its public key with
`POST /api/members/me/keys`; then `sign` prints the signed ballot, the body to POST to
`/api/proposals/{id}/ballots`. Signing is offline: it needs no data folder and no node.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import click
import msgspec

from node.cli_support import emit, guarded
from node.errors import BadRequest
from protocol.keys import SigningKey
from protocol.member_ballots import sign_member_ballot

MAX_KEY_FILE = 4096


@click.group("ballot")
def ballot_group() -> None:
    """Member-signed ballots from the command line: make a key, sign a ballot."""


@ballot_group.command("keygen")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@guarded
def keygen(out: Path, as_json: bool) -> None:
    """Make a new Ed25519 ballot key in FILE (mode 0600); print its public key."""
    key = SigningKey(secrets.token_bytes(32))
    body = json.dumps(
        {
            "publicKeyMultibase": key.verify_key.multibase,
            "secretKeyMultibase": key.secret_multibase(),
        }
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadRequest(f"{out} already exists; a key file is never overwritten") from None
    except OSError as exc:
        raise BadRequest(f"cannot create {out}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(body + "\n")
    public = key.verify_key.multibase
    emit(
        as_json,
        {"key": public, "file": str(out)},
        f"made {out}; register its public key {public} with POST /api/members/me/keys",
    )


def load_key(path: Path) -> SigningKey:
    """The signing key of a key file, or a BadRequest saying what is wrong with it."""
    try:
        raw = path.read_bytes()[: MAX_KEY_FILE + 1]
    except OSError as exc:
        raise BadRequest(f"cannot read key file {path}: {exc.strerror}") from None
    if len(raw) > MAX_KEY_FILE:
        raise BadRequest(f"key file {path} is larger than {MAX_KEY_FILE} bytes; not a key file")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BadRequest(f"key file {path} is not JSON") from None
    secret = doc.get("secretKeyMultibase") if isinstance(doc, dict) else None
    if not isinstance(secret, str):
        raise BadRequest(f"key file {path} has no secretKeyMultibase string")
    key = SigningKey.from_multibase(secret)
    if doc.get("publicKeyMultibase") not in (None, key.verify_key.multibase):
        raise BadRequest(f"key file {path}: publicKeyMultibase is not the secret key's")
    return key


@ballot_group.command("sign")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--proposal", required=True, help="the proposal's object_id (its Question entry id)")
@click.option("--member", required=True, help="your member id")
@click.option(
    "--counter",
    required=True,
    type=click.IntRange(0, 2**53 - 1),
    help="larger than the counter of your last signed ballot on this proposal",
)
@click.option(
    "--ballot", "ballot_json", required=True, help='the ballot, e.g. \'{"choice": "agree"}\''
)
@guarded
def sign(key_file: Path, proposal: str, member: str, counter: int, ballot_json: str) -> None:
    """Print the signed ballot JSON, to POST to /api/proposals/{id}/ballots."""
    try:
        ballot: Any = json.loads(ballot_json)
    except ValueError as exc:
        raise BadRequest(f"--ballot is not JSON: {exc}") from None
    if not isinstance(ballot, dict):
        raise BadRequest('--ballot must be a JSON object, e.g. {"choice": "agree"}')
    signed = sign_member_ballot(load_key(key_file), proposal, member, counter, ballot)
    click.echo(msgspec.json.encode(signed).decode())
