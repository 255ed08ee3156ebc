"""protocol/ stays pure: no I/O modules, no clock, no randomness.

The check parses protocol/'s sources, so a forbidden import anywhere fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_MODULES = {
    "asyncio",
    "aiohttp",
    "aiosqlite",
    "socket",
    "sqlite3",
    "requests",
    "httpx",
    "urllib.request",
    "http.client",
    "random",
    "secrets",
    "uuid",
    "time",
    "os",
    "subprocess",
    "threading",
    "node",
    "federation",
}
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_protocol_imports_nothing_impure() -> None:
    offenders = []
    for path in sorted((ROOT / "protocol").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imports(tree):
            top = name.split(".")[0]
            if name in FORBIDDEN_MODULES or top in FORBIDDEN_MODULES:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in FORBIDDEN_CALLS
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} reads the clock")
    assert offenders == []


def test_federation_does_not_import_node() -> None:
    offenders = []
    for path in sorted((ROOT / "federation").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{path.relative_to(ROOT)} imports {n}"
            for n in _imports(tree)
            if n.split(".")[0] == "node"
        ]
    assert offenders == []


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    tree = ast.parse("import asyncio\nfrom aiohttp import web\n")
    assert {"asyncio", "aiohttp"} <= _imports(tree)
