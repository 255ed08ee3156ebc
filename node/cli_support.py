"""What every `convene` command shares (ARCHITECTURE "Command line").

Every command takes `--data DIR` and `--json` (`common_options`), prints its answer
with `emit`, and leaves on an error as one line on stderr, or `{"error", "detail"}`
with `--json`, and exit status 1 (`guarded`, `fail`): an operator is told what and
where, never shown a traceback. Commands that work on a data folder without a running
node open its services with `with_services`, which closes them on every path.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from federation.errors import FederationError
from node.config import load_config
from node.errors import NodeError
from node.services import NodeServices, build_services
from protocol.errors import ProtocolError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEFAULT_DATA = Path("./convene-data")

data_option = click.option(
    "--data",
    "data",
    default=DEFAULT_DATA,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the node's data folder",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def common_options(fn: F) -> F:
    """`--data DIR` and `--json`, as every command takes them."""
    return data_option(json_option(fn))


def emit(as_json: bool, data: Any, text: str) -> None:
    """The command's answer: `data` as JSON with `--json`, else `text`."""
    click.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


def fail(as_json: bool, code: str, detail: str) -> NoReturn:
    """Leave with status 1 and one line saying why."""
    if as_json:
        click.echo(json.dumps({"error": code, "detail": detail}), err=True)
    else:
        click.echo(f"convene: {detail}", err=True)
    sys.exit(1)


def guarded(fn: F) -> F:
    """Turn the project's typed errors, and a file or folder that cannot be read or
    written (the operator's to fix), into `fail`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json", False))
        try:
            return fn(*args, **kwargs)
        except (NodeError, FederationError) as exc:
            fail(as_json, exc.code, exc.detail)
        except ProtocolError as exc:
            fail(as_json, exc.code, exc.describe())
        except OSError as exc:
            fail(as_json, "io_error", str(exc))

    return wrapper  # type: ignore[return-value]


async def with_services(data: Path, job: Callable[[NodeServices], Awaitable[T]]) -> T:
    """Run `job` on the node in `data` (not serving); the database is closed after."""
    services = build_services(load_config(data))
    await services.db.open()
    try:
        return await job(services)
    finally:
        await services.db.close()
