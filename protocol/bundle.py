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

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from protocol.canonical import decode_json
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
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag="ballot",
    tag_field="kind",
):
    """An open (roll-call) ballot as counted by ``actor``'s tally of ``proposal``.

    ``receipt`` must equal ``ballot_receipt(proposal, ballot, nonce)``; the auditor
    recomputes it and recounts the tally from these records. A member-signed ballot
    also carries ``counter``, ``key`` and ``signature`` (protocol/member_ballots.py,
    docs/protocol.md §7.5); a custodial one carries none of the three.
    """

    actor: str
    proposal: str
    member: str
    ballot: dict[str, Any]
    nonce: str
    receipt: str
    counter: int | None = None
    key: str | None = None
    signature: str | None = None


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
            f"line is {len(line)} bytes, longer than the {MAX_LINE_BYTES} bytes allowed",
            line=lineno,
            code="line_too_long",
        )
    try:
        record = _decoder.decode(line)
    except msgspec.ValidationError as exc:
        raise BundleError(_explain(line, str(exc)), line=lineno) from exc
    except msgspec.DecodeError as exc:
        raise BundleError(f"not a JSON object: {exc}", line=lineno, code="not_json") from exc
    if isinstance(record, EntryRecord | ActorRecord):
        _check_strict(line, lineno)
    return record


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
    return _check_header(record, lineno)


def _check_header(record: Header, lineno: int) -> Header:
    if record.format != FORMAT:
        raise BundleError(f"format is {record.format!r}, expected {FORMAT!r}", line=lineno)
    if record.version != VERSION:
        raise BundleError(
            f"version {record.version} is not supported (this reader knows {VERSION})",
            line=lineno,
            code="unsupported_version",
        )
    return record


class BundleDecoder:
    """Incremental bundle decoding, sans I/O: ``feed`` bytes as they are read, get the
    records of every complete line; ``finish`` at the end of the input.

    Whole runs of lines are decoded by msgspec in one call; only when a run holds a bad
    line is it decoded line by line again, to name that line. A partial line longer
    than ``MAX_LINE_BYTES`` is refused as soon as it is seen, so memory stays bounded
    by the chunk size plus one line.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._lineno = 0  # lines fully consumed so far
        self._seen_header = False

    def feed(self, data: bytes) -> list[Record]:
        buf = self._pending + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._pending = buf
            self._check_pending()
            return []
        block, self._pending = buf[: cut + 1], buf[cut + 1 :]
        self._check_pending()
        return self._decode_block(block)

    def finish(self) -> list[Record]:
        """Decode a last line without a newline; refuse an input without a header."""
        out = self._decode_block(self._pending) if self._pending.strip() else []
        self._pending = b""
        if not self._seen_header:
            raise BundleError("the bundle is empty", line=1, code="no_header")
        return out

    def _check_pending(self) -> None:
        if len(self._pending) > MAX_LINE_BYTES + 1:  # + 1: a CR before the newline
            raise BundleError(
                f"line is longer than the {MAX_LINE_BYTES} bytes allowed",
                line=self._lineno + 1,
                code="line_too_long",
            )

    def _decode_block(self, block: bytes) -> list[Record]:
        first = self._lineno + 1
        lines = block.split(b"\n")
        self._lineno += block.count(b"\n")
        try:
            if max(map(len, lines)) > MAX_LINE_BYTES + 1:
                raise ValueError("a line is too long")
            records: list[Record] = _decoder.decode_lines(block)
        except (msgspec.DecodeError, ValueError):
            # name the offending line: the slow path raises the precise error
            records = [
                decode_record(line.rstrip(b"\r"), n)
                for n, line in enumerate(lines, start=first)
                if line.strip()
            ]
        if not records:
            return records
        numbered = ((n, line) for n, line in enumerate(lines, start=first) if line.strip())
        for (n, line), record in zip(numbered, records, strict=True):
            if isinstance(record, EntryRecord | ActorRecord):
                _check_strict(line.rstrip(b"\r"), n)
        if not self._seen_header:
            if not isinstance(records[0], Header):
                raise BundleError(
                    "the first record must be the header", line=first, code="no_header"
                )
            self._seen_header = True
            _check_header(records[0], first)
            rest = records[1:]
        else:
            rest = records
        for n, record in enumerate(rest):
            if isinstance(record, Header):
                raise BundleError(
                    "a second header",
                    line=_line_of(lines, first, n + len(records) - len(rest)),
                    code="second_header",
                )
        return records


def _check_strict(line: bytes, lineno: int) -> None:
    """Entries and actor documents are read as protocol.md §2 reads untrusted JSON: a
    repeated member name, a number that has no canonical form, a lone surrogate make
    the line unreadable instead of being silently resolved one way or another."""
    try:
        decode_json(line, max_bytes=MAX_LINE_BYTES + 1)
    except DecodeError as exc:
        raise BundleError(f"not strict JSON: {exc.detail}", line=lineno, code="not_json") from exc


def _line_of(lines: list[bytes], first: int, index: int) -> int:
    """The line number of the ``index``-th non-blank line of a block."""
    seen = -1
    for n, line in enumerate(lines, start=first):
        if line.strip():
            seen += 1
            if seen == index:
                return n
    return first


def parse_bundle(data: bytes) -> tuple[Header, list[Body]]:
    """Decode a whole bundle held in memory into its header and body records."""
    decoder = BundleDecoder()
    records = decoder.feed(data) + decoder.finish()
    head, body = records[0], records[1:]
    assert isinstance(head, Header)  # the decoder refuses a bundle that does not start so
    return head, [r for r in body if not isinstance(r, Header)]


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
