"""Coalescing: how a reply's provider deltas become `ai.delta` frames, and how wide the window is.

A frame costs the server far more than a token (encode, fan-out, one write per subscriber),
so tokens that arrive close together share a frame. The first delta of a reply always goes
out at once. After that, text waits at most one window after the previous frame, and all
the tokens of one read go out together. The window is `coalesce_ms` while the event loop
keeps up; when it falls behind (every callback runs late by the loop's lag), the window
widens with that lag, up to `coalesce_ms x coalesce_growth`: a busy server sends fewer,
larger frames, which is what lets it catch up. Text is only ever appended: never
reordered, never dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

PROBE = 0.05  # seconds between two measurements of the loop's lag while replies stream
DECAY = 0.8  # per probe: a lag that went away narrows the window over ~10 probes (0.5 s)
LAG_FACTOR = 2.0  # the window follows twice the lag: text waits about as long as everything else already does


class Window:
    """The current coalescing window of every reply on this server, from the loop's lag."""

    __slots__ = ("base", "cap", "value", "lag", "_active", "_due", "_timer")

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(base, cap)
        self.value = base  # seconds
        self.lag = 0.0  # smoothed: rises at once, decays slowly
        self._active = 0  # replies streaming: the probe runs only while there are some
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def enter(self) -> None:
        """A reply starts streaming."""
        self._active += 1
        if self._timer is None and self.cap > self.base:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + PROBE
            self._timer = loop.call_at(self._due, self._probe)

    def leave(self) -> None:
        """A reply stopped streaming; with the last one the probe stops and the window resets."""
        self._active -= 1
        if self._active <= 0 and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.lag, self.value = 0.0, self.base

    def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.observe(now - self._due)
        self._due = now + PROBE
        self._timer = loop.call_at(self._due, self._probe)

    def observe(self, lag: float) -> None:
        """One measurement of how late a timer ran (seconds)."""
        lag = max(0.0, lag)
        self.lag = lag if lag > self.lag else self.lag * DECAY + lag * (1 - DECAY)
        self.value = min(self.cap, max(self.base, LAG_FACTOR * self.lag))


class Coalescer:
    """One reply's text on its way to frames: `add()` each delta, `close()` at the end."""

    __slots__ = ("_emit", "_window", "_loop", "_pending", "_timer", "_last", "_sent")

    def __init__(self, emit: Callable[[str], None], window: Window) -> None:
        self._emit = emit  # called with each frame's text, in order
        self._window = window
        self._loop = asyncio.get_running_loop()
        self._pending: list[str] = []
        self._timer: asyncio.Handle | None = None
        self._last = 0.0  # loop time of the last frame
        self._sent = False  # the first frame went out

    def add(self, text: str) -> None:
        self._pending.append(text)
        if self._timer is not None:
            return  # a frame is already due: this text joins it
        if not self._sent:
            self.flush()  # the first delta never waits
            return
        wait = self._last + self._window.value - self._loop.time()
        if wait > 0:
            self._timer = self._loop.call_later(wait, self.flush)
        else:
            # The window has passed: the frame goes out as soon as this read's other tokens joined it.
            self._timer = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._timer = None
        if self._pending:
            text = "".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            self._last = self._loop.time()
            self._sent = True
            self._emit(text)

    def close(self) -> None:
        """The stream ended (or failed, or was cancelled): whatever was received goes out now."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
