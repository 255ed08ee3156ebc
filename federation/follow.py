"""Following: a chapter joins a region with Follow, the region answers with a signed
Accept entry of its chain, Undo Follow leaves (docs/protocol.md §9.4).

Theory of operation. Both sides keep one row per relationship, and both lifecycles
are transition tables (``FOLLOWER_STATES``, ``FOLLOWING_STATES``) so that every
handler is "look up (state, event), write the next state":

- chapter side (``fed_following``): ``join`` → *requested* → (Accept) → *accepted*;
  ``leave`` → *left*. The Follow and the Undo are queued for delivery in the same
  transaction that records the state (ActivityPub §7.5, §7.7; delivery is durable).
- region side (``fed_follower``): a Follow makes the follower *pending*; when the node
  accepts at once (or an organizer approves) the Accept becomes a chain entry of the
  region — ``{type: Accept, object: FOLLOW_ID, follower: ACTOR}`` as §5 defines it —
  and the follower row turns *accepted* and the Accept is queued to the follower's
  inbox, all in one transaction with the entry. Undo Follow marks the row *removed*.

A repeated Follow from an accepted follower is answered again with the *existing*
Accept entry, never a new one, so a retried delivery cannot grow the chain.

The two host services this needs — append a chain entry with extra writes in one
transaction, and run a plain write transaction — come in as ``Host`` (the node
provides it in node/federation_glue.py); federation/ never imports the node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiosqlite
import msgspec

from federation import follow_store, store
from federation.actors import ActorCache
from federation.documents import AS_CONTEXT, RemoteActor
from federation.errors import FederationError
from federation.follow_store import Follower, Following

# Lifecycles as data: (state, event) -> next state. None is "no row yet".
FOLLOWER_STATES: dict[tuple[str | None, str], str] = {
    (None, "follow"): "pending",
    ("removed", "follow"): "pending",
    ("rejected", "follow"): "pending",
    ("pending", "follow"): "pending",
    ("pending", "accept"): "accepted",
    ("pending", "reject"): "rejected",
    ("accepted", "follow"): "accepted",
    ("pending", "undo"): "removed",
    ("accepted", "undo"): "removed",
}
FOLLOWING_STATES: dict[tuple[str | None, str], str] = {
    (None, "join"): "requested",
    ("left", "join"): "requested",
    ("requested", "join"): "requested",
    ("accepted", "join"): "accepted",
    ("requested", "accepted"): "accepted",
    ("accepted", "accepted"): "accepted",
    ("requested", "rejected"): "rejected",
    ("rejected", "join"): "requested",
    ("requested", "leave"): "left",
    ("accepted", "leave"): "left",
}

T = TypeVar("T")
MAX_PEERS = 10_000
log = logging.getLogger("convene.follow")


class FollowError(FederationError):
    """A Follow, Accept or Undo that does not fit the relationship it names."""

    code = "bad_follow"
    status = 422


def _step(table: dict[tuple[str | None, str], str], state: str | None, event: str, who: str) -> str:
    nxt = table.get((state, event))
    if nxt is None:
        raise FollowError(f"{who}: cannot {event} from state {state or 'none'}", status=409)
    return nxt


class Host(Protocol):
    """What the node provides: its actor id, chain appends and write transactions."""

    actor_id: str
    manually_approves_followers: bool

    async def append_entry(
        self,
        body: dict[str, Any],
        extra: Callable[[aiosqlite.Connection, dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        """Sign ``body`` as the next chain entry; run ``extra(conn, entry)`` in the same
        transaction; return the signed entry."""
        ...

    async def write(self, job: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``job`` in one write transaction."""
        ...

    async def entry(self, seq: int) -> dict[str, Any]:
        """The stored chain entry ``seq``."""
        ...


def follow_activity(actor_id: str, target: str, follow_id: str) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": follow_id,
        "type": "Follow",
        "actor": actor_id,
        "object": target,
    }


def undo_activity(actor_id: str, follow: dict[str, Any], undo_id: str) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": undo_id,
        "type": "Undo",
        "actor": actor_id,
        "object": follow,
    }


def reject_activity(actor_id: str, follow_id: str, nonce: str) -> dict[str, Any]:
    """A Reject is not a chain entry: refusing leaves no state to audit."""
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor_id}/rejects/{nonce}",
        "type": "Reject",
        "actor": actor_id,
        "object": follow_id,
    }


def accept_body(follow_id: str, follower: str) -> dict[str, Any]:
    """The body of the region's Accept chain entry (docs/protocol.md §5)."""
    return {"type": "Accept", "object": follow_id, "follower": follower}


