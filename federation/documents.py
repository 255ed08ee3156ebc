"""Discovery documents: the actor (a `Group`), WebFinger JRD and NodeInfo 2.1.

Theory of operation. Another server finds a node in three steps, each a plain
document built here from a ``LocalActor`` value (no I/O, no clock):

1. WebFinger (RFC 7033 §4): ``acct:USER@HOST`` → a JRD whose ``self`` link, of type
   ``application/activity+json``, is the actor id.
2. The actor document (ActivityPub §4.1) names inbox, outbox and followers, the RSA key
   Mastodon-family servers verify HTTP signatures with (``publicKey``, id
   ``{actor}#main-key``) and the chain's current Ed25519 key as a Multikey in
   ``assertionMethod`` (FEP-521a) that object proofs are checked against.
3. NodeInfo 2.1 (``/.well-known/nodeinfo`` → ``/nodeinfo/2.1``) says what software
   runs there.

Documents coming *from* other servers are decoded leniently (unknown fields kept
aside, as ActivityPub requires) and then validated: ``parse_actor`` checks that the
document is about the actor that was asked for and that every key belongs to it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from yarl import URL

from federation.errors import FederationError

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_V1 = "https://w3id.org/security/v1"
MULTIKEY_V1 = "https://w3id.org/security/multikey/v1"
DATA_INTEGRITY_V2 = "https://w3id.org/security/data-integrity/v2"
CONVENE_CONTEXT = "https://w3id.org/convene/v1"
ACTOR_CONTEXT = [AS_CONTEXT, SECURITY_V1, MULTIKEY_V1, CONVENE_CONTEXT]

NODEINFO_REL = "http://nodeinfo.diaspora.software/ns/schema/2.1"
NODEINFO_PROFILE = 'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
SOFTWARE_NAME = "convene"
SOFTWARE_VERSION = "0.1.0"
SOFTWARE_REPOSITORY = "https://w3id.org/convene"

ACTOR_TYPES = frozenset({"Group", "Person", "Service", "Application", "Organization"})


class DocumentError(FederationError):
    """A discovery document or WebFinger resource is malformed or names someone else."""

    code = "bad_document"
    status = 400


class AssertionKey(msgspec.Struct, frozen=True):
    """An Ed25519 key as a Multikey (id ``{actor}#ed25519-{k}``)."""

    id: str
    public_key_multibase: str


class LocalActor(msgspec.Struct, frozen=True):
    """What this node says about itself.

    ``id`` is the actor id (``{base_url}/actor``); the node's own endpoints (inbox,
    outbox, followers) hang off ``base_url``, which also answers with the actor
    document when asked for an AS2 media type.
    """

    id: str
    base_url: str
    username: str
    name: str
    kind: str  # "chapter" or "region"
    rsa_public_pem: str
    assertion_key: AssertionKey
    summary: str = ""
    manually_approves_followers: bool = False

    @property
    def host(self) -> str:
        """The WebFinger host: authority of the actor id (``host`` or ``host:port``)."""
        return URL(self.base_url).raw_authority

    def url(self, path: str) -> str:
        """A URL of this node's own (``{base_url}/outbox``)."""
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"

    @property
    def key_id(self) -> str:
        return f"{self.id}#main-key"

    @property
    def handle(self) -> str:
        return f"acct:{self.username}@{self.host}"


def actor_document(actor: LocalActor) -> dict[str, Any]:
    """The actor document, served at the actor id for both AS2 media types."""
    return {
        "@context": ACTOR_CONTEXT,
        "id": actor.id,
        "type": "Group",
        "preferredUsername": actor.username,
        "name": actor.name,
        "summary": actor.summary,
        "url": actor.base_url,
        "kind": actor.kind,
        "inbox": actor.url("inbox"),
        "outbox": actor.url("outbox"),
        "followers": actor.url("followers"),
        "endpoints": {"sharedInbox": actor.url("inbox")},
        "manuallyApprovesFollowers": actor.manually_approves_followers,
        "discoverable": True,
        "publicKey": {
            "id": actor.key_id,
            "owner": actor.id,
            "publicKeyPem": actor.rsa_public_pem,
        },
        "assertionMethod": [
            {
                "id": actor.assertion_key.id,
                "type": "Multikey",
                "controller": actor.id,
                "publicKeyMultibase": actor.assertion_key.public_key_multibase,
            }
        ],
    }


def parse_acct(resource: str) -> tuple[str, str]:
    """Split ``acct:USER@HOST`` (also ``USER@HOST`` or ``@USER@HOST``) into (user, host)."""
    text = resource.strip()
    if text.startswith("acct:"):
        text = text[len("acct:") :]
    text = text.removeprefix("@")
    user, sep, host = text.partition("@")
    if not sep or not user or not host or "@" in host or "/" in host or " " in text:
        raise DocumentError(
            f"WebFinger resource {resource!r} is not of the form acct:USER@HOST",
            code="bad_resource",
        )
    return user, host.lower()


def webfinger_document(actor: LocalActor, resource: str) -> dict[str, Any]:
    """The JRD for ``resource`` (an ``acct:`` URI or the actor id itself).

    Raises ``DocumentError`` with status 400 for a malformed resource and 404 when the
    resource names someone this node does not host.
    """
    if resource.rstrip("/") not in (actor.id.rstrip("/"), actor.base_url.rstrip("/")):
        user, host = parse_acct(resource)
        if user.lower() != actor.username.lower() or host != actor.host.lower():
            raise DocumentError(
                f"no actor {user}@{host} here (this node is {actor.handle})",
                code="not_found",
                status=404,
            )
    return {
        "subject": actor.handle,
        "aliases": [actor.id],
        "links": [
            {"rel": "self", "type": "application/activity+json", "href": actor.id},
            {
                "rel": "http://webfinger.net/rel/profile-page",
                "type": "text/html",
                "href": actor.base_url,
            },
        ],
    }


def nodeinfo_links(base_url: str) -> dict[str, Any]:
    """``/.well-known/nodeinfo``: where the NodeInfo 2.1 document is."""
    return {"links": [{"rel": NODEINFO_REL, "href": f"{base_url.rstrip('/')}/nodeinfo/2.1"}]}


def nodeinfo_document(actor: LocalActor, *, members: int, entries: int) -> dict[str, Any]:
    """NodeInfo 2.1; ``software.name`` is lowercase as the schema's pattern demands."""
    return {
        "version": "2.1",
        "software": {
            "name": SOFTWARE_NAME,
            "version": SOFTWARE_VERSION,
            "repository": SOFTWARE_REPOSITORY,
        },
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": False,
        "usage": {"users": {"total": members}, "localPosts": entries},
        "metadata": {"nodeName": actor.name, "kind": actor.kind, "actor": actor.id},
    }


# --- documents from other servers -------------------------------------------------


class _PublicKey(msgspec.Struct, rename="camel"):
    id: str
    owner: str
    public_key_pem: str


class _Multikey(msgspec.Struct, rename="camel"):
    id: str
    controller: str
    public_key_multibase: str
    type: str = "Multikey"


class _Endpoints(msgspec.Struct, rename="camel"):
    shared_inbox: str | None = None


class _ActorWire(msgspec.Struct, rename="camel"):
    """The fields we use; msgspec ignores the rest, so unknown extensions pass."""

    id: str
    type: str
    inbox: str
    outbox: str | None = None
    followers: str | None = None
    preferred_username: str | None = None
    name: str | None = None
    kind: str | None = None
    public_key: _PublicKey | None = None
    assertion_method: list[_Multikey | str] = []
    endpoints: _Endpoints | None = None
    manually_approves_followers: bool = False


class RemoteActor(msgspec.Struct, frozen=True):
    """A validated remote actor document (plus the raw document, kept verbatim)."""

    id: str
    type: str
    inbox: str
    outbox: str | None
    followers: str | None
    shared_inbox: str | None
    username: str | None
    name: str | None
    kind: str | None
    rsa_key_id: str | None
    rsa_public_pem: str | None
    assertion_keys: tuple[AssertionKey, ...]
    document: dict[str, Any]

    def assertion_key(self, key_id: str) -> AssertionKey | None:
        return next((k for k in self.assertion_keys if k.id == key_id), None)


def _origin(url: str) -> tuple[str, str]:
    parsed = URL(url)
    return (parsed.scheme, parsed.raw_authority.lower())


def parse_actor(document: Any, *, expected_id: str | None = None) -> RemoteActor:
    """Validate an actor document fetched from elsewhere.

    ``expected_id`` is the id the document was fetched for: a document claiming
    another id is refused (a server may only speak for its own actors).
    """
    if not isinstance(document, dict):
        raise DocumentError(f"actor document is JSON {type(document).__name__}, not an object")
    where = expected_id or document.get("id", "?")
    shaped = dict(document)
    if isinstance(shaped.get("assertionMethod"), dict | str):
        shaped["assertionMethod"] = [shaped["assertionMethod"]]  # JSON-LD: one value, no list
    try:
        wire = msgspec.convert(shaped, _ActorWire)
    except msgspec.ValidationError as exc:
        raise DocumentError(f"actor document {where} is malformed: {exc}") from exc
    if wire.type not in ACTOR_TYPES:
        raise DocumentError(f"{where} is a {wire.type!r}, not an actor")
    if expected_id is not None and wire.id.rstrip("/") != expected_id.rstrip("/"):
        raise DocumentError(f"document fetched from {expected_id} claims to be {wire.id}")
    origin = _origin(wire.id)
    rsa_key_id = rsa_pem = None
    if wire.public_key is not None:
        if wire.public_key.owner.rstrip("/") != wire.id.rstrip("/"):
            raise DocumentError(f"{where}: publicKey is owned by {wire.public_key.owner}")
        if _origin(wire.public_key.id) != origin:
            raise DocumentError(f"{where}: publicKey id {wire.public_key.id} is on another host")
        rsa_key_id, rsa_pem = wire.public_key.id, wire.public_key.public_key_pem
    keys = []
    for method in wire.assertion_method:
        if isinstance(method, str):
            continue  # a bare reference: no key material to use
        if method.type != "Multikey" or method.controller.rstrip("/") != wire.id.rstrip("/"):
            raise DocumentError(
                f"{where}: assertionMethod {method.id} is not this actor's Multikey"
            )
        keys.append(AssertionKey(id=method.id, public_key_multibase=method.public_key_multibase))
    return RemoteActor(
        id=wire.id,
        type=wire.type,
        inbox=wire.inbox,
        outbox=wire.outbox,
        followers=wire.followers,
        shared_inbox=wire.endpoints.shared_inbox if wire.endpoints else None,
        username=wire.preferred_username,
        name=wire.name,
        kind=wire.kind,
        rsa_key_id=rsa_key_id,
        rsa_public_pem=rsa_pem,
        assertion_keys=tuple(keys),
        document=document,
    )


def self_link(jrd: Any, resource: str) -> str:
    """The actor id from a WebFinger JRD: its ``self`` link of an AS2 type."""
    links = jrd.get("links") if isinstance(jrd, dict) else None
    if not isinstance(links, list):
        raise DocumentError(f"WebFinger answer for {resource} has no links")
    for link in links:
        if (
            isinstance(link, dict)
            and link.get("rel") == "self"
            and isinstance(link.get("href"), str)
            and str(link.get("type", "")).split(";")[0].strip()
            in ("application/activity+json", "application/ld+json")
        ):
            return str(link["href"])
    raise DocumentError(f"WebFinger answer for {resource} has no self link to an actor")
