"""convene.toml: defaults, file values, flag overrides, strict errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from node.config import CONFIG_FILE, ConfigError, NodeConfig, defaults_toml, load_config


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config == NodeConfig(data_dir=str(tmp_path))
    assert config.database_path == tmp_path / "convene.sqlite3"


def test_written_defaults_round_trip(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(defaults_toml())
    assert tomllib.loads(defaults_toml())["port"] == 8080
    assert load_config(tmp_path) == NodeConfig(data_dir=str(tmp_path))


def test_file_then_flags(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("port = 9001\nmax_body_bytes = 1000\n")
    config = load_config(tmp_path, {"port": 9002, "host": None})
    assert (config.port, config.max_body_bytes, config.host) == (9002, 1000, "127.0.0.1")


@pytest.mark.parametrize(
    ("text", "named"),
    [("prot = 1\n", "prot"), ('port = "eighty"\n', "port"), ("port = \n", "TOML")],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(ConfigError, match=named):
        load_config(tmp_path)
