"""Incremental newline-delimited JSON decoder over bytes: no I/O, so any chunking can be tested."""

from __future__ import annotations

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

    def feed(self, chunk: bytes) -> list[Any]:
        """Consume a chunk and return the values of the lines it completes."""
        buf = self._buf + chunk if self._buf else chunk
        *lines, self._buf = buf.split(b"\n")
        return [_decode(line) for line in lines if line.strip()]

    def close(self) -> list[Any]:
        """Decode a last line that had no trailing newline (the body ended)."""
        rest, self._buf = self._buf, b""
        return [_decode(rest)] if rest.strip() else []


def _decode(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raise NDJSONError(line) from None
