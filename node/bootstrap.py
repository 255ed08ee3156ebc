"""Making a node: `convene init` and the default chapter `convene serve` makes on first run.

Order matters for a crash half way: the folder, the config and the keys come first,
then identity row and genesis entry commit together. A folder with keys but no
committed genesis is refused by `open_node` with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node import identity_store
from node.clock import Clock, rfc3339, system_clock
from node.config import CONFIG_FILE, DATABASE_FILE, defaults_toml
from node.errors import BadRequest, Conflict
from node.identity import KINDS, NodeIdentity, actor_id_for, create_keys, load_identity
from node.ledger import Ledger
from node.schema import NODE_MIGRATIONS
from node.storage import Database


@dataclass(frozen=True)
class Created:
    identity: NodeIdentity

    def to_json(self) -> dict[str, str]:
        return {"actor": self.identity.actor, "url": self.identity.url, "kind": self.identity.kind}


def _check_url(url: str) -> str:
    url = url.rstrip("/")
    if not (url.startswith("http://") or url.startswith("https://")) or url[-3:] == "://":
        raise BadRequest(f"--url must be an absolute http(s) URL, got {url!r}")
    return url


async def init_node(
    data_dir: Path, *, name: str, url: str, kind: str = "chapter", clock: Clock = system_clock
) -> Created:
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not name.strip():
        raise BadRequest("the node needs a name")
    url = _check_url(url)
    if (data_dir / DATABASE_FILE).exists():
        raise Conflict(f"{data_dir} already holds a node; refusing to overwrite it")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    config = data_dir / CONFIG_FILE
    if not config.exists():
        config.write_text(defaults_toml(), encoding="utf-8")
    create_keys(data_dir)
    actor = actor_id_for(url)
    identity = load_identity(data_dir, actor=actor, url=url, name=name, kind=kind)
    db = Database(data_dir / DATABASE_FILE, {"node": NODE_MIGRATIONS}, readers=1)
    await db.open()
    try:
        async with db.write() as tx:
            await identity_store.insert(
                tx, actor=actor, url=url, name=name, kind=kind, created_at=rfc3339(clock())
            )
            await Ledger(db, identity, clock).append_genesis(tx)
    finally:
        await db.close()
    return Created(identity)


def identity_of(data_dir: Path) -> NodeIdentity:
    row = identity_store.read(data_dir / DATABASE_FILE)
    return load_identity(data_dir, **row)
