"""The `convene` command line (ARCHITECTURE "Command line"): init, serve, member.

Every command takes `--data DIR` and `--json`. Errors leave as one line on stderr
(or `{"error", "detail"}` with `--json`) and exit status 1: node/cli_support.py,
which every command module uses.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from node.bootstrap import init_node
from node.cli_support import common_options, emit, guarded, with_services
from node.config import DATABASE_FILE, OPTION_HELP, NodeConfig, load_config

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


# Commands built by other parts of the node, imported only when used, so that
# `convene serve` does not carry the auditor's or the federation CLI's imports.
_LAZY: dict[str, tuple[str, str]] = {
    "audit": ("node.audit_command", "audit"),
    "export": ("node.audit_command", "export"),
    "join": ("node.federation_glue", "join_command"),
    "leave": ("node.federation_glue", "leave_command"),
    "backup": ("node.backup", "backup_command"),
    "restore": ("node.backup", "restore_command"),
    "demo": ("node.demo", "demo_command"),
    "key": ("node.keys_command", "key_group"),
    "ballot": ("node.ballot_cli", "ballot_group"),
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY:
            module, attr = _LAZY[cmd_name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group)
def main() -> None:
    """convene: a federated organizing node."""


@main.command()
@click.option("--name", required=True, help="the node's display name")
@click.option("--url", required=True, help="public base URL, e.g. https://chapter.example")
@click.option("--kind", type=click.Choice(["chapter", "region"]), default="chapter")
@common_options
@guarded
def init(name: str, url: str, kind: str, data: Path, as_json: bool) -> None:
    """Create the data folder, database and keys."""
    created = asyncio.run(init_node(data, name=name, url=url, kind=kind))
    out = created.to_json()
    emit(as_json, out, f"created {kind} {name}: actor {out['actor']} in {data}")


def _serve_options(fn: F) -> F:
    base = NodeConfig()
    for name, text in reversed(OPTION_HELP.items()):
        flag = "--" + name.replace("_", "-")
        default = getattr(base, name)
        if isinstance(default, bool):
            fn = click.option(flag, name, is_flag=True, default=None, help=text)(fn)
        else:
            fn = click.option(
                flag, name, type=type(default), default=None, help=f"{text} [default: {default}]"
            )(fn)
    return fn


@main.command()
@_serve_options
@common_options
@guarded
def serve(data: Path, as_json: bool, **options: Any) -> None:
    """Run the node. Options come from DATA/convene.toml; these flags override it.

    On a missing data folder a default chapter is created first, with an admin
    member whose one-time login link and API token are printed.
    """
    config = load_config(data, options)
    setup_logging(config.log_level)
    if not (data / DATABASE_FILE).exists():
        _first_run(config, as_json)
    from aiohttp import web

    from node.app import create_app

    app = create_app(config)
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        access_log=None,
        print=lambda text: click.echo(text.strip(), err=True),
    )


def _first_run(config: NodeConfig, as_json: bool) -> None:
    data = Path(config.data_dir)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    url = f"http://{host}:{config.port}"
    created = asyncio.run(init_node(data, name="chapter", url=url, kind="chapter"))
    admin = asyncio.run(with_services(data, lambda s: s.members.add("admin", "admin")))
    out = {**created.to_json(), "admin": admin.to_json()}
    emit(
        as_json,
        out,
        f"created a chapter in {data} (actor {created.identity.actor})\n"
        f"log in once at: {admin.login_url}\n"
        f"API token (admin): {admin.token}",
    )


@main.group()
def member() -> None:
    """Roster management; every change is a chain entry."""


@member.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["member", "organizer", "admin"]), default="member")
@common_options
@guarded
def member_add(name: str, role: str, data: Path, as_json: bool) -> None:
    """Add a member; prints its API token and one-time login link."""
    new = asyncio.run(with_services(data, lambda s: s.members.add(name, role)))
    out = new.to_json()
    emit(
        as_json,
        out,
        f"added {out['name']} ({out['role']}) as {out['id']}\n"
        f"login link: {out['login_url']}\nAPI token: {out['token']}",
    )


@member.command("list")
@common_options
@guarded
def member_list(data: Path, as_json: bool) -> None:
    """List current members."""
    members = asyncio.run(with_services(data, lambda s: s.members.all()))
    items = [m.to_json() for m in members]
    lines = [f"{m['id']}  {m['role']:<9}  {m['name']}" for m in items]
    emit(as_json, {"items": items}, "\n".join(lines) or "(no members)")


@member.command("remove")
@click.argument("member_id")
@common_options
@guarded
def member_remove(member_id: str, data: Path, as_json: bool) -> None:
    """Remove a member (their tokens and sessions stop working)."""
    gone = asyncio.run(with_services(data, lambda s: s.members.remove(member_id)))
    emit(as_json, gone.to_json(), f"removed {gone.name} ({gone.id})")


@member.command("role")
@click.argument("member_id")
@click.argument("role", type=click.Choice(["member", "organizer", "admin"]))
@common_options
@guarded
def member_role(member_id: str, role: str, data: Path, as_json: bool) -> None:
    """Change a member's role."""
    changed = asyncio.run(with_services(data, lambda s: s.members.set_role(member_id, role)))
    emit(as_json, changed.to_json(), f"{changed.name} ({changed.id}) is now {changed.role}")
