"""Upgrades: a database from every earlier schema version, holding data, opens under the
current code, ends with the same schema as a fresh node, and keeps working.

Each earlier version k is built as an old release would have left it: only the first
k node migrations applied (and none of federation's), then the rows a real node wrote
(a signed chain, members with tokens, an open proposal with ballots) copied into the
columns that version has.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from nodekit import FakeClock, free_port

from node.app import DB_KEY, create_app
from node.bootstrap import init_node
from node.config import DATABASE_FILE, load_config
from node.proposal_forms import NewProposal
from node.schema import NODE_MIGRATIONS
from node.services import build_services
from node.storage import Database, StorageError
from protocol import chain

LATEST = len(NODE_MIGRATIONS)


async def reference_node(root: Path) -> dict[str, Any]:
    """A node at the latest schema with data, made through the node's own services."""
    data, clock = root / "reference", FakeClock()
    await init_node(data, name="Riverside", url="http://127.0.0.1:9", clock=clock)
    services = build_services(load_config(data), clock)
    await services.db.open()
    services.ballot_box.start()
    try:
        org = await services.members.add("Olu", "organizer")
        voters = [await services.members.add(name) for name in ("Ama", "Ben", "Chi")]
        p = await services.proposals.create(
            org.member, NewProposal(title="Rent strike", method="choice", options=["yes", "no"])
        )
        receipts = [
            (await services.proposals.cast(v.member, p.id, {"choice": c}))["receipt"]
            for v, c in zip(voters, ("yes", "no", "yes"), strict=True)
        ]
    finally:
        await services.ballot_box.stop()
        await services.db.close()
    return {"data": data, "org": org, "proposal": p.id, "receipts": receipts}


def columns(conn: sqlite3.Connection, schema: str = "main") -> dict[str, list[str]]:
    tables = [
        r[0]
        for r in conn.execute(
            f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'"
            " AND name NOT IN ('sqlite_sequence', 'schema_migrations')"
        )
    ]
    return {t: [c[1] for c in conn.execute(f"PRAGMA {schema}.table_info({t})")] for t in tables}


def layout(path: Path) -> dict[str, Any]:
    """Tables with their columns (name, type, not null, default) and index names."""
    conn = sqlite3.connect(path)
    try:
        tables = {
            t: [tuple(c[1:5]) for c in conn.execute(f"PRAGMA table_info({t})")]
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        return {"tables": tables, "indexes": indexes}
    finally:
        conn.close()


async def old_node(
    ref: dict[str, Any],
    root: Path,
    upto: dict[str, int],
    migrations: dict[str, Sequence[str]] | None = None,
) -> Path:
    """The reference node as stored by a release whose components were at `upto`
    (components missing from `migrations` did not exist yet)."""
    data = root / "-".join(f"{c}{v}" for c, v in upto.items())
    shutil.copytree(ref["data"], data)
    (data / DATABASE_FILE).unlink()
    old = Database(data / DATABASE_FILE, dict(migrations or {"node": NODE_MIGRATIONS}), readers=1)
    await old.open(upto=upto)
    await old.close()
    conn = sqlite3.connect(data / DATABASE_FILE)
    try:
        conn.execute("ATTACH DATABASE ? AS ref", (str(ref["data"] / DATABASE_FILE),))
        have = columns(conn)
        for table, cols in columns(conn, "ref").items():
            if table not in have:
                continue  # a table this version does not have yet
            keep = ", ".join(c for c in cols if c in have[table])
            conn.execute(f"INSERT INTO main.{table} ({keep}) SELECT {keep} FROM ref.{table}")
        conn.commit()
        conn.execute("DETACH DATABASE ref")
        stored = dict(
            conn.execute("SELECT component, MAX(version) FROM schema_migrations GROUP BY 1")
        )
        assert all(stored.get(c, 0) == v for c, v in upto.items()), stored
    finally:
        conn.close()
    return data


async def serve_once(data: Path) -> None:
    """Start the node as `convene serve` builds it, check /healthz, stop."""
    port = free_port()
    runner = web.AppRunner(create_app(load_config(data, {"port": port})))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200, await response.text()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("version", range(1, LATEST + 1))
async def test_every_earlier_schema_upgrades_with_its_data(tmp_path: Path, version: int) -> None:
    ref = await reference_node(tmp_path)
    data = await old_node(ref, tmp_path, {"node": version})

    services = build_services(load_config(data), FakeClock(1_800_000_100.0))
    await services.db.open()
    services.ballot_box.start()
    try:
        assert (await services.db.schema_versions())["node"] == LATEST
        org = await services.members.authenticate(ref["org"].token)  # old tokens still work
        assert sorted(m.name for m in await services.members.all()) == ["Ama", "Ben", "Chi", "Olu"]
        proposal = await services.proposals.get(ref["proposal"])
        assert proposal.status == "open"
        closed = await services.proposals.close(org, ref["proposal"])
        assert closed.tally is not None
        assert closed.tally["cast"] == 3, closed.tally
        for receipt in ref["receipts"]:
            await services.proposals.receipt_proof(ref["proposal"], receipt)
        await services.members.add("Dee")  # the upgraded chain takes new entries
        entries = await services.ledger.entries()
    finally:
        await services.ballot_box.stop()
        await services.db.close()
    state = chain.verify_chain(entries)
    assert state.next_seq == len(entries) >= 7

    # The node serves from the upgraded file; other layers add their tables on start.
    await serve_once(data)
    fresh = tmp_path / "fresh"
    await init_node(fresh, name="Fresh", url="http://127.0.0.1:9")
    await serve_once(fresh)
    assert layout(data / DATABASE_FILE) == layout(fresh / DATABASE_FILE)


async def test_every_earlier_version_of_the_other_layers_tables_upgrades(
    tmp_path: Path,
) -> None:
    """Federation and the regional layer register their own numbered steps: a file made
    before they existed (version 0), or at any of their earlier versions, upgrades."""
    ref = await reference_node(tmp_path)
    await serve_once(ref["data"])  # the reference gets every layer's tables
    migrations = create_app(load_config(ref["data"]))[DB_KEY].migrations
    fresh = tmp_path / "fresh"
    await init_node(fresh, name="Fresh", url="http://127.0.0.1:9")
    await serve_once(fresh)
    earlier = [(c, v) for c, steps in migrations.items() if c != "node" for v in range(len(steps))]
    assert {c for c, _ in earlier} >= {"federation"}
    for component, version in earlier:
        data = await old_node(ref, tmp_path, {component: version}, migrations)
        await serve_once(data)
        assert layout(data / DATABASE_FILE) == layout(fresh / DATABASE_FILE), component
        conn = sqlite3.connect(data / DATABASE_FILE)
        entries = [json.loads(r[0]) for r in conn.execute("SELECT entry FROM chain_entries")]
        conn.close()
        assert chain.verify_chain(entries).next_seq == len(entries) >= 5


async def test_a_database_newer_than_the_program_is_refused(tmp_path: Path) -> None:
    ref = await reference_node(tmp_path)
    path = ref["data"] / DATABASE_FILE
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES ('node', ?)", (LATEST + 1,))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    db = Database(path, {"node": NODE_MIGRATIONS}, readers=1)
    with pytest.raises(StorageError) as refused:
        await db.open()
    await db.close()
    assert f"schema {LATEST + 1}" in refused.value.detail
    assert "upgrade convene" in refused.value.detail and str(path) in refused.value.detail
    assert path.read_bytes() == before  # nothing was touched
