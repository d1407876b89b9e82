"""SocketProtocol: uvicorn's sans-I/O WebSocket protocol, with less memory held per idle socket.

uvicorn takes the protocol class as its `ws` setting (`uvicorn.Config(ws=<class>)`), so
this is a plain subclass, not a patch. What an idle socket held, measured with tracemalloc
(bench/README.md, F4): an `asyncio.Queue` for incoming messages and an `asyncio.Event` for
writability, whose five deques cost 3.8 KB though a socket has one reader and rarely a
message waiting; and the handshake's request and response, with their headers, which
nothing reads once the 101 response is written (dropping the response saves ~1.3 KB; the
request's ~2.2 KB stays alive as a local of websockets' suspended parser generator).
tests/test_wsprotocol.py checks that uvicorn still uses these attributes only as assumed
here, so an upgrade that changes that fails a test rather than a socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class Inbox:
    """What uvicorn uses of `asyncio.Queue` (put_nowait, get, empty) for one reader: a list and
    at most one waiting future. A second concurrent reader is an error, not a silent race."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("a socket's messages have one reader at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class Gate:
    """What uvicorn uses of `asyncio.Event` (wait, set, clear, is_set); its waiters' list is made
    only while a send waits on a paused transport."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        while not self._open:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class SocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's protocol with an `Inbox` and a `Gate`, and no handshake kept after it is done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]
        self.writable.set()

    def start_keepalive(self) -> None:
        """Called once, right after the 101 response is written: from here on nothing reads the
        request or the response (uvicorn reads them in handle_connect and the accept)."""
        del self.request, self.response
        super().start_keepalive()
