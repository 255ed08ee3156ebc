"""The signature chain: building, incremental verification, every failure kind, audits."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.canonical import canonicalize, decode_json, digest
from protocol.chain import (
    CODES,
    ChainState,
    advance,
    check_entry,
    declared_keys,
    entry_digest,
    genesis,
    key_history,
    key_id,
    make_entry,
    rotation,
    state_before,
    verify_chain,
    verify_next,
)
from protocol.chain_audit import audit_chains
from protocol.entries import CONTEXT, accept_body, read_envelope, roster_change_body
from protocol.errors import ChainError, DecodeError
from protocol.keys import SigningKey
from protocol.proofs import create_proof, verify_proof

A = "http://127.0.0.1:8001/actor"
B = "http://127.0.0.1:8002/actor"
K0 = SigningKey.from_seed(bytes([1]) * 32)
K1 = SigningKey.from_seed(bytes([2]) * 32)
K2 = SigningKey.from_seed(bytes([3]) * 32)
T0 = "2026-11-26T14:00:00Z"


class Builder:
    """Appends entries to one actor's chain the way a node does."""

    def __init__(self, actor: str = A, key: SigningKey = K0) -> None:
        self.actor, self.key, self.kid = actor, key, key_id(actor, 0)
        self.entries = [genesis(actor, "North", "chapter", key, T0)]

    @property
    def head(self) -> str:
        return entry_digest(self.entries[-1])

    def add(self, body: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
        seq = len(self.entries)
        entry = make_entry(
            body or {"type": "Note", "content": f"entry {seq}"},
            actor=self.actor,
            seq=over.get("seq", seq),
            prev=over.get("prev", self.head),
            key=over.get("key", self.key),
            key_id=over.get("key_id", self.kid),
            published=f"2026-11-26T14:{seq // 60 % 60:02d}:{seq % 60:02d}Z",
        )
        self.entries.append(entry)
        return entry

    def rotate(self, new: SigningKey) -> dict[str, Any]:
        seq = len(self.entries)
        entry = rotation(self.actor, seq, self.head, self.key, self.kid, new.verify_key, T0)
        self.entries.append(entry)
        self.key, self.kid = new, key_id(self.actor, seq)
        return entry


def _code(entries: list[dict[str, Any]]) -> str:
    with pytest.raises(ChainError) as info:
        verify_chain(entries)
    return info.value.code


# --- building ---------------------------------------------------------------------------


def test_genesis_shape() -> None:
    g = genesis(A, "North", "chapter", K0, T0)
    assert g["@context"] == list(CONTEXT)
    assert (g["id"], g["type"], g["actor"], g["seq"], g["prev"]) == (
        f"{A}/entries/0",
        "Genesis",
        A,
        0,
        None,
    )
    assert g["assertionKey"] == {
        "id": f"{A}#ed25519-0",
        "type": "Multikey",
        "controller": A,
        "publicKeyMultibase": K0.verify_key.multibase,
    }
    assert g["proof"]["verificationMethod"] == f"{A}#ed25519-0"
    assert g["proof"]["created"] == T0
    verify_proof(g, K0.verify_key)
    assert entry_digest(g) == digest(g) and len(entry_digest(g)) == 64


def test_builders_refuse_bad_input() -> None:
    with pytest.raises(ChainError, match="may not set seq"):
        make_entry(
            {"type": "Note", "seq": 3},
            actor=A,
            seq=1,
            prev="0" * 64,
            key=K0,
            key_id="k",
            published=T0,
        )
    with pytest.raises(ChainError, match="name its type"):
        make_entry(
            {"content": "x"}, actor=A, seq=1, prev="0" * 64, key=K0, key_id="k", published=T0
        )
    with pytest.raises(ChainError, match="RFC 3339"):
        make_entry(
            {"type": "Note"},
            actor=A,
            seq=1,
            prev="0" * 64,
            key=K0,
            key_id="k",
            published="2026-11-26 14:00",
        )
    with pytest.raises(ChainError, match="prev"):
        make_entry({"type": "Note"}, actor=A, seq=1, prev="XYZ", key=K0, key_id="k", published=T0)
    with pytest.raises(ChainError, match="kind"):
        genesis(A, "North", "club", K0, T0)
    with pytest.raises(ChainError, match="roster operation"):
        roster_change_body("promote", "m1", "admin")  # type: ignore[arg-type]


def test_body_helpers() -> None:
    chain = Builder()
    chain.add(roster_change_body("add", "m1", "member"))
    chain.add(accept_body(f"{B}/follows/1", B))
    state = verify_chain(chain.entries)
    assert state.next_seq == 3
    assert chain.entries[1]["operation"] == "add" and chain.entries[2]["follower"] == B


# --- verifying a good chain -------------------------------------------------------------


def test_good_chain_with_rotation() -> None:
    chain = Builder()
    chain.add()
    chain.rotate(K1)  # seq 2, signed by K0
    chain.add()  # seq 3, signed by K1
    chain.rotate(K2)  # seq 4
    chain.add()
    state = verify_chain(chain.entries)
    assert state.next_seq == 6 and state.head == entry_digest(chain.entries[-1])
    assert state.key == K2.verify_key and state.key_id == key_id(A, 4)
    assert state.retired == {key_id(A, 0), key_id(A, 2)}
    assert [state.key_at(s).key_id for s in range(6)] == [key_id(A, k) for k in (0, 0, 0, 2, 2, 4)]
    with pytest.raises(ChainError):
        state.key_at(6)


def test_incremental_equals_whole() -> None:
    chain = Builder()
    for _ in range(4):
        chain.add()
    state: ChainState | None = None
    for entry in chain.entries:
        state = verify_next(state, entry)
    assert state == verify_chain(chain.entries)


def test_verification_survives_a_json_round_trip() -> None:
    chain = Builder()
    chain.add({"type": "Tally", "counts": {"agree": 3, "block": 0}, "share": 0.75})
    wire = [decode_json(json.dumps(e, indent=2).encode(), max_bytes=1 << 16) for e in chain.entries]
    assert verify_chain(wire) == verify_chain(chain.entries)  # type: ignore[arg-type]


def test_parallel_halves_agree_with_verify_next() -> None:
    chain = Builder()
    chain.add()
    chain.rotate(K1)
    chain.add()
    keys = declared_keys(chain.entries)
    assert set(keys) == {key_id(A, 0), key_id(A, 2)}
    checked = [check_entry(e, keys) for e in chain.entries]  # any order, any process
    state = None
    for c in checked:
        state = advance(state, c)
    assert state == verify_chain(chain.entries)


# --- each failure kind ------------------------------------------------------------------


def test_bad_proof() -> None:
    chain = Builder()
    chain.add()
    chain.entries[1]["content"] = "changed after signing"
    with pytest.raises(ChainError) as info:
        verify_chain(chain.entries)
    assert (info.value.code, info.value.actor, info.value.seq) == ("bad_proof", A, 1)
    assert "does not verify" in str(info.value)


def test_wrong_key() -> None:
    chain = Builder()
    chain.add(key=K1)  # names the valid key id but is signed by another key
    assert _code(chain.entries) == "bad_proof"
    chain = Builder()
    chain.add(key=K1, key_id=f"{A}#ed25519-9")
    assert _code(chain.entries) == "wrong_key"
    chain = Builder()
    chain.add(key=K1, key_id=f"{B}#ed25519-0")
    assert _code(chain.entries) == "wrong_key"


def test_retired_key_after_rotation() -> None:
    chain = Builder()
    chain.rotate(K1)  # seq 1
    chain.add(key=K0, key_id=key_id(A, 0))  # seq 2, old key: a thief's or a stale server's
    with pytest.raises(ChainError) as info:
        verify_chain(chain.entries)
    assert (info.value.code, info.value.seq) == ("retired_key", 2)
    assert "retired" in info.value.detail


def test_gap() -> None:
    chain = Builder()
    chain.add()
    chain.add()
    with pytest.raises(ChainError) as info:
        verify_chain([chain.entries[0], chain.entries[2]])
    assert (info.value.code, info.value.seq) == ("gap", 2)
    assert "1..1 missing" in info.value.detail
    assert _code(chain.entries[1:]) == "gap"  # no genesis at all


def test_reordered() -> None:
    chain = Builder()
    chain.add()
    chain.add()
    with pytest.raises(ChainError) as info:
        verify_chain([chain.entries[0], chain.entries[1], chain.entries[2], chain.entries[1]])
    assert (info.value.code, info.value.seq) == ("reordered", 1)


def test_bad_prev() -> None:
    chain = Builder()
    chain.add()
    chain.add(prev="ab" * 32)
    with pytest.raises(ChainError) as info:
        verify_chain(chain.entries)
    assert (info.value.code, info.value.seq) == ("bad_prev", 2)


def test_bad_genesis() -> None:
    other = Builder()
    other.add()
    assert _code([other.entries[1] | {"seq": 0, "prev": None, "id": f"{A}/entries/0"}]) in {
        "bad_genesis"
    }
    g = genesis(A, "North", "chapter", K0, T0)
    forged = create_proof(
        {k: v for k, v in g.items() if k != "proof"},
        K1,
        verification_method=key_id(A, 0),
        created=T0,
    )
    assert _code([forged]) == "bad_genesis"  # claims K0, signed by K1
    chain = Builder()
    second = genesis(A, "North", "chapter", K0, T0)
    del second["proof"]
    second.update(seq=1, prev=chain.head, id=f"{A}/entries/1")
    second["assertionKey"] = {**second["assertionKey"], "id": key_id(A, 1)}
    chain.entries.append(create_proof(second, K0, verification_method=key_id(A, 0), created=T0))
    assert _code(chain.entries) == "bad_genesis"
    with pytest.raises(ChainError, match="empty"):
        verify_chain([])
    for change in ({"kind": "club"}, {"name": ""}, {"name": None}):
        body = {k: v for k, v in g.items() if k != "proof"} | change
        signed = create_proof(body, K0, verification_method=key_id(A, 0), created=T0)
        with pytest.raises(ChainError, match="bad Genesis body") as info:
            verify_chain([signed])
        assert info.value.code == "bad_genesis"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda e: e.pop("prev"), "missing required field `prev`"),
        (lambda e: e.update(seq=True), "Expected `int`, got `bool`"),
        (lambda e: e.update(seq=1.0), "Expected `int`, got `float`"),
        (lambda e: e.update(seq=-1), ">= 0"),
        (lambda e: e.update(prev="AB" * 32), "prev"),
        (lambda e: e.update(published="yesterday"), "published"),
        (lambda e: e.update({"@context": ["https://www.w3.org/ns/activitystreams"]}), "@context"),
        (lambda e: e.update(id=f"{A}/entries/7"), "id is"),
        (lambda e: e.update(proof="signed, honest"), "proof"),
        (lambda e: e.update(nan=float("nan")), "canonicalize"),
    ],
)
def test_malformed(change: Any, why: str) -> None:
    chain = Builder()
    chain.add()
    change(chain.entries[1])
    with pytest.raises(ChainError) as info:
        verify_chain(chain.entries)
    assert info.value.code in {"malformed", "bad_proof"}
    assert why in str(info.value)
    assert info.value.actor == A
    if chain.entries[1]["seq"] == 1 and type(chain.entries[1]["seq"]) is int:
        assert info.value.seq == 1


