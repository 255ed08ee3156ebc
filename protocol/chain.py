"""The signature chain: building entries and verifying them, one at a time or a whole chain.

Theory of operation (ARCHITECTURE "The signature chain"; docs/protocol.md §5). An actor's
entries carry seq 0, 1, 2, … and ``prev`` = digest of the previous entry including its
proof. Entry 0 (Genesis) introduces key ``#ed25519-0`` and is signed by it; a KeyRotation
at seq n is signed by the current key and introduces ``#ed25519-n``, valid from n + 1; the
old key is retired for good. So the chain alone says which key was valid at every seq.

Verification is sans-I/O and incremental, like h11: ``verify_next(state, entry)`` returns
the next immutable ``ChainState`` or raises ChainError naming actor, seq and what broke.
It is split in two so proofs can be checked in parallel: ``check_entry`` is stateless
(envelope, digest, proof against a key looked up by its id) and ``advance`` is the ordered
part (seq, prev link, which key is valid). ``verify_next`` is exactly the two in a row.
Checks run in a fixed order — envelope, seq, prev, key, proof — so a given break always
gets the same code. Auditing many actors' chains at once, equivocations and forgeries
told apart, is protocol/chain_audit.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec

from protocol.canonical import digest
from protocol.entries import (
    GENESIS,
    KEY_ROTATION,
    Envelope,
    entry_id,
    genesis,
    key_id,
    make_entry,
    read_envelope,
    read_new_key,
    rotation,
)
from protocol.errors import CanonicalError, ChainError, ProofError
from protocol.keys import VerifyKey
from protocol.proofs import verified_digest

__all__ = [
    "CODES",
    "ChainState",
    "CheckedEntry",
    "KeySpan",
    "advance",
    "check_entry",
    "declared_keys",
    "entry_digest",
    "entry_id",
    "genesis",
    "key_history",
    "key_id",
    "make_entry",
    "rotation",
    "state_before",
    "verify_chain",
    "verify_next",
]

CODES: Final = frozenset(
    {
        "malformed",
        "bad_genesis",
        "gap",
        "reordered",
        "bad_prev",
        "bad_proof",
        "wrong_key",
        "retired_key",
        "equivocation",
    }
)


def entry_digest(entry: Mapping[str, Any]) -> str:
    """Digest of the whole entry, proof included: what the next entry's ``prev`` holds."""
    try:
        return digest(entry)
    except CanonicalError as exc:
        actor, seq = entry.get("actor"), entry.get("seq")
        raise ChainError(
            f"entry cannot be canonicalized: {exc.detail}",
            actor=actor if isinstance(actor, str) else None,
            seq=seq if type(seq) is int else None,
            code="malformed",
        ) from None


class KeySpan(msgspec.Struct, frozen=True):
    """Key ``key_id`` was the valid signing key from ``from_seq`` through ``to_seq``."""

    key_id: str
    key: VerifyKey
    from_seq: int
    to_seq: int | None = None  # None: still valid


class ChainState(msgspec.Struct, frozen=True):
    """Where a verified chain stands after its latest entry."""

    actor: str
    next_seq: int
    head: str  # digest of the entry at next_seq - 1
    key: VerifyKey
    key_id: str
    retired: frozenset[str] = frozenset()
    keys: tuple[KeySpan, ...] = ()

    def key_at(self, seq: int) -> KeySpan:
        """The key valid at ``seq`` (a seq this chain has verified)."""
        if not 0 <= seq < self.next_seq:
            raise ChainError(f"seq {seq} is not in the verified chain", actor=self.actor, seq=seq)
        for span in self.keys:
            if span.from_seq <= seq and (span.to_seq is None or seq <= span.to_seq):
                return span
        raise AssertionError("key spans cover every verified seq")  # pragma: no cover


class CheckedEntry(msgspec.Struct, frozen=True):
    """What the stateless half learned about one entry."""

    envelope: Envelope
    digest: str
    method: str  # the proof's verificationMethod
    verified_with: VerifyKey | None  # the key the proof verified with; None if it did not
    proof_problem: str  # why not, when verified_with is None
    new_key: tuple[str, VerifyKey] | None  # (id, key) a Genesis/KeyRotation introduces


def check_entry(entry: Mapping[str, Any], keys: Mapping[str, VerifyKey]) -> CheckedEntry:
    """Stateless checks: envelope (raises malformed), digest, proof by ``keys[method]``.

    A failed proof is not raised here but recorded, so ``advance`` can report a broken
    link or a wrong key first, in the same order ``verify_next`` would.
    """
    env = read_envelope(entry)
    new_key = read_new_key(entry, env) if env.type in (GENESIS, KEY_ROTATION) else None
    method = env.proof.verificationMethod
    if env.type == GENESIS and new_key is not None and method == new_key[0]:
        key: VerifyKey | None = new_key[1]
    else:
        key = keys.get(method)
    if key is not None:
        try:
            return CheckedEntry(env, verified_digest(entry, key), method, key, "", new_key)
        except ProofError as exc:
            problem = exc.detail
    else:
        problem = f"no key {method!r} is known"
    return CheckedEntry(env, entry_digest(entry), method, None, problem, new_key)


def _fail(env: Envelope, code: str, why: str) -> ChainError:
    return ChainError(why, actor=env.actor, seq=env.seq, code=code)


