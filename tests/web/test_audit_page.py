"""The audit page's rows: verified entries, a tampered entry, an equivocation."""

from __future__ import annotations

import copy
from typing import Any

from node.web.audit_page import audit_rows
from protocol import chain
from protocol.entries import make_entry
from protocol.keys import SigningKey

ACTOR = "https://hill.example/actor"
KEY = SigningKey.from_seed(bytes(range(32)))
KEY_ID = f"{ACTOR}#ed25519-0"
WHEN = "2026-11-26T15:00:00Z"


def build(n: int) -> list[dict[str, Any]]:
    entries = [chain.genesis(ACTOR, "Hill", "chapter", KEY, WHEN)]
    for seq in range(1, n):
        body = {"type": "RosterChange", "operation": "add", "member": f"m-{seq}", "role": "member"}
        prev = chain.entry_digest(entries[-1])
        entries.append(
            make_entry(
                body, actor=ACTOR, seq=seq, prev=prev, key=KEY, key_id=KEY_ID, published=WHEN
            )
        )
    return entries


def test_a_sound_chain_is_verified_newest_first() -> None:
    entries = build(4)
    rows, findings = audit_rows(entries)
    assert findings == []
    assert [r.seq for r in rows] == [3, 2, 1, 0]
    assert {r.status for r in rows} == {"verified"}
    assert rows[-1].type == "Genesis"
    assert rows[0].digest == chain.entry_digest(entries[3])


def test_a_tampered_entry_and_everything_after_it_are_not_verified() -> None:
    entries = build(4)
    entries[2] = copy.deepcopy(entries[2])
    entries[2]["member"] = "m-forged"  # one changed field: the proof no longer holds
    rows, findings = audit_rows(entries)
    status = {r.seq: r.status for r in rows}
    assert status == {0: "verified", 1: "verified", 2: "not verified", 3: "not verified"}
    why = next(r.why for r in rows if r.seq == 2)
    assert "seq 2" in why and ACTOR in why
    assert len(findings) == 1


def test_two_entries_with_one_seq_are_flagged_as_equivocation() -> None:
    entries = build(3)
    body = {"type": "RosterChange", "operation": "remove", "member": "m-1", "role": "member"}
    other = make_entry(
        body, actor=ACTOR, seq=2, prev=entries[2]["prev"], key=KEY, key_id=KEY_ID, published=WHEN
    )
    rows, findings = audit_rows([*entries, other])
    flagged = [r for r in rows if r.status == "equivocation"]
    assert [r.seq for r in flagged] == [2, 2]
    assert "2 different entries claim seq 2" in flagged[0].why
    assert any("equivocation" in f or "claim seq 2" in f for f in findings)
