"""The bottom-up agenda of a regional convening (docs/protocol.md §10.4).

Theory of operation
-------------------
"Nothing should be off the table": any listed chapter can put an item on the regional
agenda, and the host cannot quietly drop it, because the agenda is a pure function of
signed entries that every chapter and every auditor computes the same way:

- the region signs an ``AgendaConfig``: the convening, the chapters that take part,
  and how much co-sponsorship puts an item on the agenda (``min_sponsors`` chapters
  *and* ``min_share`` of the listed chapters, whichever asks more);
- a chapter signs an ``AgendaSubmission`` addressed to the region and that config;
  the item's id is the submission entry's digest, and the submitting chapter is its
  first sponsor;
- any other listed chapter signs an ``AgendaSponsorship`` naming the item;
- the region's ``Question`` entries that put an item to a vote carry
  ``agenda_item`` = the item's id;
- the region signs an ``AgendaClose`` naming the config's digest: the signed moment
  the agenda closes. Whether a valid close is held is what ``closed`` means below
  (``closed_by``), so no node decides on its own clock that an item was dropped.

``compute_agenda`` takes them as a set: identical copies count once, a chapter
sponsoring an item twice counts once, and no order of arrival changes the result.
An item's status follows the table ``TRANSITIONS``: ``submitted`` → ``qualified``
(sponsors reached the threshold) → ``voted``; a qualified item not put to a vote
by the time the agenda is closed is ``dropped`` — flagged, for everyone to see.
Entries are assumed chain-verified (§5.2) by the caller; their fields are checked here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.ballots import parse_fraction
from protocol.errors import BallotError
from protocol.events import ConveningError, Source, read_body, source

__all__ = [
    "CLOSE_TYPE",
    "CONFIG_TYPE",
    "SPONSORSHIP_TYPE",
    "SUBMISSION_TYPE",
    "TRANSITIONS",
    "Agenda",
    "AgendaClose",
    "AgendaConfig",
    "AgendaItem",
    "Sponsorship",
    "Submission",
    "before_close",
    "close_body",
    "closed_by",
    "compute_agenda",
    "config_body",
    "items_voted",
    "needed_sponsors",
    "parse_close",
    "parse_config",
    "parse_sponsorship",
    "parse_submission",
    "sponsorship_body",
    "submission_body",
]

CONFIG_TYPE: Final = "AgendaConfig"
SUBMISSION_TYPE: Final = "AgendaSubmission"
SPONSORSHIP_TYPE: Final = "AgendaSponsorship"
CLOSE_TYPE: Final = "AgendaClose"
Status = Literal["submitted", "qualified", "voted", "dropped"]
Event = Literal["sponsored", "put_to_vote", "agenda_closed"]

# (status, event) -> next status; a pair not listed leaves the status as it is.
TRANSITIONS: Final[Mapping[tuple[Status, Event], Status]] = {
    ("submitted", "sponsored"): "qualified",
    ("submitted", "put_to_vote"): "voted",  # the region may always put an item to a vote
    ("qualified", "put_to_vote"): "voted",
    ("qualified", "agenda_closed"): "dropped",
}

Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
Summary = Annotated[str, msgspec.Meta(max_length=20_000)]


class AgendaConfig(msgspec.Struct, frozen=True):
    convening: Text
    chapters: tuple[Text, ...]
    min_sponsors: Annotated[int, msgspec.Meta(ge=1)] = 1
    min_share: str = "0/1"


class Submission(msgspec.Struct, frozen=True):
    region: Text
    config: Hex64
    title: Text
    summary: Summary = ""


class Sponsorship(msgspec.Struct, frozen=True):
    region: Text
    config: Hex64
    item: Hex64


class AgendaClose(msgspec.Struct, frozen=True):
    config: Hex64


class AgendaItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    item: str  # the submission entry's digest
    chapter: str
    seq: int
    title: str
    summary: str
    sponsors: tuple[str, ...]  # chapters, sorted; the submitter included
    status: Status


class Agenda(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Items ordered by sponsors (more first), then by item id; ``needed`` is the
    number of sponsoring chapters that qualifies an item."""

    config: str
    region: str
    needed: int
    closed: bool
    items: tuple[AgendaItem, ...]

    @property
    def dropped(self) -> tuple[AgendaItem, ...]:
        return tuple(i for i in self.items if i.status == "dropped")