def test_entry_of_another_actor() -> None:
    a, b = Builder(A), Builder(B, K1)
    b.add()
    with pytest.raises(ChainError, match="in the chain of"):
        verify_chain([a.entries[0], b.entries[1]])


def test_rotation_must_introduce_a_fresh_key() -> None:
    chain = Builder()
    chain.rotate(K0)
    assert _code(chain.entries) == "malformed"


def test_read_envelope_is_strict() -> None:
    chain = Builder()
    env = read_envelope(chain.entries[0])
    assert (env.seq, env.prev, env.actor) == (0, None, A)
    with pytest.raises(ChainError, match="JSON object"):
        read_envelope([1])  # type: ignore[arg-type]


# --- audits -----------------------------------------------------------------------------


def test_audit_of_good_chains_gives_keys_per_seq() -> None:
    a, b = Builder(A), Builder(B, K2)
    a.add()
    a.rotate(K1)
    a.add()
    b.add()
    report = audit_chains(b.entries + a.entries + a.entries[:2])  # duplicates count once
    assert report.ok and report.findings == ()
    assert sorted(report.actors) == [A, B]
    assert report.actors[A].entry_count == 4 and report.actors[A].verified_through == 3
    assert report.key_at(A, 1).key == K0.verify_key
    assert report.key_at(A, 3).key == K1.verify_key
    assert report.key_at(B, 1).key_id == key_id(B, 0)


