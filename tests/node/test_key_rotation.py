"""Key rotation on a node: `convene key rotate` on a stopped node, `POST /api/keys/rotate`
on a running one; the chain, the actor document and the key files agree afterwards."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
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

from federation.client import FederationClient
from federation.crawl import fetch_chain
from node.bootstrap import identity_of
from node.config import load_config
from node.identity import IdentityError
from node.services import NodeServices, build_services
from protocol import chain, proofs
from protocol.errors import ChainError, ProofError
from protocol.keys import SigningKey

SEED = Path("keys") / "ed25519.seed"
RSA = Path("keys") / "rsa.pem"


def entries_of(data: Path) -> list[dict[str, Any]]:
    return [json.loads(r[0]) for r in read_db(data, "SELECT entry FROM chain_entries ORDER BY seq")]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "node"
    init_node(folder, free_port(), kind="region")
    return folder


def test_rotate_twice_the_chain_names_every_key(data: Path) -> None:
    first = cli_json("key", "show", "--data", str(data))
    rsa_before = (data / RSA).read_bytes()
    one = cli_json("key", "rotate", "--data", str(data))
    assert (data / RSA).read_bytes() == rsa_before  # no --rsa: the RSA key stays
    two = cli_json("key", "rotate", "--rsa", "--data", str(data))
    assert (data / RSA).read_bytes() != rsa_before
    actor = first["actor"]

    assert (one["seq"], one["retired_key_id"], one["key_id"]) == (
        1,
        f"{actor}#ed25519-0",
        f"{actor}#ed25519-1",
    )
    assert (two["seq"], two["retired_key_id"], two["key_id"]) == (
        2,
        f"{actor}#ed25519-1",
        f"{actor}#ed25519-2",
    )
    assert two["rsa_rotated"] and not one["rsa_rotated"]
    assert (
        len({first["publicKeyMultibase"], one["publicKeyMultibase"], two["publicKeyMultibase"]})
        == 3
    )

    state = chain.verify_chain(entries_of(data))
    assert state.key.multibase == two["publicKeyMultibase"]
    assert [(s.key_id, s.from_seq, s.to_seq) for s in state.keys] == [
        (f"{actor}#ed25519-0", 0, 1),
        (f"{actor}#ed25519-1", 2, 2),
        (f"{actor}#ed25519-2", 3, None),
    ]
    # the rotation is signed by the key it retires
    rotation = entries_of(data)[1]
    assert rotation["type"] == "KeyRotation"
    assert rotation["proof"]["verificationMethod"] == f"{actor}#ed25519-0"
    # the secret on disk is the new key, 0600, and no staged file is left behind
    assert (
        SigningKey.from_seed((data / SEED).read_bytes()).verify_key.multibase
        == (two["publicKeyMultibase"])
    )
    assert sorted(p.name for p in (data / "keys").iterdir()) == ["ed25519.seed", "rsa.pem"]
    assert (data / SEED).stat().st_mode & 0o777 == 0o600
    assert cli_json("key", "show", "--data", str(data))["key_id"] == f"{actor}#ed25519-2"


def test_new_entries_verify_only_with_the_new_key_and_retired_key_entries_fail(
    data: Path,
) -> None:
    old = SigningKey.from_seed((data / SEED).read_bytes())
    cli_json("key", "rotate", "--data", str(data))
    add_member(data, "Noor", "member")  # a RosterChange entry after the rotation
    entries = entries_of(data)
    new = SigningKey.from_seed((data / SEED).read_bytes())
    latest = entries[-1]
    assert latest["type"] == "RosterChange"
    proofs.verify_proof(latest, new.verify_key)
    with pytest.raises(ProofError):
        proofs.verify_proof(latest, old.verify_key)

    # An entry made with the retired key (say, by whoever stole it) is refused by name.
    actor, seq = latest["actor"], latest["seq"] + 1
    forged = chain.make_entry(
        {"type": "RosterChange", "operation": "add", "member": "m-forged", "role": "admin"},
        actor=actor,
        seq=seq,
        prev=chain.entry_digest(latest),
        key=old,
        key_id=chain.key_id(actor, 0),
        published="2026-11-26T15:00:00Z",
    )
    with pytest.raises(ChainError) as caught:
        chain.verify_chain([*entries, forged])
    assert (caught.value.code, caught.value.actor, caught.value.seq) == ("retired_key", actor, seq)
    # ... and claiming the new key's id does not help: the proof does not verify.
    pretender = {**forged}
    pretender.pop("proof")
    pretender = proofs.create_proof(
        pretender, old, verification_method=chain.key_id(actor, 1), created=forged["published"]
    )
    with pytest.raises(ChainError) as caught:
        chain.verify_chain([*entries, pretender])
    assert caught.value.code == "bad_proof" and caught.value.seq == seq


def test_rotation_survives_restart_and_an_interrupted_rename_is_finished(data: Path) -> None:
    old_seed = (data / SEED).read_bytes()
    done = cli_json("key", "rotate", "--data", str(data))
    new_seed = (data / SEED).read_bytes()
    # The state a crash between the commit and the rename leaves: the chain names the
    # new key, the new secret is still staged beside the old one.
    (data / SEED).write_bytes(old_seed)
    (data / "keys" / "ed25519.seed.new").write_bytes(new_seed)
    os.chmod(data / "keys" / "ed25519.seed.new", 0o600)
    shown = cli_json("key", "show", "--data", str(data))
    assert shown["key_id"] == done["key_id"]
    assert (data / SEED).read_bytes() == new_seed
    assert not (data / "keys" / "ed25519.seed.new").exists()
    add_member(data, "After Restart", "member")
    chain.verify_chain(entries_of(data))


def test_an_uncommitted_staged_key_is_ignored_and_a_foreign_seed_refused(data: Path) -> None:
    before = cli_json("key", "show", "--data", str(data))
    stray = data / "keys" / "ed25519.seed.new"
    stray.write_bytes(secrets.token_bytes(32))  # a rotation that crashed before commit
    assert cli_json("key", "show", "--data", str(data)) == before
    assert stray.exists()
    done = cli_json("key", "rotate", "--data", str(data))  # replaces the stray file
    assert not stray.exists()
    chain.verify_chain(entries_of(data))

    (data / SEED).write_bytes(secrets.token_bytes(32))  # keys that are not this chain's
    with pytest.raises(IdentityError) as caught:
        identity_of(data)
    assert f"seq {done['seq']}" in caught.value.detail
    assert done["publicKeyMultibase"] in caught.value.detail
    out = run_cli("key", "show", "--data", str(data), "--json", check=False)
    assert out.returncode == 1 and json.loads(out.stderr)["error"] == "identity"


def test_rotate_without_a_node_says_to_run_init(tmp_path: Path) -> None:
    out = run_cli("key", "rotate", "--data", str(tmp_path / "missing"), "--json", check=False)
    assert out.returncode == 1
    error = json.loads(out.stderr)
    assert error["error"] == "storage" and "convene init" in error["detail"]
    assert not (tmp_path / "missing").exists()  # nothing was made


@pytest.fixture
async def opened(data: Path) -> AsyncIterator[NodeServices]:
    services = build_services(load_config(data))
    await services.db.open()
    try:
        yield services
    finally:
        await services.db.close()


async def test_a_node_refuses_to_sign_after_another_process_rotated(
    data: Path, opened: NodeServices
) -> None:
    await opened.members.add("Before", "member")  # signs with key 0: fine
    rotated = json.loads(run_cli("key", "rotate", "--data", str(data), "--json").stdout)
    with pytest.raises(IdentityError) as caught:
        await opened.members.add("After", "member")
    assert f"rotated at seq {rotated['seq']}" in caught.value.detail
    chain.verify_chain(entries_of(data))  # nothing was signed by the retired key
    assert [r[0] for r in read_db(data, "SELECT name FROM members")] == ["Before"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_running_node_rotates_through_the_api(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    data = tmp_path / "chapter"
    init_node(data, port)
    admin = add_member(data, "Ada", "admin")["token"]
    organizer = add_member(data, "Olu", "organizer")["token"]
    node = NodeProcess(data=data, port=port, log_path=tmp_path / "node.log")
    node.start()
    client = FederationClient(signer=None, allow_private_network=True)
    try:
        url, rotate = node.url, f"{node.url}/api/keys/rotate"
        assert (await call(http, "POST", rotate))[0] == 401
        status, body = await call(http, "POST", rotate, organizer, {"rsa": True})
        assert (status, body["error"]) == (403, "forbidden")
        for raw in (b"{not json", b'{"rsa": "yes"}', b'{"rsa": true, "force": 1}', b"[]"):
            status, body = await call(http, "POST", rotate, admin, raw=raw)
            assert (status, body["error"]) == (400, "bad_request"), raw
        assert len(entries_of(data)) == 3  # genesis and two members: nothing was rotated

        document, _ = await fetch_chain(client, f"{url}/actor")
        old_pem = document["publicKey"]["publicKeyPem"]
        status, done = await call(http, "POST", rotate, admin, {"rsa": True})
        assert status == 200, done
        assert done["key_id"] == f"{url}/actor#ed25519-3" and done["rsa_rotated"]

        # The served actor document shows the chain's latest key, and the new RSA key.
        document, entries = await fetch_chain(client, f"{url}/actor")
        state = chain.verify_chain(entries)
        (method,) = document["assertionMethod"]
        assert (method["id"], method["publicKeyMultibase"]) == (state.key_id, state.key.multibase)
        assert state.key.multibase == done["publicKeyMultibase"]
        assert document["publicKey"]["publicKeyPem"] == done["rsa_public_pem"] != old_pem

        # The next entry the running node signs uses the new key.
        status, proposal = await call(
            http,
            "POST",
            f"{url}/api/proposals",
            organizer,
            {"title": "After", "body": "b", "method": "choice", "options": ["a", "b"]},
        )
        assert status == 201, proposal
        _, entries = await fetch_chain(client, f"{url}/actor")
        assert entries[-1]["proof"]["verificationMethod"] == done["key_id"]
        assert chain.verify_chain(entries).next_seq == 5
        status, shown = await call(http, "GET", f"{url}/api/keys", admin)
        assert (status, shown["key_id"]) == (200, done["key_id"])
        assert (await call(http, "GET", f"{url}/api/keys", organizer))[0] == 403

        node.stop()  # after a restart the node still signs with the new key
        node.start()
        document, entries = await fetch_chain(client, f"{url}/actor")
        assert document["assertionMethod"][0]["id"] == done["key_id"]
        assert document["publicKey"]["publicKeyPem"] == done["rsa_public_pem"]
        status, _ = await call(
            http,
            "POST",
            f"{url}/api/proposals",
            organizer,
            {"title": "Later", "body": "b", "method": "choice", "options": ["a", "b"]},
        )
        assert status == 201
        _, entries = await fetch_chain(client, f"{url}/actor")
        assert chain.verify_chain(entries).key_id == done["key_id"]
        assert entries[-1]["proof"]["verificationMethod"] == done["key_id"]
    finally:
        await client.close()
        node.stop()


DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_protocol_md_rotation_example_is_what_the_code_builds() -> None:
    """docs/protocol.md §5.4 continues §5.3: rebuild it and check the printed values."""
    text = DOCS.read_text()
    start = text.index("### 5.4 Key rotation in practice")
    section = text[start : text.index("## 6.", start)]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    old, new = SigningKey.from_seed(b"\x01" * 32), SigningKey.from_seed(b"\x02" * 32)
    actor = "https://north.example/actor"
    first = chain.genesis(actor, "North Chapter", "chapter", old, "2026-11-26T14:00:00Z")
    roster = chain.make_entry(
        {"type": "RosterChange", "operation": "add", "member": "m-1", "role": "organizer"},
        actor=actor,
        seq=1,
        prev=chain.entry_digest(first),
        key=old,
        key_id=chain.key_id(actor, 0),
        published="2026-11-26T14:05:00Z",
    )
    built = chain.rotation(
        actor,
        2,
        chain.entry_digest(roster),
        old,
        chain.key_id(actor, 0),
        new.verify_key,
        "2026-11-26T14:10:00Z",
    )
    assert shown == built
    assert f"Its digest is `{chain.entry_digest(built)}`" in section
    late = chain.make_entry(
        {"type": "RosterChange", "operation": "add", "member": "m-2", "role": "admin"},
        actor=actor,
        seq=3,
        prev=chain.entry_digest(built),
        key=old,
        key_id=chain.key_id(actor, 0),
        published="2026-11-26T14:15:00Z",
    )
    with pytest.raises(ChainError) as caught:
        chain.verify_chain([first, roster, built, late])
    assert " ".join(caught.value.describe().split()) in " ".join(section.split())
    # a flipped byte in the shown proof no longer verifies
    tampered = {
        **shown,
        "proof": {**shown["proof"], "proofValue": shown["proof"]["proofValue"][:-1] + "3"},
    }
    with pytest.raises(ChainError) as caught:
        chain.verify_chain([first, roster, tampered])
    assert caught.value.code == "bad_proof" and caught.value.seq == 2
