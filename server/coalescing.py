"""Coalescing: how a reply's provider deltas become `ai.delta` frames, and how wide the window is.

A frame costs the server far more than a token (encode, fan-out, one write per subscriber),
so tokens that arrive close together share a frame. The first delta of a reply always goes
out at once. After that, text waits at most one window after the previous frame, and all
the tokens of one read go out together. The window is `coalesce_ms` while the server keeps
up, and widens up to `coalesce_ms x coalesce_growth` when it does not: a busy server sends
fewer, larger frames, which is what lets it catch up. Two signals, from one timer probe
every 50 ms while replies stream: the loop's lag (how late the probe runs; the window
follows twice that), and how busy the event loop's thread is (its CPU time over wall time
in the probe's interval: from 60% busy the window widens in proportion, reaching the cap
at 90%). The lag alone misses a server that is behind: a backlog waits in the sockets'
kernel buffers, not in the loop's ready queue, and every loop pass can stay short. Text is
only ever appended: never reordered, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PROBE = 0.05  # seconds between two measurements of the loop's lag while replies stream
DECAY = 0.8  # per probe: a lag that went away narrows the window over ~10 probes (0.5 s)
LAG_FACTOR = 2.0  # the window follows twice the lag: text waits about as long as everything else already does
BUSY_LOW, BUSY_HIGH = 0.6, 0.9  # CPU share of the process over a probe interval: the base window below, the cap above


class Window:
    """The current coalescing window of every reply on this server, from the loop's lag."""

    __slots__ = ("base", "cap", "value", "lag", "busy", "_active", "_due", "_timer", "_cpu", "_at")

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(base, cap)
        self.value = base  # seconds
        self.lag = 0.0  # smoothed (both rise at once and decay slowly)
        self.busy = 0.0
        self._active = 0  # replies streaming: the probe runs only while there are some
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._cpu = 0.0  # process CPU time and loop time at the last probe
        self._at = 0.0

    def enter(self) -> None:
        """A reply starts streaming."""
        self._active += 1
        if self._timer is None and self.cap > self.base:
            loop = asyncio.get_running_loop()
            self._at, self._cpu = loop.time(), time.thread_time()
            self._due = self._at + PROBE
            self._timer = loop.call_at(self._due, self._probe)

    def leave(self) -> None:
        """A reply stopped streaming; with the last one the probe stops and the window resets."""
        self._active -= 1
        if self._active <= 0 and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.lag, self.busy, self.value = 0.0, 0.0, self.base

    def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        now, cpu = loop.time(), time.thread_time()
        self.observe(now - self._due, (cpu - self._cpu) / (now - self._at) if now > self._at else 0.0)
        self._at, self._cpu = now, cpu
        self._due = now + PROBE
        self._timer = loop.call_at(self._due, self._probe)

    def observe(self, lag: float, busy: float = 0.0) -> None:
        """One measurement: how late a timer ran (seconds), and the share of a core the process used."""
        lag, busy = max(0.0, lag), min(1.0, max(0.0, busy))
        self.lag = lag if lag > self.lag else self.lag * DECAY + lag * (1 - DECAY)
        self.busy = busy if busy > self.busy else self.busy * DECAY + busy * (1 - DECAY)
        load = min(1.0, max(0.0, (self.busy - BUSY_LOW) / (BUSY_HIGH - BUSY_LOW)))
        self.value = min(self.cap, max(self.base, LAG_FACTOR * self.lag, self.base + (self.cap - self.base) * load))


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
