"""SocketProtocol's stand-ins for asyncio.Queue and asyncio.Event, and the uvicorn code they assume."""

from __future__ import annotations

import asyncio
import inspect
import re

import pytest
from uvicorn.protocols.websockets import websockets_sansio_impl

from server.wsprotocol import Gate, Inbox, SocketProtocol

SOURCE = inspect.getsource(websockets_sansio_impl)


def test_uvicorn_uses_only_what_the_stand_ins_have() -> None:
    """An upgrade of uvicorn that uses more of the queue or the event fails here, not on a socket."""
    assert set(re.findall(r"self\.queue\.(\w+)", SOURCE)) <= {"put_nowait", "get", "empty"}
    assert set(re.findall(r"self\.writable\.(\w+)", SOURCE)) <= {"wait", "set", "clear", "is_set"}
    assert "def start_keepalive" in SOURCE


def test_the_handshake_is_read_only_in_connect_and_accept() -> None:
    """SocketProtocol drops the request and response once the 101 is written (start_keepalive)."""
    users = {name for name, fn in inspect.getmembers(websockets_sansio_impl.WebSocketsSansIOProtocol,
                                                     inspect.isfunction)
             if re.search(r"self\.(request|response)\b", inspect.getsource(fn))}
    assert users <= {"handle_connect", "send"}
    send = inspect.getsource(websockets_sansio_impl.WebSocketsSansIOProtocol.send)
    accept = send.index('"websocket.accept"')
    assert send.rindex("self.response") < send.index("self.start_keepalive()", accept)
    assert issubclass(SocketProtocol, websockets_sansio_impl.WebSocketsSansIOProtocol)


async def test_inbox_in_order_and_waits() -> None:
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty()
    waiting = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait(3)
    assert await waiting == 3


async def test_inbox_one_reader_and_cancel_loses_nothing() -> None:
    inbox = Inbox()
    first = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await inbox.get()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    inbox.put_nowait("x")
    assert await inbox.get() == "x"


async def test_gate_wakes_every_waiter() -> None:
    gate = Gate()
    assert not gate.is_set()
    waiters = [asyncio.ensure_future(gate.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gate.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    gate.clear()
    cancelled = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert gate._waiters == []
    gate.set()
    assert await gate.wait() is True