def advance(state: ChainState | None, checked: CheckedEntry) -> ChainState:
    """Ordered checks: seq, prev link and key validity; then the proof's verdict."""
    env = checked.envelope
    if state is None:
        if env.seq != 0:
            raise _fail(env, "gap", f"the chain must begin at seq 0, not {env.seq}")
        if env.type != GENESIS or checked.new_key is None:
            raise _fail(env, "bad_genesis", f"entry 0 must be a Genesis, not {env.type!r}")
        kid, key = checked.new_key
        if checked.method != kid:
            raise _fail(env, "bad_genesis", f"the genesis must be signed by its own key {kid}")
        if checked.verified_with != key:
            raise _fail(env, "bad_genesis", f"the genesis proof fails: {checked.proof_problem}")
        return ChainState(env.actor, 1, checked.digest, key, kid, keys=(KeySpan(kid, key, 0),))
    if env.actor != state.actor:
        raise _fail(env, "malformed", f"entry of {env.actor} in the chain of {state.actor}")
    last = state.next_seq - 1
    if env.seq <= last:
        raise _fail(env, "reordered", f"seq {env.seq} comes after seq {last} was verified")
    if env.seq > state.next_seq:
        raise _fail(
            env, "gap", f"seq {env.seq} follows seq {last}: {state.next_seq}..{env.seq - 1} missing"
        )
    if env.prev != state.head:
        raise _fail(
            env, "bad_prev", f"prev {env.prev} is not the digest {state.head} of seq {last}"
        )
    if env.type == GENESIS:
        raise _fail(env, "bad_genesis", "a Genesis is only valid at seq 0")
    if checked.method != state.key_id:
        if checked.method in state.retired:
            raise _fail(env, "retired_key", f"signed by {checked.method}, retired before this seq")
        raise _fail(env, "wrong_key", f"signed by {checked.method}, but {state.key_id} is valid")
    if checked.verified_with != state.key:
        raise _fail(env, "bad_proof", checked.proof_problem or "the proof used another key")
    if checked.new_key is None:
        return ChainState(
            state.actor,
            env.seq + 1,
            checked.digest,
            state.key,
            state.key_id,
            state.retired,
            state.keys,
        )
    new_id, new_key = checked.new_key
    if new_id in state.retired or new_key in {s.key for s in state.keys}:
        raise _fail(env, "malformed", "a key rotation must introduce a key never used before")
    closed = KeySpan(state.key_id, state.key, state.keys[-1].from_seq, env.seq)
    return ChainState(
        state.actor,
        env.seq + 1,
        checked.digest,
        new_key,
        new_id,
        state.retired | {state.key_id},
        (*state.keys[:-1], closed, KeySpan(new_id, new_key, env.seq + 1)),
    )


def verify_next(state: ChainState | None, entry: Mapping[str, Any]) -> ChainState:
    """Verify ``entry`` as the next entry after ``state`` (None: expect the genesis)."""
    keys = {} if state is None else {state.key_id: state.key}
    return advance(state, check_entry(entry, keys))


def verify_chain(entries: Sequence[Mapping[str, Any]]) -> ChainState:
    """Verify a whole chain, oldest first; the state after its last entry."""
    if not entries:
        raise ChainError("an empty chain has no genesis", code="bad_genesis")
    state: ChainState | None = None
    for entry in entries:
        state = verify_next(state, entry)
    assert state is not None
    return state


def declared_keys(entries: Iterable[Mapping[str, Any]]) -> dict[str, VerifyKey]:
    """Every key the entries introduce, by id (first one wins), for ``check_entry`` run in
    parallel ahead of ``advance``; advance still decides which key was valid when."""
    return {kid: key for _, kid, key in reversed(key_history(entries))}


def key_history(entries: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, VerifyKey]]:
    """(seq, key id, key) of every well-formed Genesis and KeyRotation, in input order.

    Unverified: what the entries *claim*. ``state_before`` builds on it, and verification
    proper decides whether the claims hold.
    """
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("type") not in (GENESIS, KEY_ROTATION):
            continue
        try:
            env = read_envelope(entry)
            kid, key = read_new_key(entry, env)
        except ChainError:
            continue
        found.append((env.seq, kid, key))
    return found


def state_before(
    actor: str, seq: int, head: str, history: Sequence[tuple[int, str, VerifyKey]]
) -> ChainState:
    """The state verification reaches after seq - 1 *if* entries 0..seq-1 are valid, with
    ``head`` their last digest and ``history`` their key_history.

    This splits a long chain into segments checked independently (in parallel): verify
    each segment with verify_next from its assumed start, then, in order, require each
    segment's assumed start to equal the state the previous segment ended in. By
    induction that is exactly verify_chain over the whole; a segment whose assumption
    fails is simply re-verified from the true state.
    """
    if seq < 1:
        raise ChainError("a state before seq 0 is no state: start from None", actor=actor, seq=seq)
    claims = sorted((s, kid, key) for s, kid, key in history if s < seq)
    if not claims or claims[0][0] != 0:
        raise ChainError("no genesis key before this seq", actor=actor, seq=seq, code="bad_genesis")
    spans = []
    for i, (s, kid, key) in enumerate(claims):
        start = 0 if s == 0 else s + 1
        end = claims[i + 1][0] if i + 1 < len(claims) else None
        spans.append(KeySpan(kid, key, start, end))
    last = spans[-1]
    return ChainState(
        actor,
        seq,
        head,
        last.key,
        last.key_id,
        frozenset(span.key_id for span in spans[:-1]),
        tuple(spans),
    )
