"""`convene key rotate` and `convene key show`: the node's keys from the command line.

`rotate` works on the data folder directly (node/rotation.py): on a stopped node, or
on a running one only if it is restarted afterwards — a running node refuses to sign
once another process has rotated its key. A running node rotates without a restart
through `POST /api/keys/rotate` (admin).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from node.cli_support import common_options, emit, guarded, with_services
from node.rotation import Rotated, current_keys, rotate_keys
from node.services import NodeServices


@click.group("key")
def key_group() -> None:
    """The node's signing keys: show them, rotate them (e.g. after a leak)."""


@key_group.command("rotate")
@click.option("--rsa", "rotate_rsa", is_flag=True, help="also replace the HTTP-signature RSA key")
@common_options
@guarded
def rotate(rotate_rsa: bool, data: Path, as_json: bool) -> None:
    """Retire the chain key: a KeyRotation entry signed by it names a new one."""

    async def job(services: NodeServices) -> Rotated:
        return await rotate_keys(
            services.db,
            services.ledger,
            services.identity,
            data,
            rotate_rsa=rotate_rsa,
        )

    done = asyncio.run(with_services(data, job))
    rsa = "; the RSA key was replaced too" if done.rsa_rotated else ""
    emit(
        as_json,
        done.to_json(),
        f"rotated at seq {done.seq}: {done.retired_key_id} is retired,"
        f" {done.current.key_id} ({done.current.public_key_multibase}) signs from now on{rsa}\n"
        "if this node is running, restart it now (or rotate with POST /api/keys/rotate)",
    )


@key_group.command("show")
@common_options
@guarded
def show(data: Path, as_json: bool) -> None:
    """Print the current chain key (Multikey) and the RSA key's id."""

    async def job(services: NodeServices) -> dict[str, object]:
        return current_keys(services.identity).to_json()

    info = asyncio.run(with_services(data, job))
    emit(
        as_json,
        info,
        f"{info['key_id']} {info['publicKeyMultibase']} (since seq {info['since_seq']})\n"
        f"{info['rsa_key_id']} (RSA, HTTP signatures)",
    )
