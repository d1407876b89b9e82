"""Incremental server-sent events parser over bytes: no I/O, so any chunking can be tested."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SSEEvent(NamedTuple):
    """One dispatched event, as the WHATWG event-stream rules define it.

    A tuple rather than a dataclass: one is made per relayed token, and a tuple is the
    cheapest object Python makes."""

    event: str
    data: str
    id: str | None


class SSEParser:
    """Feed raw body bytes in any pieces; get complete events back in order.

    Two paths, one result. The common stream (LF line ends, events of one `data:` line, as
    OpenAI-compatible servers send) is cut at each blank line with `bytes.find` and each
    event made from one slice; anything else (CR or CRLF line ends, several fields, an
    event split mid-field) goes line by line through the WHATWG rules. Unconsumed bytes stay
    in `_buf` from `_pos` on, so a consumer that stops early leaves the parser consistent
    without copying the rest of a large read once per event."""

    __slots__ = ("_buf", "_pos", "_skip_lf", "_started", "_event", "_data", "_has_data", "_last_id")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0  # _buf[_pos:] is not parsed yet
        self._skip_lf = False  # a chunk ended in "\r": a "\n" starting the next one is the same EOL
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._last_id: str | None = None

    @property
    def pending(self) -> bool:
        """True when bytes or fields of an undispatched event are buffered (a truncated stream)."""
        return len(self._buf) > self._pos or self._has_data or bool(self._event)

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
        buf, pos = self._buf, self._pos
        buf = (buf[pos:] + chunk if pos else buf + chunk) if buf else chunk
        if not self._started:  # a BOM is dropped only at the very start of the stream
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf, self._pos = buf, 0  # maybe the start of one: wait for more
                return iter(())
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[3:]
        self._buf, self._pos = buf, 0
        if not self._has_data and not self._event and b"\r" not in buf:
            return self._blocks(buf)
        return self._lines(buf)

    def _blocks(self, buf: bytes) -> Iterator[SSEEvent]:
        """LF-only input starting at an event boundary: one event per blank-line-ended block."""
        pos = 0
        find = buf.find
        while (end := find(b"\n\n", pos)) >= 0:
            if buf.startswith(b"data:", pos) and find(b"\n", pos, end) < 0:
                # The usual event: one data line, nothing else.
                start = pos + 6 if buf[pos + 5] == 32 else pos + 5  # 32: one optional space
                event = SSEEvent("message", buf[start:end].decode("utf-8", "replace"), self._last_id)
            else:
                events: list[SSEEvent] = []
                for raw in buf[pos:end].split(b"\n"):
                    self._line(raw, events)
                self._dispatch(events)
                event = events[0] if events else None  # a block ends in one dispatch: at most one event
            pos = self._pos = end + 2
            if event is not None:
                yield event

    def _lines(self, buf: bytes) -> Iterator[SSEEvent]:
        """Any input, one line at a time."""
        events: list[SSEEvent] = []
        pos = 0
        for m in _EOL.finditer(buf):
            self._line(buf[pos : m.start()], events)
            pos = self._pos = m.end()
            if pos == len(buf) and m.group() == b"\r":
                self._skip_lf = True
            if events:
                yield from events
                events.clear()

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        line = raw.decode("utf-8", "replace")
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
