"""Node configuration: `convene.toml` in the data folder, every option with a default.

The file is decoded strictly (an unknown or mistyped option is an error that names it);
command-line flags override what the file says. The node's identity (name, URL, kind,
keys) is not configuration: it lives in the database and the key files made at init.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from node.errors import NodeError

CONFIG_FILE = "convene.toml"
DATABASE_FILE = "convene.sqlite3"


class ConfigError(NodeError):
    code = "bad_config"
    status = 500


class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of a running node. Field docs are shown by `convene serve --help`."""

    data_dir: str = "./convene-data"
    host: str = "127.0.0.1"
    port: int = 8080
    # Loopback and private addresses are refused for outgoing fetches unless set (SSRF).
    allow_private_network: bool = False
    max_body_bytes: int = 64 * 1024
    login_link_ttl_s: int = 24 * 3600
    session_ttl_s: int = 14 * 24 * 3600
    reader_connections: int = 3
    # Ballots committed per SQLite transaction at most (durable group commit).
    group_commit_max: int = 512
    log_level: str = "INFO"
    # Honour X-Forwarded-Proto/Host only behind a proxy that sets them (node/ops.py).
    trust_forwarded: bool = False
    # Regional votes: how long after close a chapter's tally still counts (node/regional.py).
    regional_grace_s: int = 600
    # A region: an organizer approves each chapter's Follow (manuallyApprovesFollowers).
    approve_followers: bool = False

    @property
    def database_path(self) -> Path:
        return Path(self.data_dir) / DATABASE_FILE


OPTION_HELP: dict[str, str] = {
    "host": "address to listen on",
    "port": "TCP port to listen on",
    "allow_private_network": "allow fetching from and delivering to private/loopback addresses",
    "max_body_bytes": "largest accepted request body, in bytes (413 above)",
    "login_link_ttl_s": "lifetime of one-time login links, in seconds",
    "session_ttl_s": "lifetime of web sessions, in seconds",
    "reader_connections": "SQLite read-only connections beside the single writer",
    "group_commit_max": "most ballots committed in one transaction",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
    "trust_forwarded": "trust X-Forwarded-Proto/Host from a reverse proxy in front of the node",
    "regional_grace_s": "seconds after a regional vote closes that tallies still count",
    "approve_followers": "an organizer approves each node that asks to follow (join) this one",
}


def defaults_toml() -> str:
    """The commented default file written by `convene init`."""
    base = NodeConfig()
    lines = ["# convene node options; flags of `convene serve` override these.", ""]
    for name, text in OPTION_HELP.items():
        value = getattr(base, name)
        lines.append(f"# {text}")
        if isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{name} = {value}")
        else:
            lines.append(f'{name} = "{value}"')
    return "\n".join(lines) + "\n"


def load_config(data_dir: str | Path, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read `convene.toml` (if present) and apply non-None overrides on top."""
    path = Path(data_dir) / CONFIG_FILE
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    raw["data_dir"] = str(data_dir)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    try:
        return msgspec.convert(raw, NodeConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
