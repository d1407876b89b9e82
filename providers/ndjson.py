"""Incremental newline-delimited JSON decoder over bytes: no I/O, so any chunking can be tested."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson


class NDJSONError(ValueError):
    """A complete line that is not JSON; `line` holds a short snippet of it."""

    def __init__(self, line: bytes) -> None:
        self.line = line[:200].decode("utf-8", "replace")
        super().__init__(f"malformed NDJSON line: {self.line!r}")


class NDJSONDecoder:
    """Feed raw body bytes in any pieces; get one decoded value per complete non-blank line."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> bool:
        """True when a partial (unterminated) line is buffered."""
        return bool(self._buf.strip())

    def feed(self, chunk: bytes) -> Iterator[Any]:
        """Consume a chunk; lazily decode the lines it completes, so good lines before a bad one count."""
        buf = self._buf + chunk if self._buf else chunk
        *lines, self._buf = buf.split(b"\n")
        return _decode(lines)

    def close(self) -> Iterator[Any]:
        """Decode a last line that had no trailing newline (the body ended)."""
        rest, self._buf = self._buf, b""
        return _decode([rest])


def _decode(lines: list[bytes]) -> Iterator[Any]:
    for line in lines:
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            raise NDJSONError(line) from None
