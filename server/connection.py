"""Connection: one WebSocket's bounded outgoing queue and the writer that drains it.

When nothing is queued and the socket is writable, `enqueue()` writes at once: it runs
uvicorn's `send` coroutine by hand, which completes without suspending unless the
transport is paused. Only when it would wait (a slow reader) does the frame's coroutine
go to the connection's writer task, and later frames queue behind it. So the common
delivery costs no task switch, and a slow client still never blocks the sender.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .records import User

log = logging.getLogger("chat.ws")

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_TOO_SLOW = 1013

_ids = itertools.count(1)


class Connection:
    """Frames are queued without awaiting; a client whose queue overflows is cut, never waited on."""

    __slots__ = ("id", "user", "_send", "_queue", "_max", "_wake", "_idle", "_pending", "closing",
                 "close_code", "close_reason", "gone", "subscriptions", "writer", "__weakref__")

    def __init__(self, user: User, send: Send, max_queue: int) -> None:
        self.id = next(_ids)
        self.user = user
        self._send = send
        self._queue: deque[str] = deque()
        self._max = max_queue
        self._wake = asyncio.Event()
        self._idle = False  # the writer is parked with nothing in flight: enqueue may write now
        self._pending: tuple[Coroutine[Any, Any, None], Any] | None = None  # a send that had to wait
        self.closing = False
        self.close_code = 1000
        self.close_reason = ""
        self.gone = False  # the peer closed or vanished: nothing more can be sent
        self.subscriptions: set[int] = set()
        self.writer: asyncio.Task[None] | None = None

    def enqueue(self, frame: str) -> None:
        """Send or queue one encoded frame; never awaits. Overflow closes the connection with 1013."""
        if self.closing:
            return
        if self._idle:
            self._write_now(frame)
            return
        if len(self._queue) >= self._max:
            log.info("closing slow connection %s of user %s: %d frames queued",
                     self.id, self.user.id, len(self._queue))
            self.close(CLOSE_TOO_SLOW, "too slow: outgoing queue full")
            return
        self._queue.append(frame)

    def _write_now(self, frame: str) -> None:
        coro = self._send({"type": "websocket.send", "text": frame})
        try:
            waiting_on = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return  # written
        except Exception:
            # uvicorn raises ClientDisconnected (an OSError) or RuntimeError once the peer is gone.
            self.disconnected(1006)
            return
        # The transport is paused: hand the half-run send to the writer and queue from now on.
        self._idle = False
        self._pending = (coro, waiting_on)  # type: ignore[assignment]
        self._wake.set()

    def close(self, code: int, reason: str = "") -> None:
        """Stop queueing and let the writer send the close frame (a slow client's queue is dropped)."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        if code == CLOSE_TOO_SLOW:
            self._queue.clear()
        self._wake.set()

    def disconnected(self, code: int) -> None:
        """The peer closed (or the socket died): stop the writer without a close frame."""
        self.gone = True
        if not self.closing:
            self.closing, self.close_code = True, code
        self._queue.clear()
        self._wake.set()

    def start(self) -> None:
        self.writer = asyncio.get_running_loop().create_task(self._write(), name=f"ws-writer-{self.id}")

    async def _write(self) -> None:
        send, queue, wake = self._send, self._queue, self._wake
        try:
            while True:
                if self._pending is not None:
                    coro, waiting_on = self._pending
                    self._pending = None
                    await _finish(coro, waiting_on)
                if queue:
                    await send({"type": "websocket.send", "text": queue.popleft()})
                    continue
                if self.closing:
                    break
                wake.clear()
                self._idle = True
                await wake.wait()
                self._idle = False
            if not self.gone:
                await send({"type": "websocket.close", "code": self.close_code, "reason": self.close_reason})
        except (OSError, RuntimeError, asyncio.CancelledError) as e:
            # Peer went away mid-write (uvicorn raises ClientDisconnected, an OSError).
            self._idle = False
            self.closing = True
            queue.clear()
            if isinstance(e, asyncio.CancelledError):
                raise
        except Exception:
            self._idle = False
            self.closing = True
            log.exception("writer of connection %s failed", self.id)

    async def finish(self, timeout: float = 5.0) -> None:
        """Wait for the writer to flush and close; cancel it if the peer won't take it."""
        if self.writer is None:
            return
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.writer), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.writer.cancel()


async def _finish(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Drive a coroutine that suspended outside any task to its end, as a Task would."""
    try:
        while True:
            if waiting_on is None:
                await asyncio.sleep(0)  # a bare yield: just let the loop run once
            else:
                # What Task.__step does with a yielded future: take it over, wait for it.
                waiting_on._asyncio_future_blocking = False
                try:
                    await waiting_on
                except Exception:
                    pass  # the coroutine sees the same outcome when it resumes
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return
    except asyncio.CancelledError:
        coro.close()
        raise
