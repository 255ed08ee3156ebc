"""Discovery documents as values: NodeInfo against its published schema, WebFinger
resources as a property, lenient-then-validated remote actors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fedkit import make_actor
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.documents import (
    DocumentError,
    actor_document,
    nodeinfo_document,
    parse_acct,
    parse_actor,
    webfinger_document,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "nodeinfo"
SCHEMA = json.loads((VECTORS / "schema-2.1.json").read_text())
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
}


def schema_errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """The draft-04 keywords the NodeInfo schema uses, checked strictly."""
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, TYPES[kind]) and not (kind == "integer" and isinstance(value, bool))
        if not ok:
            return [f"{where}: not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in enum")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: below minimum")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: too few items")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{where}: {k} missing" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                errors += schema_errors(item, props[key], f"{where}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{where}: {key} not allowed")
    return errors


ACTOR = make_actor("https://riverside.example")


def test_nodeinfo_is_valid_against_the_published_schema() -> None:
    assert schema_errors(nodeinfo_document(ACTOR, members=4, entries=9), SCHEMA) == []


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("software", "name"), "Convene"),  # one byte flipped to uppercase
        (("protocols",), ["activitypub", "ActivityPub"]),
        (("usage", "users", "total"), -1),
        (("version",), "2.0"),
        (("openRegistrations",), "false"),
    ],
)
def test_tampered_nodeinfo_fails_the_schema(path: tuple[str, ...], bad: Any) -> None:
    document = nodeinfo_document(ACTOR, members=4, entries=9)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    assert schema_errors(document, SCHEMA) != []


def test_extra_fields_fail_the_schema() -> None:
    document = nodeinfo_document(ACTOR, members=4, entries=9)
    document["software"]["license"] = "AGPL"
    assert schema_errors(document, SCHEMA) == ["$.software: license not allowed"]


USERS = st.from_regex(r"[a-z0-9_]{1,30}", fullmatch=True)
LABELS = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
HOSTS = st.builds(
    lambda labels, port: ".".join(labels) + (f":{port}" if port else ""),
    st.lists(LABELS, min_size=1, max_size=4),
    st.none() | st.integers(1, 65535),
)


@settings(max_examples=200)
@given(USERS, HOSTS, st.sampled_from(["acct:", "", "@"]))
def test_acct_resources_round_trip(user: str, host: str, prefix: str) -> None:
    assert parse_acct(f"{prefix}{user}@{host}") == (user, host)


@settings(max_examples=50)
@given(USERS, HOSTS)
def test_webfinger_answers_only_for_its_own_handle(user: str, host: str) -> None:
    actor = make_actor(f"https://{host}", username=user)
    jrd = webfinger_document(actor, f"acct:{user.upper()}@{host.upper()}")
    assert jrd["subject"] == f"acct:{user}@{host}"
    with pytest.raises(DocumentError) as info:
        webfinger_document(actor, f"acct:{user}x@{host}")
    assert info.value.status == 404


@pytest.mark.parametrize(
    "resource", ["", "acct:", "acct:@host", "acct:user@", "a@b@c", "acct:u@h/x"]
)
def test_malformed_resources(resource: str) -> None:
    with pytest.raises(DocumentError) as info:
        parse_acct(resource)
    assert info.value.code == "bad_resource" and info.value.status == 400


def test_remote_actor_keeps_unknown_fields_and_accepts_a_single_key() -> None:
    document = actor_document(ACTOR)
    document["assertionMethod"] = document["assertionMethod"][0]  # one value, no list
    document["vcard:Address"] = {"locality": "Riverside"}
    parsed = parse_actor(document, expected_id=ACTOR.id)
    assert parsed.document["vcard:Address"] == {"locality": "Riverside"}
    assert parsed.assertion_key(ACTOR.assertion_key.id) == ACTOR.assertion_key


def test_remote_actor_with_a_key_controlled_by_someone_else_is_refused() -> None:
    document = actor_document(ACTOR)
    document["assertionMethod"][0]["controller"] = "https://mallory.example/actor"
    with pytest.raises(DocumentError) as info:
        parse_actor(document, expected_id=ACTOR.id)
    assert ACTOR.assertion_key.id in info.value.detail
