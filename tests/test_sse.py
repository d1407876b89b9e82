"""The SSE parser over plain bytes: line endings, splits at any byte, fields, comments."""

from __future__ import annotations

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
