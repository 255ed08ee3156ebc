"""Members, roles and credentials through the Members service, on a real SQLite file."""

from __future__ import annotations

import pytest
from nodekit import FakeClock

from node.errors import BadRequest, NotFound, Unauthorized
from node.services import NodeServices
from protocol import chain, roster


async def test_roster_changes_are_chain_entries(services: NodeServices) -> None:
    members = services.members
    ada = (await members.add("Ada L.", "admin")).member
    bo = (await members.add("Bo K.")).member
    await members.set_role(bo.id, "organizer")
    await members.remove(ada.id)
    entries = await services.ledger.entries()
    chain.verify_chain(entries)
    changes = [(e["operation"], e["member"], e["role"]) for e in entries[1:]]
    assert changes == [
        ("add", ada.id, "admin"),
        ("add", bo.id, "member"),
        ("role", bo.id, "organizer"),
        ("remove", ada.id, "admin"),
    ]
    assert "Ada L." not in str(entries) and "Bo K." not in str(entries)  # names stay in the DB
    assert roster.roster_at(entries) == {bo.id: "organizer"}
    assert [m.id for m in await members.all()] == [bo.id]


async def test_bad_member_input(services: NodeServices) -> None:
    with pytest.raises(BadRequest, match="role"):
        await services.members.add("Cy", "king")
    with pytest.raises(BadRequest, match="name"):
        await services.members.add("   ")
    with pytest.raises(NotFound):
        await services.members.remove("m-nobody")
    assert len(await services.ledger.entries()) == 1  # nothing half written


async def test_tokens_authenticate_until_removal(services: NodeServices) -> None:
    new = await services.members.add("Di")
    assert (await services.members.authenticate(new.token)).id == new.member.id
    with pytest.raises(Unauthorized):
        await services.members.authenticate(new.token + "x")
    await services.members.remove(new.member.id)
    with pytest.raises(Unauthorized):
        await services.members.authenticate(new.token)


async def test_login_links_are_one_time_and_expire(
    services: NodeServices, clock: FakeClock
) -> None:
    new = await services.members.add("Eve")
    token = new.login_url.rsplit("/", 1)[1]
    session, cookie = await services.members.use_login_link(token)
    assert session.member.id == new.member.id
    assert (await services.members.session(cookie)).member.id == new.member.id
    with pytest.raises(Unauthorized, match="already used"):
        await services.members.use_login_link(token)

    late = (await services.members.login_link(new.member.id)).rsplit("/", 1)[1]
    clock.now += services.config.login_link_ttl_s + 1
    with pytest.raises(Unauthorized, match="expired"):
        await services.members.use_login_link(late)
    clock.now += services.config.session_ttl_s
    with pytest.raises(Unauthorized):
        await services.members.session(cookie)


async def test_passwords_are_argon2id(services: NodeServices) -> None:
    fay = (await services.members.add("Fay")).member
    await services.members.set_password(fay.id, "correct horse battery")
    row = await services.db.fetchone("SELECT password_hash FROM members WHERE id = ?", (fay.id,))
    assert row is not None and row[0].startswith("$argon2id$")
    assert (await services.members.check_password("Fay", "correct horse battery")).id == fay.id
    with pytest.raises(Unauthorized):
        await services.members.check_password("Fay", "wrong horse battery")
    with pytest.raises(BadRequest):
        await services.members.set_password(fay.id, "short")


async def test_wrong_passphrases_are_throttled_per_name(
    services: NodeServices, clock: FakeClock
) -> None:
    from node.login_throttle import TooManyAttempts

    fay = (await services.members.add("Fay")).member
    await services.members.set_password(fay.id, "correct horse battery")
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await services.members.check_password("Fay", "wrong horse battery")
    # The sixth try is refused before any hash is checked, even with the right one.
    with pytest.raises(TooManyAttempts, match="login link") as refused:
        await services.members.check_password("fay", "correct horse battery")
    assert refused.value.status == 429
    # Another name is not affected.
    gus = (await services.members.add("Gus")).member
    await services.members.set_password(gus.id, "another long passphrase")
    assert (await services.members.check_password("Gus", "another long passphrase")).id == gus.id
    # Once the oldest failure leaves the window, one more try is allowed; success clears.
    clock.now += 901
    assert (await services.members.check_password("Fay", "correct horse battery")).id == fay.id
    for _ in range(4):
        with pytest.raises(Unauthorized):
            await services.members.check_password("Fay", "nope nope nope")
    assert (await services.members.check_password("Fay", "correct horse battery")).id == fay.id


def test_throttle_forgets_the_least_recent_names_beyond_its_bound() -> None:
    from node.login_throttle import LoginThrottle, TooManyAttempts

    throttle = LoginThrottle(limit=1, window_s=60, max_names=3)
    for name in ("a", "b", "c", "d"):
        throttle.failed(name, 0.0)
    throttle.check("a", 1.0)  # forgotten: the bound keeps memory flat under a flood
    with pytest.raises(TooManyAttempts):
        throttle.check("d", 1.0)