def _built(body: dict[str, Any], shape: type[Any]) -> Any:
    """Refuse to build a body its own parser would refuse."""
    try:
        return msgspec.convert({k: v for k, v in body.items() if k != "type"}, shape, strict=True)
    except msgspec.ValidationError as exc:
        raise ConveningError(f"{body['type']} is malformed: {exc}") from None


def config_body(
    convening: str, chapters: Iterable[str], *, min_sponsors: int = 1, min_share: str = "0/1"
) -> dict[str, Any]:
    body = {
        "type": CONFIG_TYPE,
        "convening": convening,
        "chapters": list(chapters),
        "min_sponsors": min_sponsors,
        "min_share": min_share,
    }
    _check_config(_built(body, AgendaConfig), None)
    return body


def _check_config(cfg: AgendaConfig, src: Source | None) -> None:
    actor, seq = (src.actor, src.seq) if src else (None, None)
    try:
        parse_fraction(cfg.min_share, "min_share")
    except BallotError as exc:
        raise ConveningError(exc.detail, actor=actor, seq=seq) from None
    if not cfg.chapters or len(set(cfg.chapters)) != len(cfg.chapters):
        raise ConveningError(
            "chapters must list at least one chapter, none twice", actor=actor, seq=seq
        )


def parse_config(entry: Mapping[str, Any]) -> tuple[Source, AgendaConfig]:
    src, cfg = read_body(entry, AgendaConfig, CONFIG_TYPE)
    _check_config(cfg, src)
    return src, cfg


def needed_sponsors(cfg: AgendaConfig) -> int:
    """Sponsoring chapters an item needs: the larger of the count and the share."""
    share = parse_fraction(cfg.min_share, "min_share")
    return max(cfg.min_sponsors, math.ceil(share * len(cfg.chapters)))


def submission_body(region: str, config: str, title: str, summary: str = "") -> dict[str, Any]:
    body = {"type": SUBMISSION_TYPE, "region": region, "config": config, "title": title}
    body["summary"] = summary
    _built(body, Submission)
    return body


def sponsorship_body(region: str, config: str, item: str) -> dict[str, Any]:
    body = {"type": SPONSORSHIP_TYPE, "region": region, "config": config, "item": item}
    _built(body, Sponsorship)
    return body


def _addressed(src: Source, region: str, config: str, cfg_src: Source, cfg: AgendaConfig) -> None:
    if region != cfg_src.actor or config != cfg_src.digest:
        raise ConveningError(
            f"addressed to {region!r:.200} config {config[:12]}…, not this agenda "
            f"({cfg_src.actor} config {cfg_src.digest[:12]}…)",
            actor=src.actor,
            seq=src.seq,
        )
    if src.actor not in cfg.chapters:
        raise ConveningError(
            "this chapter does not take part in the convening", actor=src.actor, seq=src.seq
        )


def parse_submission(config: Mapping[str, Any], entry: Mapping[str, Any]) -> Submission:
    """Decode a submission and check it is addressed to this config by a listed chapter
    (what an inbox checks before storing it)."""
    cfg_src, cfg = parse_config(config)
    src, sub = read_body(entry, Submission, SUBMISSION_TYPE)
    _addressed(src, sub.region, sub.config, cfg_src, cfg)
    result: Submission = sub
    return result


def parse_sponsorship(config: Mapping[str, Any], entry: Mapping[str, Any]) -> Sponsorship:
    """Decode a sponsorship and check it is addressed to this config by a listed chapter."""
    cfg_src, cfg = parse_config(config)
    src, sp = read_body(entry, Sponsorship, SPONSORSHIP_TYPE)
    _addressed(src, sp.region, sp.config, cfg_src, cfg)
    result: Sponsorship = sp
    return result


def close_body(config: str) -> dict[str, Any]:
    body = {"type": CLOSE_TYPE, "config": config}
    _built(body, AgendaClose)
    return body


def parse_close(config: Mapping[str, Any], entry: Mapping[str, Any]) -> AgendaClose:
    """Decode a close and check it names this config and is signed by the config's
    author: only the region that opened an agenda closes it."""
    cfg_src, _ = parse_config(config)
    src, close = read_body(entry, AgendaClose, CLOSE_TYPE)
    if close.config != cfg_src.digest:
        raise ConveningError(
            f"closes config {close.config[:12]}…, not {cfg_src.digest[:12]}…",
            actor=src.actor,
            seq=src.seq,
        )
    if src.actor != cfg_src.actor:
        raise ConveningError(
            f"only {cfg_src.actor}, which opened this agenda, closes it",
            actor=src.actor,
            seq=src.seq,
        )
    result: AgendaClose = close
    return result


