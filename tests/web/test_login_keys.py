"""A member's browser makes its ballot key right after the first login, in a real
Chromium against a real node (real SQLite file): no ballot page is visited, yet the
key is a `RosterChange` `key` entry on the node's chain (docs/protocol.md §5.5)."""

from __future__ import annotations

import json
import sqlite3

import pytest
from livenode import PASS, LiveNode, use_link
from playwright.async_api import BrowserContext

pytestmark = pytest.mark.asyncio(loop_scope="session")


def key_entries(node: LiveNode, member: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(node.data_dir / "convene.sqlite3")
    try:
        rows = conn.execute("SELECT entry FROM chain_entries ORDER BY seq").fetchall()
    finally:
        conn.close()
    entries = [json.loads(entry) for (entry,) in rows]
    return [
        e
        for e in entries
        if e.get("type") == "RosterChange"
        and e.get("operation") == "key"
        and e.get("member") == member
    ]


async def test_first_login_and_passphrase_register_the_devices_key(
    context: BrowserContext, node: LiveNode
) -> None:
    added = await node.services.members.add("Lee", "member")
    lee = added.member.id
    page = await context.new_page()
    visited: list[str] = []
    page.on("framenavigated", lambda frame: visited.append(frame.url))
    await use_link(page, added.login_url, passphrase=PASS)  # the home page says it is saved
    # the home page's script makes the key, registers it and reloads showing it
    await page.locator("[data-member-keys][data-device-key]").wait_for()
    key = await page.get_attribute("[data-member-keys]", "data-device-key")
    (entry,) = key_entries(node, lee)
    assert entry["memberKey"] == key
    assert not any("/proposals/" in url for url in visited), visited
    # signed in, the nav leads to the keys page, which shows this device's key
    await page.get_by_role("link", name="My keys").click()
    await page.locator("[data-member-keys][data-device-key]").wait_for()
    assert await page.get_attribute("[data-member-keys]", "data-device-key") == key
    # later visits make no second key; the plain home page leaves keys alone
    await page.goto(node.at("/"))
    assert await page.locator("[data-member-keys]").count() == 0
    await page.goto(node.at("/account/keys"))
    await page.locator("[data-member-keys][data-device-key]").wait_for()
    assert len(key_entries(node, lee)) == 1


async def test_skipping_the_passphrase_still_registers_the_devices_key(
    context: BrowserContext, node: LiveNode
) -> None:
    added = await node.services.members.add("Sam", "member")
    page = await context.new_page()
    await use_link(page, added.login_url, passphrase=None)
    await page.get_by_role("link", name="Skip for now").click()
    await page.locator("[data-member-keys][data-device-key]").wait_for()
    key = await page.get_attribute("[data-member-keys]", "data-device-key")
    assert [e["memberKey"] for e in key_entries(node, added.member.id)] == [key]


async def test_a_visitor_has_no_keys_link(context: BrowserContext, node: LiveNode) -> None:
    page = await context.new_page()
    await page.goto(node.at("/"))
    assert await page.get_by_role("link", name="My keys").count() == 0
    assert await page.locator("[data-member-keys]").count() == 0
