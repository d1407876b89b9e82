"""The SSE parser over plain bytes: line endings, splits at any byte, fields, comments."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from providers.sse import SSEEvent, SSEParser

RECORDINGS = Path(__file__).parent / "recordings"


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_data_lines_dispatch_on_blank_line() -> None:
    assert parse(b"data: hello\n\n") == [SSEEvent("message", "hello", None)]


def test_event_field_names_the_event() -> None:
    assert parse(b"event: ping\ndata: {}\n\n") == [SSEEvent("ping", "{}", None)]


def test_crlf_and_cr_line_endings() -> None:
    expected = [SSEEvent("a", "1", None), SSEEvent("message", "2", None)]
    assert parse(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n") == expected
    assert parse(b"event: a\rdata: 1\r\rdata: 2\r\r") == expected


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    assert parse(b"data: x\r", b"\n\r", b"\n") == [SSEEvent("message", "x", None)]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert parse(b"data: one\ndata:two\ndata:  three\n\n") == [SSEEvent("message", "one\ntwo\n three", None)]


def test_comments_and_unknown_fields_are_ignored() -> None:
    assert parse(b": keep-alive\n\n:OPENROUTER PROCESSING\nretry: 10\nfoo: bar\ndata: x\n\n") == [
        SSEEvent("message", "x", None)
    ]


def test_field_without_colon_and_empty_data() -> None:
    assert parse(b"data\n\n") == [SSEEvent("message", "", None)]


def test_blank_line_without_data_dispatches_nothing_and_resets_event() -> None:
    assert parse(b"event: a\n\ndata: x\n\n") == [SSEEvent("message", "x", None)]


def test_id_is_kept_for_later_events() -> None:
    assert parse(b"id: 7\ndata: a\n\ndata: b\n\n") == [SSEEvent("message", "a", "7"), SSEEvent("message", "b", "7")]


def test_utf8_split_inside_a_character() -> None:
    raw = "data: héllo 😀\n\n".encode()
    cut = raw.index("😀".encode()) + 2
    assert parse(raw[:cut], raw[cut:]) == [SSEEvent("message", "héllo 😀", None)]


def test_leading_bom_is_dropped() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [SSEEvent("message", "x", None)]


def test_unterminated_event_is_not_dispatched_and_is_pending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: [DONE]\n") == []
    assert parser.pending
    assert parser.feed(b"\n") == [SSEEvent("message", "[DONE]", None)]
    assert not parser.pending


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert parse(b"data: \xff\n\n") == [SSEEvent("message", "\ufffd", None)]


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30), name=st.sampled_from(
    ["openai_stream.sse", "anthropic_stream.sse", "anthropic_error_event.sse"]))
def test_any_chunking_of_a_recording_gives_the_same_events(cuts: list[int], name: str) -> None:
    raw = (RECORDINGS / name).read_bytes()
    whole = parse(raw)
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert parse(*pieces) == whole
    assert len(whole) > 3


@settings(max_examples=200, deadline=None)
@given(
    datas=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
                           max_size=20), min_size=1, max_size=5),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    size=st.integers(min_value=1, max_value=7),
)
def test_round_trip_of_generated_events_at_any_chunk_size(datas: list[str], eol: bytes, size: int) -> None:
    raw = b"".join(b"data: " + d.encode() + eol + eol for d in datas)
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
    assert parse(*pieces) == [SSEEvent("message", d, None) for d in datas]


# -- the two paths (blocks cut at blank lines; line by line) agree with the spec ---------

def spec_events(raw: bytes) -> list[SSEEvent]:
    """The WHATWG rules applied to a whole stream at once: the oracle for the parser."""
    text = raw.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # what follows the last line end is not a line yet
    out: list[SSEEvent] = []
    event, data, last_id = "", None, None
    for line in lines:
        if not line:
            if data is not None:
                out.append(SSEEvent(event or "message", "\n".join(data), last_id))
            event, data = "", None
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        value = value[1:] if sep and value.startswith(" ") else value
        if name == "data":
            data = [*(data or []), value]
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return out


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
_line = st.one_of(
    _text.map(lambda t: "data: " + t), _text.map(lambda t: "data:" + t), st.just("data"),
    _text.map(lambda t: "event: " + t), st.integers(0, 99).map(lambda n: f"id: {n}"),
    _text.map(lambda t: ":" + t), st.just("retry: 10"), st.just(""),
    _text.map(lambda t: "\ufeffdata: " + t),  # a BOM is dropped only at the very start of the stream
)
_eol = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.lists(st.tuples(_line, _eol), max_size=4), min_size=1, max_size=6),
       ends=st.lists(_eol, min_size=6, max_size=6), cuts=st.lists(st.integers(0, 10_000), max_size=12),
       bom=st.booleans())
def test_fields_comments_and_mixed_line_ends_cut_anywhere_match_the_spec(
        events: list[list[tuple[str, str]]], ends: list[str], cuts: list[int], bom: bool) -> None:
    text = "".join("".join(line + eol for line, eol in lines) + end for lines, end in zip(events, ends))
    raw = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    points = sorted({c % (len(raw) + 1) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    if raw.endswith(b"\r"):  # a final CR is a line end only once the next byte is known not to be LF
        pieces.append(b"\n")
        raw += b"\n"
    assert parse(*pieces) == spec_events(raw)


def test_openai_stream_split_at_every_byte_gives_the_same_events() -> None:
    raw = (RECORDINGS / "openai_stream.sse").read_bytes()
    whole = parse(raw)
    for cut in range(len(raw) + 1):
        assert parse(raw[:cut], raw[cut:]) == whole, cut


def test_one_data_line_per_event_keeps_one_space_and_the_last_id() -> None:
    assert parse(b"id: 3\n\n", b'data: {"a": 1}\n\ndata:x\n\ndata:  y\n\ndata:\n\n') == [
        SSEEvent("message", '{"a": 1}', "3"), SSEEvent("message", "x", "3"),
        SSEEvent("message", " y", "3"), SSEEvent("message", "", "3")]


def test_a_consumer_stopping_after_one_event_of_a_large_read_resumes_at_the_next() -> None:
    parser = SSEParser()
    parser.feed(b": open\n\n")
    raw = b"".join(b"data: %d\n\n" % i for i in range(1000))
    first = next(parser.events(raw))
    assert first == SSEEvent("message", "0", None)
    assert parser.pending
    rest = parser.feed(b"")
    assert [e.data for e in rest] == [str(i) for i in range(1, 1000)]
    assert not parser.pending


def test_blank_lines_between_events_and_a_trailing_partial_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"\n\ndata: a\n\n\n\ndata: b\n\ndata: c") == [
        SSEEvent("message", "a", None), SSEEvent("message", "b", None)]
    assert parser.pending
    assert parser.feed(b"\n\n") == [SSEEvent("message", "c", None)]


def test_a_bom_after_the_first_line_is_part_of_a_field_name() -> None:
    assert parse(b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n") == [
        SSEEvent("message", "a", None), SSEEvent("message", "c", None)]
