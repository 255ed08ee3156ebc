"""Convenings as events, RSVPs and attendance counts (docs/protocol.md §10.1–10.2).

Theory of operation
-------------------
A convening is an ActivityStreams 2.0 ``Event`` (AS2 vocabulary §3.3) in the shape
Mobilizon federates: ``name``, ``startTime``, ``endTime``, a ``location`` (an AS2
``Place``) and/or an online link in ``url``, and a capacity in schema.org's
``maximumAttendeeCapacity``. Its body is one entry of the host's chain (§5), so it is
decoded strictly like every signed payload of ours.

Attendance is counted like a vote: on a chapter each member's *last* answer counts
(``count_rsvps``), and the chapter signs an ``Attendance`` entry with three integers
and its roster size. Integers add, so the region's sum (``sum_attendance``) is a pure
function of the signed counts; it refuses a count that does not add up (code
``bad_count``), two counts of one chapter (``duplicate_count``), a chapter the event
does not list (``not_invited``), and a count of another event (``other_event``). A
local convening lists no chapters: its host alone reports its attendance.

``Source`` (actor, seq, digest of one signed entry) and ``ConveningError`` are shared
by the other convening modules (timepoll, agenda, multiwinner, nesting).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from protocol.canonical import digest
from protocol.errors import ProtocolError

__all__ = [
    "ATTENDANCE_TYPE",
    "EVENT_TYPE",
    "Attendance",
    "AttendanceSum",
    "ChapterAttendance",
    "ConveningError",
    "Event",
    "Place",
    "RsvpCounts",
    "Source",
    "attendance_body",
    "count_rsvps",
    "event_body",
    "parse_attendance",
    "parse_event",
    "read_body",
    "source",
    "sum_attendance",
]

EVENT_TYPE: Final = "Event"
ATTENDANCE_TYPE: Final = "Attendance"
RSVP_ANSWERS: Final = ("going", "maybe", "not going")
MAX_NAME: Final = 500
_RFC3339_Z: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_URL: Final = re.compile(r"https?://[^\s]+")

Timestamp = Annotated[str, msgspec.Meta(pattern=_RFC3339_Z)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Answer = Literal["going", "maybe", "not going"]


class ConveningError(ProtocolError):
    """An event, attendance count, time poll, agenda entry or demand list is invalid."""

    code = "bad_convening"


class Source(msgspec.Struct, frozen=True):
    """Where a signed body came from: its author, its seq, and the entry's digest (§1)."""

    actor: str
    seq: int
    digest: str


def source(entry: Mapping[str, Any]) -> Source:
    """The author, seq and digest of a (chain-verified) entry."""
    actor, seq = entry.get("actor"), entry.get("seq")
    if not isinstance(actor, str) or not actor or type(seq) is not int or seq < 0:
        raise ConveningError("an entry needs a string 'actor' and a whole 'seq' >= 0")
    return Source(actor=actor, seq=seq, digest=digest(dict(entry)))


def read_body(entry: Mapping[str, Any], shape: type[Any], type_name: str) -> tuple[Source, Any]:
    """``(source, body)``: the fields of ``shape`` strictly decoded from an entry of type
    ``type_name`` (envelope and unknown keys are ignored; the proof covers them)."""
    where = source(entry)
    if entry.get("type") != type_name:
        raise ConveningError(
            f"entry type is {entry.get('type')!r:.40}, not {type_name!r}",
            actor=where.actor,
            seq=where.seq,
        )
    picked = {k: entry[k] for k in shape.__struct_fields__ if k in entry}
    try:
        return where, msgspec.convert(picked, shape, strict=True)
    except msgspec.ValidationError as exc:
        raise ConveningError(
            f"{type_name} is malformed: {exc}", actor=where.actor, seq=where.seq
        ) from None


# --- the event ---------------------------------------------------------------------