def _object_id(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


class FollowService:
    """Both sides of following, for one node."""

    def __init__(self, host: Host, actors: ActorCache) -> None:
        self.host = host
        self.actors = actors
        # Called after a transaction that queued a delivery has committed, so a
        # running delivery worker sends it now rather than at its next poll.
        self.on_queued: Callable[[], None] = lambda: None

    async def _write_queued(self, job: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        result = await self.host.write(job)
        self.on_queued()
        return result

    # --- chapter side ---------------------------------------------------------------

    async def join(self, region: str, *, nonce: str) -> Following:
        """Follow ``region`` (handle, actor id or base URL); the Follow is queued."""
        target = await self.actors.resolve(region)
        if target.id == self.host.actor_id:
            raise FollowError(f"{target.id} is this node itself", status=400)
        follow_id = f"{self.host.actor_id}/follows/{nonce}"
        activity = follow_activity(self.host.actor_id, target.id, follow_id)

        async def job(conn: aiosqlite.Connection) -> Following:
            current = await follow_store.following_of(conn, target.id)
            state = _step(FOLLOWING_STATES, current.state if current else None, "join", target.id)
            if current is not None and state == "accepted":
                return current  # already a member of that region: nothing to send
            row = Following(target.id, target.inbox, follow_id, state, None)
            await follow_store.put_following(conn, row)
            await store.enqueue(
                conn, activity, [store.Recipient(target.inbox, target.shared_inbox)]
            )
            return row

        return await self._write_queued(job)

    async def leave(self, region: str, *, nonce: str) -> Following:
        """Undo the Follow of ``region`` (queued), and stop counting it as our region."""
        target = await self.actors.resolve(region)

        async def job(conn: aiosqlite.Connection) -> Following:
            current = await follow_store.following_of(conn, target.id)
            state = _step(FOLLOWING_STATES, current.state if current else None, "leave", target.id)
            assert current is not None  # the table has no (None, "leave")
            follow = follow_activity(self.host.actor_id, target.id, current.follow_id)
            undo = undo_activity(self.host.actor_id, follow, f"{self.host.actor_id}/undo/{nonce}")
            row = Following(target.id, current.inbox, current.follow_id, state, current.accept_id)
            await follow_store.put_following(conn, row)
            await store.enqueue(conn, undo, [current.inbox])
            return row

        return await self._write_queued(job)

    async def on_accept(self, activity: dict[str, Any], sender: str) -> Following:
        """An Accept from a region we asked to follow (already verified by the inbox)."""
        return await self._answered(activity, sender, "accepted")

    async def on_reject(self, activity: dict[str, Any], sender: str) -> Following:
        """A Reject: the region's organizers refused our Follow."""
        return await self._answered(activity, sender, "rejected")

    async def _answered(self, activity: dict[str, Any], sender: str, event: str) -> Following:
        kind = activity.get("type")
        follow_id = _object_id(activity.get("object"))
        if follow_id is None:
            raise FollowError(f"{kind} {activity.get('id')} from {sender} names no Follow")

        async def job(conn: aiosqlite.Connection) -> Following:
            current = await follow_store.following_of(conn, sender)
            if current is None or current.follow_id != follow_id:
                raise FollowError(
                    f"{kind} {activity.get('id')} from {sender} is for {follow_id}, "
                    "which this node did not send to it",
                    status=409,
                )
            state = _step(FOLLOWING_STATES, current.state, event, sender)
            answer = str(activity.get("id")) if event == "accepted" else None
            row = Following(sender, current.inbox, follow_id, state, answer)
            await follow_store.put_following(conn, row)
            return row

        return await self.host.write(job)

    # --- who hears what this node publishes ----------------------------------------

    async def recipients(self) -> list[store.Recipient]:
        """Inboxes for what this node publishes (ARCHITECTURE "A regional decision").

        A region: its accepted followers. A chapter: each region that accepted it, and
        the region's other followers (the peer chapters a tally also goes to), read
        from the region's public followers collection.
        """
        mine = await self.host.write(follow_store.followers)
        out = [store.Recipient(f.inbox, f.shared_inbox) for f in mine]
        joined = await self.host.write(follow_store.following)
        for row in joined:
            if row.state != "accepted":
                continue
            region = await self.actors.get(row.target)
            out.append(store.Recipient(region.inbox, region.shared_inbox))
            for peer in await self.peers(region):
                out.append(store.Recipient(peer.inbox, peer.shared_inbox))
        unique: dict[str, store.Recipient] = {}
        for r in out:
            unique.setdefault(r.target, r)
        return list(unique.values())

    async def peers(self, region: RemoteActor) -> list[RemoteActor]:
        """The region's other followers (bounded), each fetched and validated."""
        if region.followers is None:
            return []
        ids = await self.actors.collection_ids(region.followers, limit=MAX_PEERS)
        found = []
        for actor_id in ids:
            if actor_id == self.host.actor_id:
                continue
            try:
                peer = await self.actors.get(actor_id)
            except FederationError as exc:  # one unreachable peer must not stop the rest
                log.warning("peer %s of %s skipped: %s", actor_id, region.id, exc)
                continue
            if peer.kind == "chapter":  # fediverse accounts following a region are no peers
                found.append(peer)
        return found

    # --- region side ----------------------------------------------------------------

    async def on_follow(self, activity: dict[str, Any], sender: str) -> Follower:
        """A Follow addressed to this node, by ``sender`` (the verified signer)."""
        follow_id = _object_id(activity)
        if activity.get("actor") != sender or follow_id is None:
            raise FollowError(f"Follow {follow_id} is not by its signer {sender}", status=403)
        if _object_id(activity.get("object")) != self.host.actor_id:
            raise FollowError(
                f"Follow {follow_id} from {sender} is for {activity.get('object')}, "
                f"not {self.host.actor_id}"
            )
        follower = await self.actors.get(sender)
        if self.host.manually_approves_followers:
            return await self._record(follower, follow_id, "follow")
        return await self._accept(follower, follow_id)

    async def approve(self, actor_id: str) -> Follower:
        """An organizer accepts a pending follower."""
        # The pending Follow first: an unknown actor costs no outgoing fetch (and is
        # a 404, not the 502 of an address that does not answer).
        pending = await self.host.write(lambda conn: follow_store.follower(conn, actor_id))
        if pending is None or pending.state != "pending":
            raise FollowError(f"{actor_id} has no pending Follow here", status=404)
        follower = await self.actors.get(actor_id)
        return await self._accept(follower, pending.follow_id)

    async def reject(self, actor_id: str, *, nonce: str) -> Follower:
        """An organizer refuses a pending follower; it is told with a Reject."""

        async def job(conn: aiosqlite.Connection) -> Follower:
            current = await follow_store.follower(conn, actor_id)
            state = _step(FOLLOWER_STATES, current.state if current else None, "reject", actor_id)
            assert current is not None  # the table has no (None, "reject")
            row = msgspec.structs.replace(current, state=state)
            await follow_store.put_follower(conn, row)
            refusal = reject_activity(self.host.actor_id, current.follow_id, nonce)
            await store.enqueue(conn, refusal, [store.Recipient(row.inbox, row.shared_inbox)])
            return row

        return await self._write_queued(job)

    async def on_undo(self, activity: dict[str, Any], sender: str) -> Follower | None:
        """Undo Follow: the sender stops following. Undo of anything else is not ours."""
        inner = activity.get("object")
        if not isinstance(inner, dict) or inner.get("type") != "Follow":
            inner_id = _object_id(inner)
            if inner_id is None:
                raise FollowError(f"Undo {activity.get('id')} from {sender} names no object")
            inner = {"id": inner_id, "type": "Follow", "actor": sender}
        if activity.get("actor") != sender or inner.get("actor", sender) != sender:
            raise FollowError(
                f"Undo {activity.get('id')} is not by its signer {sender}", status=403
            )

        async def job(conn: aiosqlite.Connection) -> Follower | None:
            current = await follow_store.follower(conn, sender)
            if current is None or current.follow_id != inner.get("id"):
                return None  # nothing of ours to undo: idempotent
            state = _step(FOLLOWER_STATES, current.state, "undo", sender)
            row = msgspec.structs.replace(current, state=state)
            await follow_store.put_follower(conn, row)
            return row

        return await self.host.write(job)

    async def _record(self, follower: RemoteActor, follow_id: str, event: str) -> Follower:
        async def job(conn: aiosqlite.Connection) -> Follower:
            current = await follow_store.follower(conn, follower.id)
            state = _step(FOLLOWER_STATES, current.state if current else None, event, follower.id)
            if current is not None and current.state == "accepted":
                await self._resend_accept(conn, current)
                return current
            row = Follower(
                follower.id, follower.inbox, follower.shared_inbox, follow_id, state, None
            )
            await follow_store.put_follower(conn, row)
            return row

        return await self._write_queued(job)

    async def _resend_accept(self, conn: aiosqlite.Connection, current: Follower) -> None:
        if current.accept_seq is not None:
            entry = await self.host.entry(current.accept_seq)
            await store.enqueue(conn, entry, [current.inbox])

    async def _accept(self, follower: RemoteActor, follow_id: str) -> Follower:
        existing = await self.host.write(lambda conn: follow_store.follower(conn, follower.id))
        if existing is not None and existing.state == "accepted":
            await self._write_queued(lambda conn: self._resend_accept(conn, existing))
            return existing
        if existing is not None:
            _step(
                FOLLOWER_STATES,
                existing.state,
                "accept" if existing.state == "pending" else "follow",
                follower.id,
            )
        result: list[Follower] = []

        async def extra(conn: aiosqlite.Connection, entry: dict[str, Any]) -> None:
            now = await follow_store.follower(conn, follower.id)
            if now is not None and now.state == "accepted":
                # Accepted meanwhile by a concurrent Follow: roll this entry back.
                raise FollowError(f"{follower.id} is already an accepted follower", status=409)
            row = Follower(
                follower.id,
                follower.inbox,
                follower.shared_inbox,
                follow_id,
                "accepted",
                int(entry["seq"]),
            )
            await follow_store.put_follower(conn, row)
            await store.enqueue(conn, entry, [follower.inbox])
            result.append(row)

        await self.host.append_entry(accept_body(follow_id, follower.id), extra)
        self.on_queued()
        return result[0]