def closed_by(config: Mapping[str, Any], closes: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the agenda is closed: some entry in ``closes`` is a valid close of it.
    Raises ConveningError for an entry that is not (a caller holds only checked ones)."""
    found = False
    for entry in closes:
        parse_close(config, entry)
        found = True
    return found


def before_close(
    submissions: Iterable[Mapping[str, Any]],
    sponsorships: Iterable[Mapping[str, Any]],
    closes: Iterable[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """The submissions and sponsorships that count once the agenda is closed: those
    ``published`` no later than the (earliest) close, and a sponsorship only of an item
    that counts. An item signed after the close could not have been put to a vote, so it
    is never ``dropped``. Every ``published`` is signed (§5.1) and in §1's one form, so
    comparing the strings compares the times and every node cuts at the same place.
    With no close, everything counts."""
    cut = min((str(c.get("published", "")) for c in closes), default=None)
    subs = [e for e in submissions if cut is None or str(e.get("published", "")) <= cut]
    kept = {source(e).digest for e in subs}
    sps = [
        e
        for e in sponsorships
        if (cut is None or str(e.get("published", "")) <= cut) and e.get("item") in kept
    ]
    return subs, sps


def items_voted(region: str, questions: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The agenda items the region put to a vote: ``agenda_item`` of its Question entries."""
    voted = set()
    for q in questions:
        src = source(q)
        item = q.get("agenda_item")
        if src.actor != region or q.get("type") != "Question" or item is None:
            continue
        if not isinstance(item, str):
            raise ConveningError("agenda_item must be a string", actor=src.actor, seq=src.seq)
        voted.add(item)
    return frozenset(voted)


def compute_agenda(
    config: Mapping[str, Any],
    submissions: Iterable[Mapping[str, Any]],
    sponsorships: Iterable[Mapping[str, Any]],
    votes_held: Iterable[str],
    *,
    closed: bool = True,
) -> Agenda:
    """The agenda from the signed entries, whatever their order.

    ``votes_held``: item ids the region put to a vote (see ``items_voted``). With
    ``closed`` False (the convening still under way) a qualified item not yet voted
    stays ``qualified``; when closed it is ``dropped``. Raises ConveningError, naming
    the entry's actor and seq, for a malformed or misaddressed entry, a chapter not
    taking part, or a sponsorship of an item nobody submitted.
    """
    cfg_src, cfg = parse_config(config)
    items: dict[str, tuple[Source, Submission]] = {}
    for entry in submissions:
        src, sub = read_body(entry, Submission, SUBMISSION_TYPE)
        _addressed(src, sub.region, sub.config, cfg_src, cfg)
        items[src.digest] = (src, sub)
    sponsors: dict[str, set[str]] = {d: {src.actor} for d, (src, _) in items.items()}
    for entry in sponsorships:
        src, sp = read_body(entry, Sponsorship, SPONSORSHIP_TYPE)
        _addressed(src, sp.region, sp.config, cfg_src, cfg)
        if sp.item not in sponsors:
            raise ConveningError(
                f"sponsors item {sp.item[:12]}…, which no submission here is",
                actor=src.actor,
                seq=src.seq,
            )
        sponsors[sp.item].add(src.actor)
    voted = frozenset(votes_held)
    needed = needed_sponsors(cfg)
    out = []
    for digest_, (src, sub) in items.items():
        status: Status = "submitted"
        events: list[Event] = []
        if len(sponsors[digest_]) >= needed:
            events.append("sponsored")
        if digest_ in voted:
            events.append("put_to_vote")
        if closed:
            events.append("agenda_closed")
        for ev in events:
            status = TRANSITIONS.get((status, ev), status)
        out.append(
            AgendaItem(
                item=digest_,
                chapter=src.actor,
                seq=src.seq,
                title=sub.title,
                summary=sub.summary,
                sponsors=tuple(sorted(sponsors[digest_])),
                status=status,
            )
        )
    out.sort(key=lambda i: (-len(i.sponsors), i.item))
    return Agenda(
        config=cfg_src.digest, region=cfg_src.actor, needed=needed, closed=closed, items=tuple(out)
    )
