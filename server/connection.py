"""Connection: one WebSocket's outgoing frames: written at once, or queued (bounded) behind a writer.

When nothing is queued and the socket is writable, `deliver()` writes at once: the event's
frame, framed once for all its recipients, straight to the socket's transport (`Direct`),
or else through uvicorn's `send` coroutine run by hand, which completes without suspending
unless the transport is paused. Only when it would wait (a slow reader) is a writer task
started to finish that send, and later frames queue behind it until the backlog is
written. So the common delivery costs no task switch and no per-socket framing, an idle
connection holds no task of its own, and a slow client still never blocks the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.protocol import OPEN, Protocol, Side

from .events import Event
from .records import User

log = logging.getLogger("chat.ws")

Send = Callable[[dict[str, Any]], Awaitable[None]]

CLOSE_TRY_LATER = 1013  # the close codes the server sends from more than one module
CLOSE_TOO_SLOW = CLOSE_TRY_LATER
CLOSE_UNAUTHORIZED = 4401

_ids = itertools.count(1)


class Connection:
    """Frames go out without awaiting; a client whose queue overflows is cut, never waited on."""

    __slots__ = ("id", "user", "_send", "_queue", "_max", "_idle", "_pending", "closing", "close_code",
                 "close_reason", "gone", "subscriptions", "writer", "close_timeout", "token", "closed_by_server",
                 "_direct", "__weakref__")

    def __init__(self, user: User, send: Send, max_queue: int, *, close_timeout: float = 2.0,
                 token: bytes = b"") -> None:
        self.id = next(_ids)
        self.user = user
        self.token = token  # the hash of the token it authenticated with
        self.close_timeout = close_timeout
        self._send = send
        self._queue: deque[Event] | None = None  # made on the first backlog
        self._max = max_queue
        self._idle = False  # no writer busy: deliver() may write at once (set by start())
        self._pending: tuple[Coroutine[Any, Any, None], Any] | None = None  # a send that had to wait
        self.closing = False
        self.closed_by_server = False
        self.close_code = 1000
        self.close_reason = ""
        self.gone = False  # the peer closed or vanished: nothing more can be sent
        self.subscriptions: set[int] = set()
        self.writer: asyncio.Task[None] | None = None  # only while a backlog or a close is being written
        self._direct: Direct | None = None

    @property
    def direct(self) -> bool:
        """Frames are written prepared, skipping uvicorn's per-socket framing (see `Direct`)."""
        return self._direct is not None

    def start(self) -> None:
        """Begin writing (the handshake is done)."""
        self._idle = True
        self._direct = Direct.of(self._send)

    def enqueue(self, frame: str) -> None:
        """Send or queue one encoded frame; never awaits."""
        self.deliver(Event(frame))

    def deliver(self, event: Event) -> None:
        """Send or queue an event's frame, which fan-out shares between all recipients; never
        awaits. Overflow closes the connection with 1013."""
        if self.closing:
            return
        if self._idle:
            direct = self._direct
            try:
                written = direct is not None and direct.write(event.wire)
            except Exception:  # the transport failed under us: this socket only, never the fan-out
                self.disconnected(1006)
                return
            if not written:
                self._write_now(event.send)
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= self._max:
            log.info("closing slow connection %s of user %s: %d frames queued", self.id, self.user.id, len(queue))
            self.close(CLOSE_TOO_SLOW, "too slow: outgoing queue full")
            return
        queue.append(event)

    def _write_now(self, message: dict[str, Any]) -> None:
        coro = self._send(message)
        try:
            waiting_on = coro.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return  # written
        except Exception:
            # uvicorn raises ClientDisconnected (an OSError) or RuntimeError once the peer is gone.
            self.disconnected(1006)
            return
        # The transport is paused: a writer task finishes this send; later frames queue behind it.
        self._idle = False
        self._pending = (coro, waiting_on)  # type: ignore[assignment]
        self._spawn()

    def close(self, code: int, reason: str = "") -> None:
        """Stop queueing and send the close frame after the backlog (a slow client's is dropped)."""
        if self.closing:
            return
        self.closing = True
        self.closed_by_server = True
        self.close_code = code
        self.close_reason = reason
        if code == CLOSE_TOO_SLOW:
            self._queue = None
            # A client that reads nothing never takes the close frame either: past the close
            # timeout its transport is aborted, so the megabytes buffered for it are freed now.
            asyncio.get_running_loop().call_later(self.close_timeout, self._abort_if_stuck)
        self._idle = False
        self._spawn()

    def _abort_if_stuck(self) -> None:
        if self.writer is not None and not self.writer.done() and reset(self._send):
            log.info("reset connection %s of user %s: it did not take its close frame", self.id, self.user.id)
            self.gone = True

    def disconnected(self, code: int) -> None:
        """The peer closed (or the socket died): nothing more is written, not even a close frame."""
        self.gone = True
        if not self.closing:
            self.closing, self.close_code = True, code
        self._idle = False
        self._queue = None

    def _spawn(self) -> None:
        if self.writer is None and not self.gone:
            self.writer = asyncio.get_running_loop().create_task(self._write(), name=f"ws-writer-{self.id}")

    async def _write(self) -> None:
        send = self._send
        try:
            while True:
                if self._pending is not None:
                    coro, waiting_on = self._pending
                    self._pending = None
                    await _finish(coro, waiting_on)
                if self.gone:
                    return
                if self._queue:
                    await send(self._queue.popleft().send)
                    continue
                if self.closing:
                    break
                # Backlog written: deliver() writes directly again, and this task ends.
                self._idle = True
                self._queue = None
                self.writer = None
                return
            await send({"type": "websocket.close", "code": self.close_code, "reason": self.close_reason})
        except (OSError, RuntimeError, asyncio.CancelledError) as e:
            # Peer went away mid-write (uvicorn raises ClientDisconnected, an OSError).
            self.gone = self.closing = True
            self._queue = None
            if isinstance(e, asyncio.CancelledError):
                raise
        except Exception:
            self.gone = self.closing = True
            log.exception("writer of connection %s failed", self.id)

    async def finish(self, timeout: float = 5.0) -> None:
        """Wait for the backlog and close frame to be written; give up on a peer that won't read."""
        writer = self.writer
        if writer is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            writer.cancel()


