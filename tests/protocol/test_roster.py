"""The roster fold over RosterChange entries and the roster's Merkle root."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.merkle import leaf_hash, node_hash, verify_inclusion_data
from protocol.roster import RosterError, roster_at, roster_leaf, roster_root, roster_tree

ACTOR = "https://chapter.example/actor"


def change(seq: int, operation: str, member: str, role: str = "member") -> dict[str, Any]:
    return {
        "type": "RosterChange",
        "actor": ACTOR,
        "seq": seq,
        "operation": operation,
        "member": member,
        "role": role,
    }


def genesis() -> dict[str, Any]:
    return {"type": "Genesis", "actor": ACTOR, "seq": 0, "name": "Chapter", "kind": "chapter"}


def test_fold_in_seq_order_whatever_the_input_order() -> None:
    entries = [
        genesis(),
        change(1, "add", "m-a", "admin"),
        change(2, "add", "m-b"),
        {"type": "Question", "actor": ACTOR, "seq": 3},
        change(4, "role", "m-b", "organizer"),
        change(5, "add", "m-c"),
        change(6, "remove", "m-a", "admin"),
    ]
    want = {"m-b": "organizer", "m-c": "member"}
    assert roster_at(entries) == want
    assert roster_at(reversed(entries)) == want
    assert roster_at(entries, upto_seq=0) == {}
    assert roster_at(entries, upto_seq=2) == {"m-a": "admin", "m-b": "member"}
    assert roster_at(entries, upto_seq=3) == {"m-a": "admin", "m-b": "member"}
    assert roster_at(entries, upto_seq=5) == {"m-a": "admin", "m-b": "organizer", "m-c": "member"}
    assert roster_at([]) == {}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (change(3, "add", "m-a"), "already on the roster as admin"),
        (change(3, "remove", "m-z"), "m-z, who is not on the roster"),
        (change(3, "role", "m-z", "admin"), "m-z, who is not on the roster"),
        (change(3, "remove", "m-a", "member"), "but they hold the role admin"),
        (change(3, "role", "m-a", "admin"), "the role they already hold"),
    ],
)
def test_impossible_changes_name_actor_seq_and_reason(bad: dict[str, Any], reason: str) -> None:
    entries = [genesis(), change(1, "add", "m-a", "admin"), change(2, "add", "m-b"), bad]
    with pytest.raises(RosterError, match=reason) as err:
        roster_at(entries)
    assert err.value.code == "impossible_roster_change"
    assert (err.value.actor, err.value.seq) == (ACTOR, 3)
    assert str(err.value).startswith(f"actor {ACTOR}, seq 3: ")
    # Before the impossible change, the roster is still readable.
    assert roster_at(entries, upto_seq=2) == {"m-a": "admin", "m-b": "member"}


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("operation", "promote", "operation 'promote' is not one of"),
        ("role", "king", "role 'king' is not one of"),
        ("member", "", "'member' must be a non-empty string"),
        ("member", 7, "'member' must be a non-empty string"),
        ("member", "x" * 300, "at most 256"),
        ("role", None, "'role' must be a non-empty string"),
    ],
)
def test_malformed_changes(field: str, value: object, reason: str) -> None:
    bad = change(1, "add", "m-a")
    bad[field] = value
    with pytest.raises(RosterError, match=reason) as err:
        roster_at([genesis(), bad])
    assert err.value.code == "malformed_roster_change"
    assert err.value.seq == 1


def test_mixed_actors_duplicate_and_bad_seq() -> None:
    other = change(2, "add", "m-b") | {"actor": "https://other.example/actor"}
    with pytest.raises(RosterError, match="two actors") as err:
        roster_at([change(1, "add", "m-a"), other])
    assert err.value.code == "mixed_actors"
    with pytest.raises(RosterError, match="share this seq") as err:
        roster_at([change(1, "add", "m-a"), change(1, "add", "m-b")])
    assert (err.value.code, err.value.seq) == ("duplicate_seq", 1)
    for seq in (-1, "1", True, None):
        with pytest.raises(RosterError, match="seq must be a non-negative integer"):
            roster_at([change(1, "add", "m-a") | {"seq": seq}])
    with pytest.raises(RosterError, match="no actor"):
        roster_at([{"type": "RosterChange", "seq": 0}])
    assert issubclass(RosterError, ProtocolError)


def test_roster_root_by_hand() -> None:
    # Leaves: RFC 8785 bytes of {"member","role"}, sorted by member id.
    leaf_a = b'{"member":"m-a","role":"admin"}'
    leaf_b = b'{"member":"m-b","role":"member"}'
    assert roster_leaf("m-a", "admin") == leaf_a
    want = node_hash(leaf_hash(leaf_a), leaf_hash(leaf_b)).hex()
    assert roster_root({"m-b": "member", "m-a": "admin"}) == (2, want)
    assert roster_root({}) == (0, hashlib.sha256(b"").hexdigest())
    # Flip one byte of one leaf: a different root.
    tampered = node_hash(leaf_hash(leaf_a.replace(b"admin", b"admiN")), leaf_hash(leaf_b))
    assert roster_root({"m-b": "member", "m-a": "admin"})[1] != tampered.hex()
    assert roster_root({"m-b": "member", "m-a": "organizer"})[1] != want


def test_non_ascii_ids_sort_by_code_point_and_hash_as_utf8() -> None:
    roster = {"m-é": "member", "m-z": "member", "m-😀": "admin"}
    members, _ = roster_tree(roster)
    assert members == ["m-z", "m-é", "m-😀"]
    leaf = roster_leaf("m-é", "member")
    assert (
        leaf
        == json.dumps(
            {"member": "m-é", "role": "member"}, ensure_ascii=False, separators=(",", ":")
        ).encode()
    )


def test_a_member_can_prove_their_line() -> None:
    roster = {f"m-{i:03}": ("organizer" if i % 7 == 0 else "member") for i in range(50)}
    members, tree = roster_tree(roster)
    size, root_hex = roster_root(roster)
    i = members.index("m-014")
    proof = tree.inclusion_proof(i)
    verify_inclusion_data(
        roster_leaf("m-014", "organizer"), i, size, proof, bytes.fromhex(root_hex)
    )
    with pytest.raises(ProtocolError):
        verify_inclusion_data(
            roster_leaf("m-014", "admin"), i, size, proof, bytes.fromhex(root_hex)
        )


@settings(max_examples=50, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "remove", "role"]),
            st.sampled_from([f"m-{i}" for i in range(6)]),
            st.sampled_from(["member", "organizer", "admin"]),
        ),
        max_size=30,
    )
)
def test_fold_matches_a_plain_dict_model(ops: list[tuple[str, str, str]]) -> None:
    # Keep only the changes a plain dict model says are possible; the fold agrees
    # with the model, and the root depends only on the final roster.
    model: dict[str, str] = {}
    entries: list[dict[str, Any]] = [genesis()]
    for op, member, role in ops:
        possible = (
            (op == "add" and member not in model)
            or (op == "remove" and model.get(member) == role)
            or (op == "role" and member in model and model[member] != role)
        )
        if not possible:
            continue
        if op == "remove":
            del model[member]
        else:
            model[member] = role
        entries.append(change(len(entries), op, member, role))
    assert roster_at(entries) == model
    assert roster_root(roster_at(entries)) == roster_root(dict(reversed(model.items())))


@settings(max_examples=50, deadline=None)
@given(member=st.text(min_size=1, max_size=40), role=st.sampled_from(["member", "admin"]))
def test_leaf_is_rfc8785_as_an_independent_implementation_writes_it(member: str, role: str) -> None:
    import rfc8785

    assert roster_leaf(member, role) == rfc8785.dumps({"member": member, "role": role})
