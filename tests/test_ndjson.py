"""The NDJSON decoder over plain bytes: splits at any byte, blank lines, bad lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.ndjson import NDJSONDecoder, NDJSONError

RECORDING = (Path(__file__).parent / "recordings" / "ollama_chat.ndjson").read_bytes()


def decode(*chunks: bytes) -> list[object]:
    decoder = NDJSONDecoder()
    out = [value for chunk in chunks for value in decoder.feed(chunk)]
    return out + list(decoder.close())


def test_lines_become_values() -> None:
    assert decode(b'{"a":1}\n{"b":2}\n') == [{"a": 1}, {"b": 2}]


def test_partial_line_waits_for_its_newline() -> None:
    decoder = NDJSONDecoder()
    assert list(decoder.feed(b'{"a":')) == []
    assert decoder.pending
    assert list(decoder.feed(b'1}\n')) == [{"a": 1}]
    assert not decoder.pending


def test_blank_and_crlf_lines() -> None:
    assert decode(b'\n{"a":1}\r\n\r\n  \n{"b":"\xc3\xa9"}\n') == [{"a": 1}, {"b": "é"}]


def test_last_line_without_newline_is_decoded_on_close() -> None:
    assert decode(b'{"a":1}\n{"b":2}') == [{"a": 1}, {"b": 2}]


def test_malformed_line_raises_after_the_good_lines_before_it() -> None:
    decoder = NDJSONDecoder()
    values = decoder.feed(b'{"a":1}\n{"a":\n{"c":3}\n')
    assert next(values) == {"a": 1}
    with pytest.raises(NDJSONError) as info:
        next(values)
    assert '{"a":' in info.value.line


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_any_chunking_of_the_recording_gives_the_same_values(cuts: list[int]) -> None:
    points = sorted({c % (len(RECORDING) + 1) for c in cuts})
    pieces = [RECORDING[a:b] for a, b in zip([0, *points], [*points, len(RECORDING)], strict=True)]
    whole = decode(RECORDING)
    assert decode(*pieces) == whole
    assert len(whole) == 10 and whole[-1]["done"] is True  # type: ignore[index]
