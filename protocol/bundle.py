"""The audit bundle: JSON Lines records an auditor re-checks offline (docs/auditing.md).

Theory of operation. A bundle is a sequence of lines, each one UTF-8 JSON object with a
``kind``. The first line is the ``header``; after it come, in any order, ``actor``
records (actor documents as served), ``entry`` records (chain entries verbatim with
their proofs), ``ballot`` records (open ballots, enough to recompute the receipt and
recount) and ``receipt`` records (secret ballots: the receipt only, never who voted
what). The records are our own format, so they are decoded strictly by one typed
decoder: unknown kinds, unknown fields, wrong types and lines longer than
``MAX_LINE_BYTES`` are refused with the line number. What the records *carry* (actor
documents, entries) comes from the federation and is kept as plain JSON objects, to be
validated by the modules that own those rules.

This module only turns bytes into records and back. Reading a file or a socket is the
caller's job (protocol/ does no I/O); the caller should read each line with a limit of
``MAX_LINE_BYTES + 1`` so an oversized line is refused without being held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec

from protocol.errors import DecodeError

FORMAT: Final = "convene-audit-bundle"
VERSION: Final = 1
MAX_LINE_BYTES: Final = 1 << 20
"""A chain entry or actor document is a few kilobytes; a megabyte leaves room for a
ranked tally's pairwise matrix while bounding what one hostile line can cost."""


class BundleError(DecodeError):
    """A bundle line is unreadable: not JSON, unknown kind, wrong shape or too long."""

    code = "bad_bundle"

    def __init__(self, detail: str, *, line: int, code: str | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {detail}", code=code)


class Header(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="header", tag_field="kind"
):
    """First line: which format, which version, who exported it and when."""

    format: str
    version: int
    exporter: str
    exported_at: str


class ActorRecord(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="actor", tag_field="kind"
):
    """An actor document exactly as its node serves it."""

    document: dict[str, Any]


class EntryRecord(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="entry", tag_field="kind"
):
    """A chain entry verbatim, proof included (docs/protocol.md §5)."""

    entry: dict[str, Any]


class BallotRecord(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="ballot", tag_field="kind"
):
    """An open (roll-call) ballot as counted by ``actor``'s tally of ``proposal``.

    ``receipt`` must equal ``ballot_receipt(proposal, ballot, nonce)``; the auditor
    recomputes it and recounts the tally from these records.
    """

    actor: str
    proposal: str
    member: str
    ballot: dict[str, Any]
    nonce: str
    receipt: str


class ReceiptRecord(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="receipt", tag_field="kind"
):
    """A secret ballot's receipt as a leaf of ``actor``'s tally of ``proposal``."""

    actor: str
    proposal: str
    receipt: str


Record = Header | ActorRecord | EntryRecord | BallotRecord | ReceiptRecord
Body = ActorRecord | EntryRecord | BallotRecord | ReceiptRecord

_decoder: Final[msgspec.json.Decoder[Record]] = msgspec.json.Decoder(Record, strict=True)
_encoder: Final = msgspec.json.Encoder()
_KINDS: Final = ("header", "actor", "entry", "ballot", "receipt")


def decode_record(line: bytes, lineno: int) -> Record:
    """Decode one line (1-based ``lineno`` for the error message) into a typed record."""
    if len(line) > MAX_LINE_BYTES:
        raise BundleError(
            f"line is {len(line)} bytes, more than the {MAX_LINE_BYTES} allowed",
            line=lineno,
            code="line_too_long",
        )
    try:
        return _decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise BundleError(_explain(line, str(exc)), line=lineno) from exc
    except msgspec.DecodeError as exc:
        raise BundleError(f"not a JSON object: {exc}", line=lineno, code="not_json") from exc


def _explain(line: bytes, message: str) -> str:
    # msgspec's message for an unknown tag names the tag value; say which kinds exist.
    if "Invalid value" in message and "$.kind" in message:
        return f"unknown record kind ({message}); kinds are {', '.join(_KINDS)}"
    return f"record of the wrong shape: {message}"


def decode_header(line: bytes, lineno: int = 1) -> Header:
    """Decode and check the first record: a header of a format and version we read."""
    record = decode_record(line, lineno)
    if not isinstance(record, Header):
        raise BundleError("the first record must be the header", line=lineno, code="no_header")
    if record.format != FORMAT:
        raise BundleError(f"format is {record.format!r}, expected {FORMAT!r}", line=lineno)
    if record.version != VERSION:
        raise BundleError(
            f"version {record.version} is not supported (this reader knows {VERSION})",
            line=lineno,
            code="unsupported_version",
        )
    return record


def iter_records(lines: Iterable[bytes]) -> Iterator[Record]:
    """Decode a bundle line by line: the header first, then the body records.

    Blank lines (a trailing newline, CRLF endings) are allowed and skipped; a second
    header is not.
    """
    seen_header = False
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        if not seen_header:
            yield decode_header(line, lineno)
            seen_header = True
            continue
        record = decode_record(line, lineno)
        if isinstance(record, Header):
            raise BundleError("a second header", line=lineno, code="second_header")
        yield record
    if not seen_header:
        raise BundleError("the bundle is empty", line=1, code="no_header")


def parse_bundle(data: bytes) -> tuple[Header, list[Body]]:
    """Decode a whole bundle held in memory into its header and body records."""
    records = iter_records(data.split(b"\n"))
    header = next(records)
    assert isinstance(header, Header)  # iter_records yields the header first or raises
    body: list[Body] = []
    for record in records:
        assert not isinstance(record, Header)
        body.append(record)
    return header, body


def header(exporter: str, exported_at: str) -> Header:
    """The header of a bundle exported by ``exporter`` at ``exported_at`` (RFC 3339)."""
    return Header(format=FORMAT, version=VERSION, exporter=exporter, exported_at=exported_at)


def encode_record(record: Record) -> bytes:
    """One record as a JSON line, newline included; refuses lines a reader would refuse."""
    line = _encoder.encode(record)
    if len(line) > MAX_LINE_BYTES:
        raise BundleError(
            f"record encodes to {len(line)} bytes, more than {MAX_LINE_BYTES}",
            line=0,
            code="line_too_long",
        )
    return line + b"\n"


def encode_bundle(head: Header, body: Iterable[Body]) -> bytes:
    """A whole bundle as bytes (the header line first)."""
    return b"".join([encode_record(head), *(encode_record(r) for r in body)])
