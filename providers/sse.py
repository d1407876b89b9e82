"""Incremental server-sent events parser over bytes: no I/O, so any chunking can be tested."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event, as the WHATWG event-stream rules define it."""

    event: str
    data: str
    id: str | None


class SSEParser:
    """Feed raw body bytes in any pieces; get complete events back in order."""

    __slots__ = ("_buf", "_skip_lf", "_started", "_event", "_data", "_has_data", "_last_id")

    def __init__(self) -> None:
        self._buf = b""
        self._skip_lf = False  # a chunk ended in "\r": a "\n" starting the next one is the same EOL
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._last_id: str | None = None

    @property
    def pending(self) -> bool:
        """True when bytes or fields of an undispatched event are buffered (a truncated stream)."""
        return bool(self._buf) or self._has_data or bool(self._event)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume a chunk and return the events it completes."""
        return list(self.events(chunk))

    def events(self, chunk: bytes) -> Iterator[SSEEvent]:
        """Consume a chunk, yielding each event as soon as its blank line is parsed.

        Lazy so a streaming client relays the first event of a large read before parsing the
        rest; stop early only when the stream is over.
        """
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = self._buf + chunk if self._buf else chunk
        self._buf = b""
        events: list[SSEEvent] = []
        pos = 0
        for m in _EOL.finditer(buf):
            self._line(buf[pos : m.start()], events)
            pos = m.end()
            if pos == len(buf) and m.group() == b"\r":
                self._skip_lf = True
            if events:
                self._buf = buf[pos:]  # what is left, should the consumer stop here
                yield from events
                events.clear()
        self._buf = buf[pos:]

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        line = raw.decode("utf-8", "replace")
        if not self._started:
            self._started = True
            if line.startswith("\ufeff"):
                line = line[1:]
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
            self._has_data = True
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        # "retry" and unknown fields are ignored, as the spec says.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._has_data:
            events.append(SSEEvent(self._event or "message", "\n".join(self._data), self._last_id))
        self._event = ""
        self._data = []
        self._has_data = False
