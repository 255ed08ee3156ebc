"""The bundle format: strict typed records, bounded lines, clear errors with line numbers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bundle import (
    MAX_LINE_BYTES,
    ActorRecord,
    BallotRecord,
    BundleDecoder,
    BundleError,
    EntryRecord,
    Header,
    ReceiptRecord,
    decode_record,
    encode_bundle,
    encode_record,
    header,
    parse_bundle,
)
from protocol.errors import DecodeError, ProtocolError

HEAD = header("https://a.example/actor", "2026-11-26T14:00:00Z")
BODY = [
    ActorRecord(document={"id": "https://a.example/actor", "type": "Group"}),
    EntryRecord(entry={"seq": 0, "prev": None, "type": "Genesis"}),
    BallotRecord(
        actor="https://a.example/actor",
        proposal="https://r.example/actor/entries/3",
        member="m1",
        ballot={"choice": "agree"},
        nonce="00" * 16,
        receipt="ab" * 32,
    ),
    ReceiptRecord(
        actor="https://a.example/actor",
        proposal="https://r.example/actor/entries/3",
        receipt="cd" * 32,
    ),
]


def test_round_trip_keeps_every_record_in_order() -> None:
    data = encode_bundle(HEAD, BODY)
    assert data.count(b"\n") == 5
    head, body = parse_bundle(data)
    assert head == HEAD
    assert body == BODY


def test_each_line_is_one_json_object_with_a_kind() -> None:
    lines = encode_bundle(HEAD, BODY).splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds == ["header", "actor", "entry", "ballot", "receipt"]
    assert json.loads(lines[0]) == {
        "kind": "header",
        "format": "convene-audit-bundle",
        "version": 1,
        "exporter": "https://a.example/actor",
        "exported_at": "2026-11-26T14:00:00Z",
    }


def test_crlf_and_blank_lines_are_tolerated() -> None:
    data = encode_bundle(HEAD, BODY).replace(b"\n", b"\r\n") + b"\r\n\n"
    assert parse_bundle(data) == (HEAD, BODY)


def _error(data: bytes) -> BundleError:
    with pytest.raises(BundleError) as info:
        parse_bundle(data)
    return info.value


def test_unknown_kind_is_named_with_its_line() -> None:
    data = encode_bundle(HEAD, BODY) + b'{"kind": "vote", "x": 1}\n'
    err = _error(data)
    assert err.line == 6
    assert "line 6" in str(err) and "vote" in str(err) and "kinds are" in str(err)


def test_not_json_is_refused() -> None:
    err = _error(encode_bundle(HEAD, []) + b"{not json\n")
    assert err.line == 2 and err.code == "not_json"


def test_unknown_field_is_refused() -> None:
    err = _error(encode_bundle(HEAD, []) + b'{"kind":"entry","entry":{},"extra":1}\n')
    assert err.line == 2 and "extra" in str(err)


def test_wrong_type_is_refused_with_its_path() -> None:
    line = b'{"kind":"receipt","actor":"a","proposal":"p","receipt":7}\n'
    err = _error(encode_bundle(HEAD, []) + line)
    assert "$.receipt" in str(err)


def test_missing_header_is_refused() -> None:
    err = _error(encode_record(BODY[0]))
    assert err.code == "no_header" and err.line == 1


def test_empty_bundle_is_refused() -> None:
    assert _error(b"").code == "no_header"


def test_second_header_is_refused() -> None:
    err = _error(encode_bundle(HEAD, BODY) + encode_record(HEAD))
    assert err.code == "second_header" and err.line == 6


def test_unsupported_version_and_format_are_refused() -> None:
    newer = Header(format=HEAD.format, version=2, exporter="a", exported_at="t")
    assert _error(encode_record(newer)).code == "unsupported_version"
    other = Header(format="something-else", version=1, exporter="a", exported_at="t")
    assert "something-else" in str(_error(encode_record(other)))


def test_oversized_line_is_refused_before_decoding() -> None:
    big = EntryRecord(entry={"pad": "x" * MAX_LINE_BYTES})
    with pytest.raises(BundleError) as info:
        encode_record(big)
    assert info.value.code == "line_too_long"
    line = b'{"kind":"entry","entry":{"pad":"' + b"x" * MAX_LINE_BYTES + b'"}}'
    with pytest.raises(BundleError) as info:
        decode_record(line, 9)
    assert info.value.code == "line_too_long" and info.value.line == 9


def test_a_line_just_under_the_limit_is_read() -> None:
    pad = MAX_LINE_BYTES - len(b'{"kind":"entry","entry":{"pad":""}}')
    line = b'{"kind":"entry","entry":{"pad":"' + b"x" * pad + b'"}}'
    assert len(line) == MAX_LINE_BYTES
    assert isinstance(decode_record(line, 2), EntryRecord)


def test_bundle_errors_are_protocol_decode_errors() -> None:
    err = _error(b"[]")
    assert isinstance(err, DecodeError) and isinstance(err, ProtocolError)
    assert err.status == 400


def test_the_decoder_gives_the_same_records_whatever_the_chunking() -> None:
    data = encode_bundle(HEAD, BODY)
    for size in (1, 7, 64, len(data)):
        decoder = BundleDecoder()
        got: list[object] = []
        for k in range(0, len(data), size):
            got += decoder.feed(data[k : k + size])
        got += decoder.finish()
        assert got == [HEAD, *BODY]


def test_the_decoder_names_the_bad_line_inside_a_block() -> None:
    data = encode_bundle(HEAD, BODY) + b'{"kind":"receipt","actor":"a"}\n' + encode_record(BODY[0])
    decoder = BundleDecoder()
    with pytest.raises(BundleError) as info:
        decoder.feed(data)
    assert info.value.line == 6 and "proposal" in str(info.value)


def test_the_decoder_refuses_a_long_partial_line_before_it_ends() -> None:
    decoder = BundleDecoder()
    decoder.feed(encode_record(HEAD))
    with pytest.raises(BundleError) as info:
        decoder.feed(b'{"kind":"entry","entry":{"x":"' + b"x" * MAX_LINE_BYTES)
    assert info.value.code == "line_too_long" and info.value.line == 2


def test_a_last_line_without_newline_is_read() -> None:
    data = encode_bundle(HEAD, BODY).rstrip(b"\n")
    assert parse_bundle(data) == (HEAD, BODY)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(
    entry=st.dictionaries(st.text(max_size=6), json_values, max_size=5),
    member=st.text(max_size=10),
    nonce=st.text(max_size=10),
)
def test_any_record_round_trips(entry: dict[str, object], member: str, nonce: str) -> None:
    body = [
        EntryRecord(entry=entry),
        BallotRecord(
            actor="a", proposal="p", member=member, ballot=entry, nonce=nonce, receipt="r"
        ),
    ]
    assert parse_bundle(encode_bundle(HEAD, body)) == (HEAD, body)


@pytest.mark.parametrize(
    "line",
    [
        b'{"kind":"entry","entry":{"seq":1,"seq":2}}',  # a member named twice
        b'{"kind":"entry","entry":{"count":9007199254740993}}',  # no canonical form
        b'{"kind":"actor","document":{"id":"a","id":"b"}}',
    ],
)
def test_entries_and_actor_documents_are_strict_json(line: bytes) -> None:
    data = encode_bundle(HEAD, BODY) + line + b"\n"
    for chunked in (False, True):
        with pytest.raises(BundleError) as info:
            if chunked:
                decoder = BundleDecoder()
                for k in range(0, len(data), 50):
                    decoder.feed(data[k : k + 50])
                decoder.finish()
            else:
                parse_bundle(data)
        assert info.value.line == 6 and "not strict JSON" in str(info.value)
    with pytest.raises(BundleError):
        decode_record(line, 6)
