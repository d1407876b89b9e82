"""Connection writes with plain values: eager writes, hand-off when the transport pauses, the 1013 cut."""

from __future__ import annotations

import asyncio
from typing import Any

from server.connection import Connection
from server.records import User


class PausableSend:
    """Behaves like uvicorn's send: waits while the transport is paused, then writes."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.out: list[Any] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.writable.wait()
        self.out.append(message.get("text", ("close", message.get("code"))))


async def started(max_queue: int = 10) -> tuple[Connection, PausableSend]:
    send = PausableSend()
    conn = Connection(User(1, "u", "u"), send, max_queue)
    conn.start()  # idle: no writer task exists until a write has to wait
    return conn, send


async def test_frames_are_written_at_once_while_the_socket_is_writable() -> None:
    conn, send = await started()
    conn.enqueue("a")
    conn.enqueue("b")
    assert send.out == ["a", "b"]  # before any task ran


async def test_a_paused_transport_hands_frames_to_the_writer_in_order() -> None:
    conn, send = await started()
    send.writable.clear()
    for f in ("a", "b", "c"):
        conn.enqueue(f)
    assert send.out == []
    await asyncio.sleep(0.01)
    assert send.out == []
    send.writable.set()
    await asyncio.sleep(0.01)
    assert send.out == ["a", "b", "c"]
    conn.enqueue("d")  # writable again: eager again
    assert send.out == ["a", "b", "c", "d"]


async def test_overflow_while_paused_closes_1013_and_drops_the_queue() -> None:
    conn, send = await started(max_queue=3)
    send.writable.clear()
    for i in range(10):
        conn.enqueue(f"m{i}")
    assert conn.closing and conn.close_code == 1013
    send.writable.set()
    await conn.finish(1.0)
    assert send.out == ["m0", ("close", 1013)]  # the frame already in flight, then the close


async def test_close_flushes_the_queue_then_sends_the_close_frame() -> None:
    conn, send = await started()
    send.writable.clear()
    conn.enqueue("x")
    conn.enqueue("y")
    conn.close(1001, "bye")
    conn.enqueue("z")  # after close: ignored
    send.writable.set()
    await conn.finish(1.0)
    assert send.out == ["x", "y", ("close", 1001)]
