"""Members, roles and credentials.

Every roster change (add, remove, role) is a `RosterChange` chain entry written in the
same transaction as the row it describes; the chain names members by opaque id only,
names stay in the database. Secrets are never stored: API tokens, login links and
session cookies are 32 random bytes kept as SHA-256 (enough for uniformly random
secrets), passwords as Argon2id (PyNaCl pwhash), verified off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import nacl.exceptions
import nacl.pwhash

from node import member_store
from node.clock import Clock, rfc3339
from node.errors import BadRequest, Forbidden, NotFound, Unauthorized
from node.identity import NodeIdentity
from node.ledger import Ledger
from node.login_throttle import LoginThrottle
from node.storage import Database, Row, Tx
from protocol.entries import roster_change_body

ROLES = ("member", "organizer", "admin")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
MAX_NAME = 200
# Token hash → member for casting ballots (see `Members.voter`).
VOTER_CACHE_SIZE = 4096
VOTER_CACHE_TTL_S = 60.0


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    role: str

    def at_least(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role}


@dataclass(frozen=True)
class NewMember:
    member: Member
    token: str
    login_url: str

    def to_json(self) -> dict[str, str]:
        return {**self.member.to_json(), "token": self.token, "login_url": self.login_url}


@dataclass(frozen=True)
class Session:
    member: Member
    csrf: str


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _member(row: Row) -> Member:
    return Member(id=row["id"], name=row["name"], role=row["role"])


def require_role(member: Member, role: str, action: str) -> None:
    if not member.at_least(role):
        raise Forbidden(f"{action} needs the {role} role; member {member.id} is a {member.role}")


class Members:
    def __init__(
        self, db: Database, ledger: Ledger, identity: NodeIdentity, clock: Clock, *,
        login_link_ttl_s: int, session_ttl_s: int,
    ) -> None:  # fmt: skip
        self._db = db
        self._ledger = ledger
        self._identity = identity
        self._clock = clock
        self._login_ttl = login_link_ttl_s
        self._session_ttl = session_ttl_s
        self._voters: OrderedDict[str, tuple[Member, float]] = OrderedDict()
        self.login_throttle = LoginThrottle()

    async def add(self, name: str, role: str = "member") -> NewMember:
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise BadRequest(f"name must be 1 to {MAX_NAME} characters")
        _check_role(role)
        member = Member(id="m-" + secrets.token_hex(8), name=name, role=role)
        token = "cvn_" + secrets.token_urlsafe(32)
        async with self._db.write() as tx:
            entry = await self._ledger.append_in(tx, roster_change_body("add", member.id, role))
            now = rfc3339(self._clock())
            await member_store.insert_member(
                tx, id_=member.id, name=name, role=role, created_at=now, added_seq=entry.seq
            )
            await member_store.insert_token(tx, secret_hash(token), member.id, now)
            login_url = await self._new_login_link(tx, member.id)
        return NewMember(member=member, token=token, login_url=login_url)

    async def remove(self, member_id: str) -> Member:
        async with self._db.write() as tx:
            member = await self._get_tx(tx, member_id)
            await self._ledger.append_in(tx, roster_change_body("remove", member.id, member.role))
            await member_store.set_removed(tx, member.id, rfc3339(self._clock()))
        self._voters.clear()
        return member

    async def set_role(self, member_id: str, role: str) -> Member:
        _check_role(role)
        async with self._db.write() as tx:
            member = await self._get_tx(tx, member_id)
            if member.role != role:
                await self._ledger.append_in(tx, roster_change_body("role", member.id, role))
                await member_store.set_role(tx, member.id, role)
        return Member(id=member.id, name=member.name, role=role)

    async def all(self) -> list[Member]:
        return [_member(row) for row in await member_store.list_members(self._db)]

    async def get(self, member_id: str) -> Member:
        row = await member_store.get_member(self._db, member_id)
        if row is None:
            raise NotFound(f"no member {member_id!r}")
        return _member(row)

    async def authenticate(self, token: str) -> Member:
        return self._by_token_hash(secret_hash(token))

    async def voter(self, token: str) -> Member:
        """`authenticate` for casting a ballot, answered from a small LRU when it can.

        A ballot needs only the member's id (any role may vote), and the ballot box
        re-checks in the ballot's own commit that the member is still current, so an
        entry gone stale (a removal by `convene member remove` in another process)
        can at worst earn a 401 at commit instead of here, never a stored ballot.
        Entries live VOTER_CACHE_TTL_S; a removal in this process empties the cache.
        """
        key, now = secret_hash(token), self._clock()
        hit = self._voters.get(key)
        if hit is not None and hit[1] > now:
            self._voters.move_to_end(key)
            return hit[0]
        member = self._by_token_hash(key)
        self._voters[key] = (member, now + VOTER_CACHE_TTL_S)
        self._voters.move_to_end(key)
        if len(self._voters) > VOTER_CACHE_SIZE:
            self._voters.popitem(last=False)
        return member

    def _by_token_hash(self, token_hash: str) -> Member:
        row = member_store.member_by_token(self._db, token_hash)
        if row is None:
            raise Unauthorized("the bearer token is unknown or its member was removed")
        return _member(row)

    async def login_link(self, member_id: str) -> str:
        """A fresh one-time login link for an existing member."""
        async with self._db.write() as tx:
            await self._get_tx(tx, member_id)
            return await self._new_login_link(tx, member_id)

    async def use_login_link(self, token: str) -> tuple[Session, str]:
        """Spend a one-time link; returns the new session and its cookie secret."""
        now = int(self._clock())
        async with self._db.write() as tx:
            row = await member_store.use_login_link(tx, secret_hash(token), now, rfc3339(now))
            if row is None:
                raise Unauthorized("the login link is unknown, already used or expired")
            member = await self._get_tx(tx, row["id"])
            cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
            await member_store.insert_session(
                tx, secret_hash(cookie), member.id, csrf, now + self._session_ttl
            )
        return Session(member=member, csrf=csrf), cookie

    async def session(self, cookie: str) -> Session:
        row = await member_store.member_by_session(
            self._db, secret_hash(cookie), int(self._clock())
        )
        if row is None:
            raise Unauthorized("the session is unknown or expired")
        return Session(member=_member(row), csrf=row["csrf"])

    async def end_session(self, cookie: str) -> None:
        async with self._db.write() as tx:
            await member_store.delete_session(tx, secret_hash(cookie))

    async def set_password(self, member_id: str, password: str) -> None:
        if len(password) < 10:
            raise BadRequest("a password needs at least 10 characters")
        hashed = await asyncio.to_thread(
            nacl.pwhash.argon2id.str,
            password.encode(),
            opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
            memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
        )
        async with self._db.write() as tx:
            await self._get_tx(tx, member_id)
            await member_store.set_password(tx, member_id, hashed.decode())

    async def check_password(self, name: str, password: str) -> Member:
        """The member with this name and passphrase; Unauthorized otherwise, and
        TooManyAttempts (429) once the name has failed too often (node/login_throttle)."""
        self.login_throttle.check(name, self._clock())
        for row in await member_store.find_by_name(self._db, name):
            if row["password_hash"] and await asyncio.to_thread(
                _argon2_ok, row["password_hash"], password
            ):
                self.login_throttle.succeeded(name)
                return _member(row)
        self.login_throttle.failed(name, self._clock())
        raise Unauthorized("unknown name or wrong password")

    async def _get_tx(self, tx: Tx, member_id: str) -> Member:
        row = await member_store.get_member_tx(tx, member_id)
        if row is None:
            raise NotFound(f"no member {member_id!r}")
        return _member(row)

    async def _new_login_link(self, tx: Tx, member_id: str) -> str:
        token = secrets.token_urlsafe(32)
        expires = int(self._clock()) + self._login_ttl
        await member_store.insert_login_link(tx, secret_hash(token), member_id, expires)
        return f"{self._identity.url.rstrip('/')}/login/{token}"


def _argon2_ok(stored: str, password: str) -> bool:
    try:
        return bool(nacl.pwhash.argon2id.verify(stored.encode(), password.encode()))
    except nacl.exceptions.InvalidkeyError:
        return False


def _check_role(role: str) -> None:
    if role not in _RANK:
        raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}")