class Direct:
    """Writes a prepared text frame to the transport of uvicorn's websockets-sansio protocol,
    as its `send` would after framing the text itself (websockets' `Protocol.send_text`, no
    extensions, a server's frames unmasked), while the connection is open and writable.
    Otherwise `write` says no and the frame takes the ASGI `send`, with its flow control.

    It relies on that protocol's attributes (`conn`, `transport`, `writable`, `close_sent`,
    `disconnected`): `of` checks them and returns None for anything else (another server or
    protocol class, compression negotiated), so the ASGI path is the fallback, never a failure."""

    __slots__ = ("proto", "conn", "transport")

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.conn: Protocol = proto.conn
        self.transport: asyncio.WriteTransport = proto.transport

    @classmethod
    def of(cls, send: Send) -> Direct | None:
        proto = getattr(send, "__self__", None)
        conn = getattr(proto, "conn", None)
        if not isinstance(conn, Protocol) or conn.side is not Side.SERVER or conn.extensions:
            return None
        if not all(hasattr(proto, a) for a in ("transport", "writable", "close_sent", "disconnected")):
            return None
        return cls(proto)

    def write(self, wire: bytes) -> bool:
        proto, conn = self.proto, self.conn
        if proto.close_sent or proto.disconnected or not proto.writable.is_set() \
                or conn.state is not OPEN or conn.expect_continuation_frame or self.transport.is_closing():
            return False
        self.transport.write(wire)
        return True


def reset(send: Send) -> bool:
    """Reset the connection of a peer that will not read; False when there is no way to.

    ASGI can only ask for a close; uvicorn's `send` is a method of its protocol object, which
    holds the transport. The reset (SO_LINGER 0, then abort) drops what the kernel still
    buffers for the peer too."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


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
