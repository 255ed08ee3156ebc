"""The node's numbered schema migrations. Append only: never edit a released step.

Step 1 is the first released layout; step 2 marks counted ballots and adds web
sessions; step 3 lets a chapter hold a region's proposal; step 4 holds members' own ballot
keys and the signatures of member-signed ballots. Old files are brought
forward by `Database.open`.
"""

from __future__ import annotations

NODE_MIGRATIONS: tuple[str, ...] = (
    # 1: identity, chain, members, credentials, proposals, ballots
    """
    CREATE TABLE node_identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        actor TEXT NOT NULL,
        url TEXT NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('chapter', 'region')),
        created_at TEXT NOT NULL
    );
    CREATE TABLE chain_entries (
        seq INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        published TEXT NOT NULL,
        entry BLOB NOT NULL
    );
    CREATE TABLE members (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('member', 'organizer', 'admin')),
        password_hash TEXT,
        created_at TEXT NOT NULL,
        removed_at TEXT,
        added_seq INTEGER NOT NULL REFERENCES chain_entries (seq)
    );
    CREATE TABLE api_tokens (
        token_hash TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (id),
        created_at TEXT NOT NULL
    );
    CREATE TABLE login_links (
        token_hash TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (id),
        expires_at INTEGER NOT NULL,
        used_at TEXT
    );
    CREATE TABLE proposals (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        spec TEXT NOT NULL,
        closes_at TEXT,
        closes_ts INTEGER,
        status TEXT NOT NULL CHECK (status IN ('draft', 'open', 'closed', 'decided')),
        created_by TEXT REFERENCES members (id),
        created_at TEXT NOT NULL,
        object_id TEXT UNIQUE,
        question_seq INTEGER REFERENCES chain_entries (seq),
        tally TEXT,
        tally_seq INTEGER REFERENCES chain_entries (seq),
        decision TEXT,
        decision_seq INTEGER REFERENCES chain_entries (seq),
        verification TEXT
    );
    CREATE INDEX proposals_closing ON proposals (status, closes_ts);
    CREATE TABLE ballots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        member_id TEXT NOT NULL REFERENCES members (id),
        receipt TEXT NOT NULL UNIQUE,
        ballot TEXT NOT NULL,
        nonce TEXT,
        cast_at TEXT NOT NULL
    );
    CREATE INDEX ballots_by_member ON ballots (proposal_id, member_id, id)
    """,
    # 2: which ballots were counted at close (each member's last), web sessions
    """
    ALTER TABLE ballots ADD COLUMN counted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX ballots_counted ON ballots (proposal_id, counted);
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (id),
        csrf TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    )
    """,
    # 3: proposals adopted from a region (their Question is the region's entry)
    """
    ALTER TABLE proposals ADD COLUMN origin TEXT;
    ALTER TABLE proposals ADD COLUMN question_digest TEXT
    """,
    # 4: members' own ballot keys (mirroring the roster chain's key entries) and the
    # member signatures of open ballots, by receipt
    """
    CREATE TABLE member_keys (
        key TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members (id),
        registered_seq INTEGER NOT NULL REFERENCES chain_entries (seq),
        revoked_seq INTEGER REFERENCES chain_entries (seq),
        label TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX member_keys_by_member ON member_keys (member_id, revoked_seq);
    CREATE TABLE ballot_signatures (
        receipt TEXT PRIMARY KEY REFERENCES ballots (receipt),
        proposal_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        counter INTEGER NOT NULL,
        key TEXT NOT NULL,
        signature TEXT NOT NULL,
        UNIQUE (proposal_id, member_id, counter)
    )
    """,
)
