"""Connection: one WebSocket's bounded outgoing queue, drained by its own writer task."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .records import User

log = logging.getLogger("chat.ws")

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_TOO_SLOW = 1013

_ids = itertools.count(1)


class Connection:
    """Frames are queued without awaiting; a client whose queue overflows is cut, never waited on."""

    __slots__ = ("id", "user", "_send", "_queue", "_max", "_wake", "closing", "close_code",
                 "close_reason", "gone", "subscriptions", "writer", "__weakref__")

    def __init__(self, user: User, send: Send, max_queue: int) -> None:
        self.id = next(_ids)
        self.user = user
        self._send = send
        self._queue: deque[str] = deque()
        self._max = max_queue
        self._wake = asyncio.Event()
        self.closing = False
        self.close_code = 1000
        self.close_reason = ""
        self.gone = False  # the peer closed or vanished: nothing more can be sent
        self.subscriptions: set[int] = set()
        self.writer: asyncio.Task[None] | None = None

    def enqueue(self, frame: str) -> None:
        """Queue one encoded frame; never awaits. Overflow closes the connection with 1013."""
        if self.closing:
            return
        if len(self._queue) >= self._max:
            log.info("closing slow connection %s of user %s: %d frames queued",
                     self.id, self.user.id, len(self._queue))
            self.close(CLOSE_TOO_SLOW, "too slow: outgoing queue full")
            return
        self._queue.append(frame)
        if len(self._queue) == 1:
            self._wake.set()

    def close(self, code: int, reason: str = "") -> None:
        """Stop queueing, drop what's queued, and let the writer send the close frame."""
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
                if not queue:
                    if self.closing:
                        break
                    wake.clear()
                    await wake.wait()
                    continue
                # Drain everything queued in one go; each frame is still its own message.
                while queue:
                    await send({"type": "websocket.send", "text": queue.popleft()})
            if not self.gone:
                await send({"type": "websocket.close", "code": self.close_code, "reason": self.close_reason})
        except (OSError, RuntimeError, asyncio.CancelledError) as e:
            # Peer went away mid-write (uvicorn raises ClientDisconnected, an OSError).
            self.closing = True
            queue.clear()
            if isinstance(e, asyncio.CancelledError):
                raise
        except Exception:
            self.closing = True
            log.exception("writer of connection %s failed", self.id)

    async def finish(self, timeout: float = 5.0) -> None:
        """Wait for the writer to flush and close; cancel it if the peer won't take it."""
        if self.writer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.writer), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.writer.cancel()
