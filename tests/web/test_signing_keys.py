"""Members' own keys in a real Chromium against a real node (real SQLite file): the
browser makes a non-extractable Ed25519 key, registers it, signs a ballot and a
changed ballot; a revoked key is refused; a ballot edited in the node's SQLite file is
caught by the audit of the node's export."""

from __future__ import annotations

import re
import sqlite3

import msgspec
import pytest
from livenode import LiveNode, member_page, open_proposal, receipt_of, shot
from playwright.async_api import BrowserContext, Page

from node.audit_command import bundle_records
from node.member_keys import MemberKey, MemberKeys
from protocol import ballots
from protocol.audit import audit_bundle
from protocol.bundle import BallotRecord
from protocol.member_ballots import decode_signed_ballot, verify_member_ballot

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def device_key(page: Page, node: LiveNode) -> str:
    """Visit the keys page; the browser makes and registers a key on its first visit."""
    await page.goto(node.at("/account/keys"))
    await page.locator("[data-member-keys][data-device-key]").wait_for()
    return str(await page.get_attribute("[data-member-keys]", "data-device-key"))


async def vote(page: Page, node: LiveNode, pid: str, choice: str) -> str:
    await page.goto(node.at(f"/proposals/{pid}"))
    await page.get_by_text("will be signed with this device's key").wait_for()
    await page.get_by_label(choice, exact=True).check()
    await page.get_by_role("button", name="Send my vote").click()
    return await receipt_of(page)


async def keys_of(node: LiveNode, member: str) -> list[MemberKey]:
    return await MemberKeys(node.services.db, node.services.ledger).keys_of(member)


async def member_id(node: LiveNode, name: str) -> str:
    return next(m.id for m in await node.services.members.all() if m.name == name)


async def test_key_made_registered_and_a_signed_then_changed_vote(
    context: BrowserContext, node: LiveNode
) -> None:
    page = await member_page(context, node, "Kim")
    key = await device_key(page, node)
    kim = await member_id(node, "Kim")
    # the key is a Multikey on the node's chain, and WebCrypto will not export its secret
    assert [k.key for k in await keys_of(node, kim)] == [key]
    exported = await page.evaluate(
        """async (member) => {
            const rec = await window.conveneKeys.stored(member);
            try { await crypto.subtle.exportKey("pkcs8", rec.privateKey); return "exported"; }
            catch (e) { return e.name; }
        }""",
        kim,
    )
    assert exported == "InvalidAccessError"
    pid = await open_proposal(node, "Garden", "choice", ["beans", "roses"])
    first = await vote(page, node, pid, "beans")
    assert "carries your own signature" in await page.inner_text("#custody")
    await shot(page, "member-signed-receipt")
    second = await vote(page, node, pid, "roses")
    rows = await node.services.db.fetchall(
        "SELECT receipt, counter, key, signature FROM ballot_signatures WHERE member_id = ?"
        " ORDER BY counter",
        (kim,),
    )
    assert [(r["receipt"], r["counter"], r["key"]) for r in rows] == [
        (first, 1, key),
        (second, 2, key),
    ]
    # the signature the browser made verifies with the one rule node and auditor share
    view = await node.services.proposals.get(pid)
    signed = decode_signed_ballot(
        {
            "proposal": view.object_id,
            "member": kim,
            "counter": 2,
            "ballot": {"choice": "roses"},
            "key": key,
            "signature": rows[1]["signature"],
        }
    )
    verify_member_ballot(signed, proposal=view.object_id or "", member=kim, member_keys={key})
    # a second member without JavaScript votes custodially; the results say how many of each
    await node.services.proposals.cast(
        (await node.services.members.add("Lee")).member, pid, {"choice": "beans"}
    )
    await node.services.proposals.close(None, pid)
    await page.goto(node.at(f"/proposals/{pid}/results"))
    assert await page.inner_text("#member-signed") == "1"
    assert await page.inner_text("#custodial") == "1"


async def test_revoked_key_is_refused_and_a_new_device_key_signs(
    context: BrowserContext, node: LiveNode
) -> None:
    page = await member_page(context, node, "Ravi")
    old = await device_key(page, node)
    pid = await open_proposal(node, "Bikes", "choice", ["racks", "lanes"])
    await page.goto(node.at(f"/proposals/{pid}"))
    await page.get_by_text("will be signed with this device's key").wait_for()
    # the key is revoked (as from a lost device) while this page still holds it
    ravi = await member_id(node, "Ravi")
    keys = await keys_of(node, ravi)
    assert [k.key for k in keys] == [old]
    other = await context.new_page()
    await other.goto(node.at("/account/keys"))
    await other.get_by_role("button", name="Revoke").click()
    await other.wait_for_url(re.compile(r"/account/keys$"))
    await page.get_by_label("racks", exact=True).check()
    await page.get_by_role("button", name="Send my vote").click()
    await page.get_by_text("not a registered key").wait_for()
    assert "revoked" in await page.inner_text("main")
    count = await node.services.db.fetchone(
        "SELECT COUNT(*) AS n FROM ballots WHERE proposal_id = ?", (pid,)
    )
    assert count is not None and count["n"] == 0
    # the keys page made and registered a new key for this device after the revocation
    new = await device_key(other, node)
    assert new != old
    listed = await keys_of(node, ravi)
    assert [(k.key, k.revoked_seq is not None) for k in listed] == [(old, True), (new, False)]
    await vote(page, node, pid, "lanes")
    row = await node.services.db.fetchone(
        "SELECT key FROM ballot_signatures WHERE member_id = ?", (ravi,)
    )
    assert row is not None and row["key"] == new


async def test_a_ballot_edited_in_the_sqlite_file_is_caught_by_the_audit(
    context: BrowserContext, node: LiveNode
) -> None:
    page = await member_page(context, node, "Ada")
    await device_key(page, node)
    ada = await member_id(node, "Ada")
    pid = await open_proposal(node, "Lights", "choice", ["solar", "grid"])
    receipt = await vote(page, node, pid, "solar")
    view = await node.services.proposals.get(pid)
    # the operator rewrites Ada's ballot in the database file before the count, and
    # recomputes its receipt from the stored nonce so the tally is self-consistent
    with sqlite3.connect(node.services.config.database_path) as conn:
        (nonce,) = conn.execute(
            "SELECT nonce FROM ballots WHERE receipt = ?", (receipt,)
        ).fetchone()
        forged = ballots.ballot_receipt(
            view.object_id or "", ballots.ChoiceBallot(choice="grid"), bytes.fromhex(nonce)
        )
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(
            "UPDATE ballots SET ballot = ?, receipt = ? WHERE receipt = ?",
            ('{"choice":"grid"}', forged, receipt),
        )
        conn.execute(
            "UPDATE ballot_signatures SET receipt = ? WHERE receipt = ?", (forged, receipt)
        )
    await node.services.proposals.close(None, pid)
    records = await bundle_records(node.services)
    mine = [r for r in records if isinstance(r, BallotRecord) and r.member == ada]
    assert [(r.ballot, r.signature is not None) for r in mine] == [({"choice": "grid"}, True)]
    report = audit_bundle(records)
    bad = [f for f in report.findings if f.what == "bad_member_signature"]
    assert len(bad) == 1 and ada in bad[0].why and forged in bad[0].why
    assert bad[0].actor == node.services.identity.actor
    assert msgspec.to_builtins(report.findings) == msgspec.to_builtins(tuple(bad))
