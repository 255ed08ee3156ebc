"""The node's services wired together once, for the web app and the CLI alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.ballot_box import BallotBox
from node.bootstrap import identity_of
from node.clock import Clock, system_clock
from node.config import NodeConfig
from node.identity import NodeIdentity
from node.ledger import Ledger
from node.members import Members
from node.proposals import Proposals
from node.schema import NODE_MIGRATIONS
from node.storage import Database


@dataclass(frozen=True)
class NodeServices:
    config: NodeConfig
    db: Database
    identity: NodeIdentity
    ledger: Ledger
    members: Members
    proposals: Proposals
    ballot_box: BallotBox


def build_services(config: NodeConfig, clock: Clock = system_clock) -> NodeServices:
    """Construct (not open) everything; `await services.db.open()` before use."""
    identity = identity_of(Path(config.data_dir))
    db = Database(
        config.database_path, {"node": NODE_MIGRATIONS}, readers=config.reader_connections
    )
    ledger = Ledger(db, identity, clock)
    members = Members(
        db,
        ledger,
        identity,
        clock,
        login_link_ttl_s=config.login_link_ttl_s,
        session_ttl_s=config.session_ttl_s,
    )
    box = BallotBox(db, max_batch=config.group_commit_max)
    proposals = Proposals(db, ledger, identity, box, clock)
    return NodeServices(config, db, identity, ledger, members, proposals, box)
