"""Members' own ballot keys on a real node (real SQLite file): registration and
revocation as chain entries, signed ballots accepted, forged/replayed/revoked refused."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from nodekit import (
    NodeProcess,
    add_member,
    call,
    cli_json,
    free_port,
    init_node,
    read_db,
    run_cli,
)

from node import chain_store, member_key_store
from node.audit_command import bundle_records
from node.errors import Conflict, NotFound
from node.member_keys import MemberKeys
from node.proposal_forms import NewProposal
from node.services import NodeServices
from protocol import ballots
from protocol.audit import audit_bundle
from protocol.bundle import BallotRecord
from protocol.keys import SigningKey
from protocol.member_ballots import MemberBallotError, sign_member_ballot
from protocol.roster import member_keys_at

KEY_A = SigningKey(b"\x0a" * 32)
KEY_B = SigningKey(b"\x0b" * 32)


async def chain_keys(services: NodeServices) -> dict[str, frozenset[str]]:
    async with services.db.write() as tx:
        blobs = await chain_store.entries_in(tx, ("RosterChange",))
    return member_keys_at(msgspec.json.decode(b) for b in blobs)


async def test_register_and_revoke_are_chain_entries(services: NodeServices) -> None:
    mia = (await services.members.add("Mia")).member
    keys = MemberKeys(services.db, services.ledger)
    first = await keys.register(mia, KEY_A.verify_key.multibase, "laptop")
    second = await keys.register(mia, KEY_B.verify_key.multibase, "phone")
    assert second.registered_seq == first.registered_seq + 1
    assert await chain_keys(services) == {
        mia.id: frozenset({KEY_A.verify_key.multibase, KEY_B.verify_key.multibase})
    }
    revoked = await keys.revoke(mia, KEY_A.verify_key.multibase)
    assert revoked.revoked_seq == second.registered_seq + 1
    assert await chain_keys(services) == {mia.id: frozenset({KEY_B.verify_key.multibase})}
    listed = await keys.keys_of(mia.id)
    assert [(k.label, k.revoked_seq is None) for k in listed] == [
        ("laptop", False),
        ("phone", True),
    ]
    # a key is one member's, once; a revoked key stays revoked; nobody revokes another's
    olu = (await services.members.add("Olu")).member
    with pytest.raises(Conflict, match="already registered"):
        await keys.register(olu, KEY_B.verify_key.multibase)
    with pytest.raises(Conflict, match="already revoked"):
        await keys.revoke(mia, KEY_A.verify_key.multibase)
    with pytest.raises(NotFound):
        await keys.revoke(olu, KEY_B.verify_key.multibase)
    with pytest.raises(Exception, match="publicKeyMultibase"):
        await keys.register(olu, "zNotAKey")


async def open_vote(services: NodeServices, *, secret: bool = False) -> tuple[str, str]:
    org = (await services.members.add("Org", "organizer")).member
    p = await services.proposals.create(
        org, NewProposal(title="Hall", method="choice", options=["north", "south"], secret=secret)
    )
    return p.id, p.object_id or ""


async def test_signed_ballot_accepted_changed_and_counted(services: NodeServices) -> None:
    mia = (await services.members.add("Mia")).member
    await MemberKeys(services.db, services.ledger).register(mia, KEY_A.verify_key.multibase)
    pid, object_id = await open_vote(services)
    signed = sign_member_ballot(KEY_A, object_id, mia.id, 1, {"choice": "north"})
    out = await services.proposals.cast(mia, pid, msgspec.to_builtins(signed))
    assert out["custody"] == "member-signed"
    changed = sign_member_ballot(KEY_A, object_id, mia.id, 2, {"choice": "south"})
    await services.proposals.cast(mia, pid, msgspec.to_builtins(changed))
    rows = await services.db.fetchall(
        "SELECT counter, key, signature FROM ballot_signatures"
        " WHERE proposal_id = ? ORDER BY counter",
        (pid,),
    )
    assert [tuple(r) for r in rows] == [
        (1, signed.key, signed.signature),
        (2, changed.key, changed.signature),
    ]
    # replaying the first signed ballot over the newer one is refused, and stores nothing
    with pytest.raises(Conflict, match="replay") as err:
        await services.proposals.cast(mia, pid, msgspec.to_builtins(signed))
    assert err.value.code == "replayed_ballot"
    olu = (await services.members.add("Olu")).member
    custodial = await services.proposals.cast(olu, pid, {"choice": "north"})
    assert custodial["custody"] == "custodial"
    view = await services.proposals.close(None, pid)
    assert view.status == "decided"
    assert await member_key_store.signed_counts(services.db, pid) == (1, 1)


@pytest.mark.parametrize(
    "forge",
    ["other_member", "unregistered_key", "altered_choice", "wrong_proposal", "revoked"],
)
async def test_forged_or_revoked_signed_ballots_are_refused(
    services: NodeServices, forge: str
) -> None:
    mia = (await services.members.add("Mia")).member
    olu = (await services.members.add("Olu")).member
    keys = MemberKeys(services.db, services.ledger)
    await keys.register(mia, KEY_A.verify_key.multibase)
    await keys.register(olu, KEY_B.verify_key.multibase)
    pid, object_id = await open_vote(services)
    body = msgspec.to_builtins(sign_member_ballot(KEY_A, object_id, mia.id, 1, {"choice": "north"}))
    voter = mia
    if forge == "other_member":  # the node posting Mia's signed ballot as Olu's
        voter = olu
    elif forge == "unregistered_key":
        body = msgspec.to_builtins(
            sign_member_ballot(SigningKey(b"\x0c" * 32), object_id, mia.id, 1, {"choice": "north"})
        )
    elif forge == "altered_choice":
        body["ballot"] = {"choice": "south"}
    elif forge == "wrong_proposal":
        body = msgspec.to_builtins(
            sign_member_ballot(KEY_A, object_id + "x", mia.id, 1, {"choice": "north"})
        )
    elif forge == "revoked":
        await keys.revoke(mia, KEY_A.verify_key.multibase)
    with pytest.raises(MemberBallotError) as err:
        await services.proposals.cast(voter, pid, body)
    assert err.value.status == 400
    assert mia.id in err.value.detail or olu.id in err.value.detail or object_id in err.value.detail
    row = await services.db.fetchone(
        "SELECT COUNT(*) AS n FROM ballots WHERE proposal_id = ?", (pid,)
    )
    assert row is not None and row["n"] == 0


async def test_secret_votes_take_no_member_signature(services: NodeServices) -> None:
    mia = (await services.members.add("Mia")).member
    await MemberKeys(services.db, services.ledger).register(mia, KEY_A.verify_key.multibase)
    pid, object_id = await open_vote(services, secret=True)
    body = msgspec.to_builtins(sign_member_ballot(KEY_A, object_id, mia.id, 1, {"choice": "north"}))
    with pytest.raises(Exception, match="secret vote") as err:
        await services.proposals.cast(mia, pid, body)
    assert getattr(err.value, "code", None) == "signature_in_secret_vote"


async def test_export_carries_signatures_and_the_audit_catches_an_edited_row(
    services: NodeServices,
) -> None:
    mia = (await services.members.add("Mia")).member
    olu = (await services.members.add("Olu")).member
    await MemberKeys(services.db, services.ledger).register(mia, KEY_A.verify_key.multibase)
    pid, object_id = await open_vote(services)
    signed = sign_member_ballot(KEY_A, object_id, mia.id, 1, {"choice": "north"})
    mine = await services.proposals.cast(mia, pid, msgspec.to_builtins(signed))
    await services.proposals.cast(olu, pid, {"choice": "south"})
    # the operator edits Mia's row in the SQLite file before the count, consistently:
    # new choice, the receipt recomputed from the stored nonce (signature rows follow)
    forged = ballots.ChoiceBallot(choice="south")
    receipt = ballots.ballot_receipt(object_id, forged, bytes.fromhex(mine["nonce"]))
    with sqlite3.connect(services.config.database_path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(
            "UPDATE ballots SET ballot = ?, receipt = ? WHERE receipt = ?",
            ('{"choice":"south"}', receipt, mine["receipt"]),
        )
        conn.execute(
            "UPDATE ballot_signatures SET receipt = ? WHERE receipt = ?", (receipt, mine["receipt"])
        )
    await services.proposals.close(None, pid)
    report = audit_bundle(await bundle_records(services))
    assert [(f.what, f.seq) for f in report.findings] == [
        ("bad_member_signature", report.findings[0].seq)
    ]
    assert mia.id in report.findings[0].why and receipt in report.findings[0].why
    assert (report.seen.member_signed, report.seen.custodial) == (1, 1)
    assert (report.verified.member_signed, report.verified.custodial) == (0, 1)


async def test_export_of_an_honest_signed_vote_audits_clean(services: NodeServices) -> None:
    mia = (await services.members.add("Mia")).member
    await MemberKeys(services.db, services.ledger).register(mia, KEY_A.verify_key.multibase)
    pid, object_id = await open_vote(services)
    for counter, choice in ((1, "north"), (5, "south")):
        signed = sign_member_ballot(KEY_A, object_id, mia.id, counter, {"choice": choice})
        await services.proposals.cast(mia, pid, msgspec.to_builtins(signed))
    await services.proposals.close(None, pid)
    records = await bundle_records(services)
    report = audit_bundle(records)
    assert report.ok, report.findings
    assert report.verified.member_signed == 1  # the last ballot counts, with counter 5
    (ballot,) = [r for r in records if isinstance(r, BallotRecord)]
    assert (ballot.counter, ballot.ballot) == (5, {"choice": "south"})


# -- the command line and the JSON API, against a real `convene serve` process -------


def test_cli_keygen_and_sign_posted_to_a_real_node(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    init_node(data, port)
    org = add_member(data, "Olu", "organizer")
    mia = add_member(data, "Mia")
    key_file = tmp_path / "mia.key"
    made = cli_json("ballot", "keygen", "--out", str(key_file))
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(key_file.read_text())["publicKeyMultibase"] == made["key"]
    again = run_cli("ballot", "keygen", "--out", str(key_file), check=False)
    assert again.returncode == 1 and "never overwritten" in again.stderr

    def sign(counter: int, ballot: str, member: str = mia["id"], key: Path = key_file) -> Any:
        return json.loads(
            run_cli(
                "ballot", "sign", "--key", str(key), "--proposal", object_id,
                "--member", member, "--counter", str(counter), "--ballot", ballot,
            ).stdout
        )  # fmt: skip

    node = NodeProcess(data, port, tmp_path / "node.log")
    node.start()
    try:

        async def api(method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
            async with aiohttp.ClientSession() as s:
                return await call(s, method, node.url + path, token, body)

        status, added = asyncio.run(
            api("POST", "/api/members/me/keys", mia["token"], {"key": made["key"], "label": "cli"})
        )
        assert status == 201 and added["key"] == made["key"], added
        status, created = asyncio.run(
            api("POST", "/api/proposals", org["token"], {"title": "Hall", "method": "consent"})
        )
        assert status == 201, created
        object_id = created["object_id"]
        ballots_url = f"/api/proposals/{created['id']}/ballots"
        status, out = asyncio.run(
            api("POST", ballots_url, mia["token"], sign(1, '{"choice":"agree"}'))
        )
        assert (status, out["custody"]) == (201, "member-signed"), out
        # the same signed body again is a replay; an altered one a forgery; both named
        status, out = asyncio.run(
            api("POST", ballots_url, mia["token"], sign(1, '{"choice":"agree"}'))
        )
        assert (status, out["error"]) == (409, "replayed_ballot") and "counter 1" in out["detail"]
        altered = sign(2, '{"choice":"agree"}') | {"ballot": {"choice": "block"}}
        status, out = asyncio.run(api("POST", ballots_url, mia["token"], altered))
        assert (status, out["error"]) == (400, "bad_member_signature") and mia["id"] in out[
            "detail"
        ]
        status, out = asyncio.run(
            api("POST", ballots_url, org["token"], sign(3, '{"choice":"agree"}'))
        )
        assert (status, out["error"]) == (400, "wrong_member")
        status, out = asyncio.run(
            api("POST", "/api/members/me/keys/revoke", mia["token"], {"key": made["key"]})
        )
        assert status == 200 and out["revoked_seq"] is not None
        status, out = asyncio.run(
            api("POST", ballots_url, mia["token"], sign(4, '{"choice":"agree"}'))
        )
        assert (status, out["error"]) == (400, "unknown_member_key") and "revoked" in out["detail"]
        status, listed = asyncio.run(api("GET", "/api/members/me/keys", mia["token"]))
        assert [(k["key"], k["label"]) for k in listed["items"]] == [(made["key"], "cli")]
    finally:
        node.stop()
    rows = read_db(data, "SELECT counter FROM ballot_signatures")
    assert rows == [(1,)]


def test_cli_sign_refuses_a_bad_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text('{"secretKeyMultibase": "zNope"}')
    out = run_cli(
        "ballot", "sign", "--key", str(bad), "--proposal", "p", "--member", "m",
        "--counter", "1", "--ballot", '{"choice": "agree"}', check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "secretKeyMultibase" in out.stderr
    missing = run_cli(
        "ballot", "sign", "--key", str(tmp_path / "none"), "--proposal", "p", "--member", "m",
        "--counter", "1", "--ballot", "{}", check=False,
    )  # fmt: skip
    assert missing.returncode == 1 and "cannot read key file" in missing.stderr


async def test_a_key_revoked_before_the_count_leaves_the_ballot_custodial(
    services: NodeServices,
) -> None:
    # an honest node must still audit clean when a member revokes a key after voting
    mia = (await services.members.add("Mia")).member
    keys = MemberKeys(services.db, services.ledger)
    await keys.register(mia, KEY_A.verify_key.multibase)
    pid, object_id = await open_vote(services)
    signed = sign_member_ballot(KEY_A, object_id, mia.id, 1, {"choice": "north"})
    await services.proposals.cast(mia, pid, msgspec.to_builtins(signed))
    await keys.revoke(mia, KEY_A.verify_key.multibase)
    await services.proposals.close(None, pid)
    records = await bundle_records(services)
    report = audit_bundle(records)
    assert report.ok, report.findings
    assert (report.seen.member_signed, report.seen.custodial) == (0, 1)
    assert await member_key_store.signed_counts(services.db, pid) == (0, 1)
    (ballot,) = [r for r in records if isinstance(r, BallotRecord)]
    assert ballot.signature is None and ballot.ballot == {"choice": "north"}
