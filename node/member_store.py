"""SQL for members and their credentials (tokens, login links, sessions, passwords)."""

from __future__ import annotations

from node.storage import Database, Row, Tx

_MEMBER = "SELECT id, name, role, created_at, removed_at FROM members"


async def insert_member(
    tx: Tx, *, id_: str, name: str, role: str, created_at: str, added_seq: int
) -> None:
    await tx.execute(
        "INSERT INTO members (id, name, role, created_at, added_seq) VALUES (?, ?, ?, ?, ?)",
        (id_, name, role, created_at, added_seq),
    )


async def get_member_tx(tx: Tx, member_id: str) -> Row | None:
    return await tx.fetchone(f"{_MEMBER} WHERE id = ? AND removed_at IS NULL", (member_id,))


async def set_removed(tx: Tx, member_id: str, when: str) -> None:
    await tx.execute("UPDATE members SET removed_at = ? WHERE id = ?", (when, member_id))
    # Credentials of a removed member die with the membership.
    await tx.execute("DELETE FROM api_tokens WHERE member_id = ?", (member_id,))
    await tx.execute("DELETE FROM sessions WHERE member_id = ?", (member_id,))
    await tx.execute("DELETE FROM login_links WHERE member_id = ?", (member_id,))


async def set_role(tx: Tx, member_id: str, role: str) -> None:
    await tx.execute("UPDATE members SET role = ? WHERE id = ?", (role, member_id))


async def set_password(tx: Tx, member_id: str, password_hash: str) -> None:
    await tx.execute(
        "UPDATE members SET password_hash = ? WHERE id = ?", (password_hash, member_id)
    )


async def list_members(db: Database) -> list[Row]:
    return await db.fetchall(f"{_MEMBER} WHERE removed_at IS NULL ORDER BY created_at, id")


async def get_member(db: Database, member_id: str) -> Row | None:
    return await db.fetchone(f"{_MEMBER} WHERE id = ? AND removed_at IS NULL", (member_id,))


async def find_by_name(db: Database, name: str) -> list[Row]:
    return await db.fetchall(
        "SELECT id, name, role, password_hash FROM members WHERE name = ? AND removed_at IS NULL",
        (name,),
    )


async def insert_token(tx: Tx, token_hash: str, member_id: str, created_at: str) -> None:
    await tx.execute(
        "INSERT INTO api_tokens (token_hash, member_id, created_at) VALUES (?, ?, ?)",
        (token_hash, member_id, created_at),
    )


def member_by_token(db: Database, token_hash: str) -> Row | None:
    return db.lookup(
        "SELECT m.id, m.name, m.role FROM api_tokens t JOIN members m ON m.id = t.member_id"
        " WHERE t.token_hash = ? AND m.removed_at IS NULL",
        (token_hash,),
    )


async def insert_login_link(tx: Tx, token_hash: str, member_id: str, expires_at: int) -> None:
    await tx.execute(
        "INSERT INTO login_links (token_hash, member_id, expires_at) VALUES (?, ?, ?)",
        (token_hash, member_id, expires_at),
    )


async def use_login_link(tx: Tx, token_hash: str, now: int, used_at: str) -> Row | None:
    """Mark an unused, unexpired link used and return its member; None if not usable."""
    row = await tx.fetchone(
        "SELECT l.member_id AS id FROM login_links l JOIN members m ON m.id = l.member_id"
        " WHERE l.token_hash = ? AND l.used_at IS NULL AND l.expires_at > ?"
        " AND m.removed_at IS NULL",
        (token_hash, now),
    )
    if row is not None:
        await tx.execute(
            "UPDATE login_links SET used_at = ? WHERE token_hash = ?", (used_at, token_hash)
        )
    return row


async def insert_session(
    tx: Tx, token_hash: str, member_id: str, csrf: str, expires_at: int
) -> None:
    await tx.execute(
        "INSERT INTO sessions (token_hash, member_id, csrf, expires_at) VALUES (?, ?, ?, ?)",
        (token_hash, member_id, csrf, expires_at),
    )


async def member_by_session(db: Database, token_hash: str, now: int) -> Row | None:
    return await db.fetchone(
        "SELECT m.id, m.name, m.role, s.csrf FROM sessions s JOIN members m ON m.id = s.member_id"
        " WHERE s.token_hash = ? AND s.expires_at > ? AND m.removed_at IS NULL",
        (token_hash, now),
    )


async def delete_session(tx: Tx, token_hash: str) -> None:
    await tx.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