def test_audit_finds_equivocation_and_keeps_both() -> None:
    chain = Builder()
    chain.add()
    honest = chain.add({"type": "Tally", "counts": {"agree": 5}})
    chain.entries.pop()
    forked = chain.add({"type": "Tally", "counts": {"agree": 9}})
    later = Builder()
    later.entries = [*chain.entries[:2], honest]
    later.add()  # seq 3 extends the honest branch
    report = audit_chains([*chain.entries, honest, later.entries[3]])
    assert not report.ok
    (finding,) = report.findings
    assert (finding.actor, finding.seq, finding.code) == (A, 2, "equivocation")
    assert set(finding.evidence) == {entry_digest(honest), entry_digest(forked)}
    assert {entry_digest(e) for e in report.actors[A].equivocations[2]} == set(finding.evidence)
    assert report.actors[A].verified_through == 3  # followed the branch that continues
    assert str(finding).startswith(f"actor {A}, seq 2: equivocation")


def _second_copy(chain: Builder, how: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chain's seq 2 and another entry claiming seq 2, signed ``how``."""
    chain.add()
    honest = chain.add({"type": "Tally", "counts": {"agree": 5}})
    chain.entries.pop()
    if how == "unsigned":
        other = chain.add({"type": "Tally", "counts": {"agree": 9}})
        del other["proof"]
    elif how == "stranger":
        other = chain.add({"type": "Tally", "counts": {"agree": 9}}, key=K2)
    elif how == "edited":
        other = copy.deepcopy(honest)
        other["counts"] = {"agree": 9}  # signed once, changed after
    else:
        raise AssertionError(how)
    chain.entries[2:] = [honest]
    return honest, other


@pytest.mark.parametrize("how", ["unsigned", "stranger", "edited"])
@pytest.mark.parametrize("order", ["forged_first", "forged_last"])
def test_a_copy_the_actor_did_not_sign_is_a_forgery_not_an_equivocation(
    how: str, order: str
) -> None:
    chain = Builder()
    honest, forged = _second_copy(chain, how)
    chain.add()  # seq 3 continues the honest branch
    entries = [*chain.entries, forged] if order == "forged_last" else [forged, *chain.entries]
    report = audit_chains(entries)
    actor = report.actors[A]
    assert actor.equivocations == {}
    assert actor.genuine == {2: entry_digest(honest)}
    assert actor.verified_through == 3
    (finding,) = report.findings
    assert (finding.actor, finding.seq, finding.code) == (A, 2, "bad_proof")
    assert finding.evidence == (entry_digest(forged),)
    assert "forgery" in finding.detail and "not an equivocation" in finding.detail


def test_a_forgery_at_the_head_does_not_frame_the_actor() -> None:
    """No later entry points at either copy: the signed one still wins."""
    chain = Builder()
    _, forged = _second_copy(chain, "stranger")
    report = audit_chains([forged, *chain.entries])
    assert report.actors[A].equivocations == {} and report.actors[A].verified_through == 2
    assert [f.code for f in report.findings] == ["bad_proof"]


def test_two_signed_copies_past_a_broken_link_are_still_an_equivocation() -> None:
    """The chain broke at seq 1, so the key of seq 3 is the one the chain names."""
    chain = Builder()
    chain.add()
    chain.add()
    first = chain.add({"type": "Tally", "counts": {"agree": 5}})
    chain.entries.pop()
    second = chain.add({"type": "Tally", "counts": {"agree": 9}})
    chain.entries[1] = {**chain.entries[1], "content": "edited"}  # breaks seq 1's proof
    report = audit_chains([*chain.entries, first])
    assert report.actors[A].verified_through == 0
    assert set(report.actors[A].equivocations) == {3}
    assert sorted((f.seq, f.code) for f in report.findings) == [
        (1, "bad_proof"),
        (3, "equivocation"),
    ]
    forged = {**second, "counts": {"agree": 1}}
    report = audit_chains([*chain.entries, forged])
    assert report.actors[A].equivocations == {}
    assert sorted((f.seq, f.code) for f in report.findings) == [(1, "bad_proof"), (3, "bad_proof")]


def test_audit_reports_every_actor() -> None:
    a, b, c = Builder(A), Builder(B, K1), Builder("http://127.0.0.1:8003/actor", K2)
    for chain in (a, b, c):
        chain.add()
        chain.add()
    a.entries[1]["content"] = "tampered"
    del b.entries[1]
    report = audit_chains(a.entries + b.entries + c.entries + [{"junk": 1}])
    codes = {(f.actor, f.code) for f in report.findings}
    assert codes == {(A, "bad_proof"), (B, "gap"), (None, "malformed")}
    assert report.actors[A].verified_through == 0
    assert report.actors[c.actor].verified_through == 2
    with pytest.raises(ChainError):
        report.key_at("http://127.0.0.1:9/none", 0)


# --- any single flipped byte is detected ------------------------------------------------


def _chain_for_flips() -> list[dict[str, Any]]:
    chain = Builder()
    chain.add({"type": "Tally", "counts": {"agree": 12, "block": 0}, "cast": 12, "quorum": "1/2"})
    chain.rotate(K1)
    chain.add(roster_change_body("add", "m-7", "organizer"))
    chain.add({"type": "Decision", "outcome": "agree", "tallies": ["ab" * 32, "cd" * 32]})
    return chain.entries


FLIP_CHAIN = _chain_for_flips()
FLIP_BYTES = [canonicalize(e) for e in FLIP_CHAIN]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_flipped_byte_in_any_entry_is_detected(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(FLIP_CHAIN) - 1), label="entry")
    raw = FLIP_BYTES[index]
    at = data.draw(st.integers(0, len(raw) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    tampered_raw = raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]
    try:
        tampered = decode_json(tampered_raw, max_bytes=1 << 16)
    except DecodeError:
        return  # no longer JSON: refused before it reaches the chain
    if tampered == FLIP_CHAIN[index]:
        return  # the flip hit nothing that changes the value (cannot happen in JCS text)
    entries = copy.deepcopy(FLIP_CHAIN)
    entries[index] = tampered  # type: ignore[call-overload]
    with pytest.raises(ChainError):
        verify_chain(entries)
    assert not audit_chains(entries).ok


def test_untampered_flip_chain_verifies() -> None:
    assert verify_chain(FLIP_CHAIN).next_seq == len(FLIP_CHAIN)


# --- segments verified independently, stitched in order --------------------------------


def _segmented(entries: list[dict[str, Any]], size: int) -> ChainState:
    history = key_history(entries)
    state: ChainState | None = None
    for lo in range(0, len(entries), size):
        segment = entries[lo : lo + size]
        start = None if lo == 0 else state_before(A, lo, entry_digest(entries[lo - 1]), history)
        end = start
        for entry in segment:  # this loop may run anywhere, in any order
            end = verify_next(end, entry)
        if start != state:  # the stitch: assumptions must match what came before
            for entry in segment:
                state = verify_next(state, entry)
        else:
            state = end
    assert state is not None
    return state


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_segments_stitch_to_the_sequential_state(size: int) -> None:
    chain = Builder()
    for i in range(9):
        if i in (2, 6):
            chain.rotate([K1, K2][i // 4])
        else:
            chain.add()
    assert _segmented(chain.entries, size) == verify_chain(chain.entries)


def test_state_before_is_only_an_assumption() -> None:
    chain = Builder()
    chain.add()
    chain.rotate(K1)
    chain.add()
    history = key_history(chain.entries)
    assumed = state_before(A, 3, entry_digest(chain.entries[2]), history)
    assert assumed == verify_chain(chain.entries[:3])
    forged = key_history(
        [*chain.entries[:2], rotation(A, 2, "0" * 64, K2, key_id(A, 0), K2.verify_key, T0)]
    )
    wrong = state_before(A, 3, entry_digest(chain.entries[2]), forged)
    assert wrong != verify_chain(chain.entries[:3])  # the stitch would catch it
    with pytest.raises(ChainError):
        state_before(A, 0, "0" * 64, history)
    with pytest.raises(ChainError):
        state_before(A, 3, "0" * 64, history[1:])


# --- the worked example of docs/protocol.md §5.3 ----------------------------------------


def test_worked_example_in_the_protocol_document() -> None:
    actor = "https://north.example/actor"
    key = SigningKey.from_seed(bytes([1]) * 32)
    g = genesis(actor, "North Chapter", "chapter", key, "2026-11-26T14:00:00Z")
    e1 = make_entry(
        roster_change_body("add", "m-1", "organizer"),
        actor=actor,
        seq=1,
        prev=entry_digest(g),
        key=key,
        key_id=key_id(actor, 0),
        published="2026-11-26T14:05:00Z",
    )
    assert key.verify_key.multibase == "z6Mkon3Necd6NkkyfoGoHxid2znGc59LU3K7mubaRcFbLfLX"
    expected = [
        (
            "z3XV7Z2y9QLToZGZGg9prLpc4MB5VuFV4pSajPEkFGLhVQ9Hfdhp3SvR9u2rdhEkiwgoEQnhFDWRy8a89bEDXYH2U",
            "28cab402aad9d3fc7e873524b4c85e42e05116443032e62a42e72375b92f0bfd",
            "0f0a7be3f55f72db17e856a6ca3378ad3482f7a7e9a458a3238d2cd313754fdd",
            "6e7bfd9463edf8b5d41c9c5b293b0f5807bee684f7bdf4227a196da97dd49a94",
        ),
        (
            "zh79AJM6K4qGHjS1NzXCFd1AZEUXSoU2d2KgC8sqJZJ9r7WhyHJkbUoeqWmzPtZS7uDyPJAJVSMWzUee1uxTz25J",
            "2b777828179ee3c52c99b15a9a11335bcc5759a081acbf2d9aa513aedc9ffb13",
            "b491b624e7a4ea40d98af0baca5ffd39513dfe7faec6a79ffa680950f32f1df5",
            "3b16f2eda97f18fccbae5cd736660e6737501102c023693692730ed034e05ccb",
        ),
    ]
    for entry, (proof_value, options_hash, document_hash, entry_hash) in zip(
        (g, e1), expected, strict=True
    ):
        options = {k: v for k, v in entry["proof"].items() if k != "proofValue"}
        document = {k: v for k, v in entry.items() if k != "proof"}
        assert entry["proof"]["proofValue"] == proof_value
        assert digest(options) == options_hash
        assert digest(document) == document_hash
        assert entry_digest(entry) == entry_hash
    assert e1["prev"] == expected[0][3]
    assert verify_chain([g, e1]).head == expected[1][3]
    tampered = copy.deepcopy(e1)
    tampered["role"] = "admin"
    with pytest.raises(ChainError, match="bad_proof"):
        verify_chain([g, tampered])


_odd_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["", "0" * 64, T0, A, f"{A}#ed25519-0", "z" * 88]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_replaced_field_gives_a_chain_error_never_a_crash(data: st.DataObject) -> None:
    entries = copy.deepcopy(FLIP_CHAIN)
    index = data.draw(st.integers(0, len(entries) - 1), label="entry")
    entry = entries[index]
    where = entry if data.draw(st.booleans(), label="top") else entry["proof"]
    field = data.draw(st.sampled_from([*sorted(where), "extra"]), label="field")
    new = data.draw(_odd_values, label="value")
    if where.get(field, object()) == new:
        return
    where[field] = new
    with pytest.raises(ChainError):
        verify_chain(entries)
    report = audit_chains(entries)
    assert not report.ok
    assert all(f.code in CODES for f in report.findings)