class Place(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An AS2 ``Place``: where people meet in person."""

    type: Literal["Place"]
    name: Name


class Event(msgspec.Struct, frozen=True):
    """A convening's ``Event`` body. At least one of ``location`` and ``url``;
    ``maximumAttendeeCapacity`` None means no limit."""

    name: Name
    startTime: Timestamp
    endTime: Timestamp
    location: Place | None = None
    url: str | None = None
    maximumAttendeeCapacity: Annotated[int, msgspec.Meta(ge=1)] | None = None
    chapters: tuple[str, ...] = ()


def _check_event(ev: Event, actor: str | None = None, seq: int | None = None) -> Event:
    why = ""
    if ev.endTime <= ev.startTime:  # same fixed-width UTC form: text order is time order
        why = f"endTime {ev.endTime} is not after startTime {ev.startTime}"
    elif ev.location is None and ev.url is None:
        why = "an event needs a location, an online link (url), or both"
    elif ev.url is not None and _URL.fullmatch(ev.url) is None:
        why = f"url {ev.url!r:.80} is not an http(s) link"
    elif len(set(ev.chapters)) != len(ev.chapters) or not all(ev.chapters):
        why = "chapters must be distinct, non-empty actor ids"
    if why:
        raise ConveningError(why, actor=actor, seq=seq)
    return ev


def event_body(
    name: str,
    start: str,
    end: str,
    *,
    location: str | None = None,
    url: str | None = None,
    capacity: int | None = None,
    chapters: Sequence[str] = (),
) -> dict[str, Any]:
    """The body of an ``Event`` entry; raises ConveningError when it would not parse."""
    raw: dict[str, Any] = {"type": EVENT_TYPE, "name": name, "startTime": start, "endTime": end}
    if location is not None:
        raw["location"] = {"type": "Place", "name": location}
    if url is not None:
        raw["url"] = url
    if capacity is not None:
        raw["maximumAttendeeCapacity"] = capacity
    raw["chapters"] = list(chapters)
    try:
        _check_event(msgspec.convert(raw, Event, strict=True))
    except msgspec.ValidationError as exc:
        raise ConveningError(f"Event is malformed: {exc}") from None
    return raw


def parse_event(entry: Mapping[str, Any]) -> Event:
    """Strictly decode an ``Event`` entry (or body with ``actor`` and ``seq``)."""
    where, ev = read_body(entry, Event, EVENT_TYPE)
    return _check_event(ev, where.actor, where.seq)


# --- RSVPs on a chapter ------------------------------------------------------------


class RsvpCounts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    going: Count = 0
    maybe: Count = 0
    not_going: Count = 0

    @property
    def answered(self) -> int:
        return self.going + self.maybe + self.not_going


def count_rsvps(answers: Iterable[tuple[str, str]]) -> RsvpCounts:
    """Count ``(member, answer)`` pairs given in the order they arrived: a member's
    last answer replaces the earlier ones (like a ballot, §7.2)."""
    last: dict[str, str] = {}
    for i, (member, answer) in enumerate(answers):
        if answer not in RSVP_ANSWERS:
            raise ConveningError(f"answer {i} ({answer!r:.40}) is not one of {RSVP_ANSWERS}")
        if not isinstance(member, str) or not member:
            raise ConveningError(f"answer {i} has no member id")
        last.pop(member, None)
        last[member] = answer
    answers_now = list(last.values())
    return RsvpCounts(
        going=answers_now.count("going"),
        maybe=answers_now.count("maybe"),
        not_going=answers_now.count("not going"),
    )


class Attendance(msgspec.Struct, frozen=True):
    """A chapter's signed attendance count for one event (body of an ``Attendance``)."""

    event: Name
    event_digest: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    going: Count
    maybe: Count
    not_going: Count
    members: Count


def attendance_body(
    event: str, event_digest: str, counts: RsvpCounts, *, members: int
) -> dict[str, Any]:
    """The body of a chapter's ``Attendance`` entry; ``members`` is its roster size."""
    if counts.answered > members:
        raise ConveningError(f"{counts.answered} answers from a roster of {members} members")
    if _HEX64.fullmatch(event_digest) is None:
        raise ConveningError("event_digest is not 64 lowercase hex digits")
    return {
        "type": ATTENDANCE_TYPE,
        "event": event,
        "event_digest": event_digest,
        "going": counts.going,
        "maybe": counts.maybe,
        "not_going": counts.not_going,
        "members": members,
    }


def parse_attendance(entry: Mapping[str, Any]) -> Attendance:
    """Strictly decode an ``Attendance`` entry and check that it adds up."""
    where, att = read_body(entry, Attendance, ATTENDANCE_TYPE)
    answered = att.going + att.maybe + att.not_going
    if answered > att.members:
        raise ConveningError(
            f"going + maybe + not going = {answered} exceeds the roster of {att.members}",
            actor=where.actor,
            seq=where.seq,
            code="bad_count",
        )
    result: Attendance = att
    return result


# --- the region's sum --------------------------------------------------------------


class ChapterAttendance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    chapter: str
    entry: str | None  # digest of its Attendance entry; None when it has not reported
    going: int = 0
    maybe: int = 0
    not_going: int = 0
    members: int = 0


class AttendanceSum(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per listed chapter (the event's order) and in total; ``remaining`` is capacity
    minus going (negative when over), None without a capacity."""

    event: str
    chapters: tuple[ChapterAttendance, ...]
    going: int
    maybe: int
    not_going: int
    members: int
    capacity: int | None
    remaining: int | None
    over_capacity: bool


def sum_attendance(
    event_entry: Mapping[str, Any], counts: Iterable[Mapping[str, Any]]
) -> AttendanceSum:
    """The region's sum of the chapters' signed ``Attendance`` entries for one event.

    Identical copies of an entry count once. Raises ConveningError, naming the chapter
    and seq, for a count of another event (``other_event``), a chapter the event does
    not list (``not_invited``), a count that does not add up (``bad_count``), or two
    different counts from one chapter (``duplicate_count``). An event that lists no
    chapters is a local convening: its host is the one chapter that reports.
    """
    ev = parse_event(event_entry)
    event_id = event_entry.get("id")
    host = source(event_entry)
    ev_digest = host.digest
    invited = ev.chapters or (host.actor,)
    by_chapter: dict[str, tuple[Source, Attendance]] = {}
    for entry in counts:
        src = source(entry)
        att = parse_attendance(entry)
        if att.event_digest != ev_digest or (event_id is not None and att.event != event_id):
            raise ConveningError(
                f"count is for event {att.event!r:.200} version {att.event_digest[:12]}…, "
                f"not this one ({ev_digest[:12]}…)",
                actor=src.actor,
                seq=src.seq,
                code="other_event",
            )
        if src.actor not in invited:
            raise ConveningError(
                "this chapter is not among the event's chapters",
                actor=src.actor,
                seq=src.seq,
                code="not_invited",
            )
        seen = by_chapter.get(src.actor)
        if seen is not None and seen[0].digest != src.digest:
            raise ConveningError(
                f"two attendance counts from one chapter (seq {seen[0].seq} and {src.seq})",
                actor=src.actor,
                seq=src.seq,
                code="duplicate_count",
            )
        by_chapter[src.actor] = (src, att)
    rows = []
    for chapter in invited:
        if chapter not in by_chapter:
            rows.append(ChapterAttendance(chapter=chapter, entry=None))
            continue
        src, att = by_chapter[chapter]
        rows.append(
            ChapterAttendance(
                chapter=chapter,
                entry=src.digest,
                going=att.going,
                maybe=att.maybe,
                not_going=att.not_going,
                members=att.members,
            )
        )
    going = sum(r.going for r in rows)
    cap = ev.maximumAttendeeCapacity
    return AttendanceSum(
        event=ev_digest,
        chapters=tuple(rows),
        going=going,
        maybe=sum(r.maybe for r in rows),
        not_going=sum(r.not_going for r in rows),
        members=sum(r.members for r in rows),
        capacity=cap,
        remaining=None if cap is None else cap - going,
        over_capacity=cap is not None and going > cap,
    )
