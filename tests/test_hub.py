"""Hub ordering with plain values: racing publishes still reach every subscriber in seq order."""

from __future__ import annotations

import asyncio
from typing import Any

from server.broker import LocalBroker
from server.connection import Connection
from server.events import AI_DELTA, AI_START, Event
from server.hub import Hub
from server.records import User


class Wire:
    """Stands in for the ASGI server's send: records what the writer puts on the socket."""

    def __init__(self) -> None:
        self.frames: list[Any] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.frames.append(message.get("text", message["type"]))


def msg(seq: int) -> Event:
    return Event(f"m{seq}", kind="message", seq=seq)


async def make_hub(fill_events: list[Event] | None = None, gap: float = 0.05) -> tuple[Hub, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []

    async def fill(cid: int, after: int) -> list[Event]:
        calls.append((cid, after))
        return [e for e in (fill_events or []) if e.seq and e.seq > after]

    hub = Hub(LocalBroker(), fill, lambda cid: [], gap_timeout=gap)
    await hub.start()
    return hub, calls


async def live(hub: Hub, cid: int, last_seq: int, name: str = "u") -> tuple[Connection, Wire]:
    wire = Wire()
    conn = Connection(User(hash(name) % 1000, name, name), wire, 100)
    conn.start()
    await hub.subscribe(conn, cid)
    hub.go_live(conn, cid, last_seq, [], lambda present, streaming: "subscribed")
    return conn, wire


async def drain() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_out_of_order_publishes_are_delivered_in_seq_order() -> None:
    hub, _ = await make_hub()
    _, a = await live(hub, 1, 0, "a")
    _, b = await live(hub, 1, 0, "b")
    for seq in (2, 4, 1, 3, 5):
        hub.publish(1, msg(seq))
    await drain()
    for wire in (a, b):
        assert [f for f in wire.frames if f.startswith("m")] == ["m1", "m2", "m3", "m4", "m5"]


async def test_duplicates_are_dropped() -> None:
    hub, _ = await make_hub()
    _, a = await live(hub, 1, 0)
    for seq in (1, 1, 2, 1, 2, 3):
        hub.publish(1, msg(seq))
    await drain()
    assert [f for f in a.frames if f.startswith("m")] == ["m1", "m2", "m3"]


async def test_reply_frames_wait_for_their_message() -> None:
    hub, _ = await make_hub()
    _, a = await live(hub, 1, 0)
    hub.publish(1, msg(2))  # the reply's message, published before seq 1
    hub.publish(1, Event("start", kind=AI_START, after=2, reply_id="r", text="echo:echo"))
    hub.publish(1, Event("d0", kind=AI_DELTA, after=2, reply_id="r", text="x"))
    hub.publish(1, Event("typing"))  # frames with no position are never held
    hub.publish(1, msg(1))
    await drain()
    assert a.frames[1:] == ["typing", "m1", "m2", "start", "d0"]


async def test_a_gap_that_never_fills_is_read_back_from_the_store() -> None:
    hub, calls = await make_hub(fill_events=[msg(1), msg(2)])
    _, a = await live(hub, 1, 0)
    hub.publish(1, msg(3))  # seqs 1 and 2 were committed by a publisher that died
    await asyncio.sleep(0.2)
    assert calls == [(1, 0)]
    assert [f for f in a.frames if f.startswith("m")] == ["m1", "m2", "m3"]


async def test_events_during_replay_are_buffered_and_deduplicated() -> None:
    hub, _ = await make_hub()
    _, old = await live(hub, 1, 0, "old")
    hub.publish(1, msg(1))
    wire = Wire()
    conn = Connection(User(7, "new", "new"), wire, 100)
    conn.start()
    await hub.subscribe(conn, 1)  # replay query "running"
    hub.publish(1, msg(2))  # stored and published during the replay: the replay saw it too
    hub.publish(1, msg(3))  # committed after the replay's snapshot
    hub.go_live(conn, 1, 2, ["m1", "m2"], lambda present, streaming: "subscribed")
    await drain()
    assert wire.frames == ["m1", "m2", "subscribed", "m3"]


async def test_late_subscriber_gets_the_text_so_far_and_only_newer_deltas() -> None:
    hub, _ = await make_hub()
    await live(hub, 1, 0, "a")
    hub.publish(1, msg(1))
    hub.publish(1, Event("start", kind=AI_START, after=1, reply_id="r", text="echo:echo", meta={"seq": 1}))
    hub.publish(1, Event("d0", kind=AI_DELTA, after=1, reply_id="r", text="Hel"))
    wire = Wire()
    conn = Connection(User(9, "late", "late"), wire, 100)
    conn.start()
    await hub.subscribe(conn, 1)
    hub.publish(1, Event("d1", kind=AI_DELTA, after=1, reply_id="r", text="lo"))  # during its replay
    seen: list[Any] = []
    hub.go_live(conn, 1, 1, [], lambda present, streaming: seen.append(streaming) or "subscribed")
    hub.publish(1, Event("d2", kind=AI_DELTA, after=1, reply_id="r", text="!"))
    await drain()
    assert seen[0][0]["text"] == "Hello" and seen[0][0]["model"] == "echo:echo"
    assert wire.frames == ["subscribed", "d2"]


async def test_overflowing_connection_is_closed_1013_and_others_unaffected() -> None:
    hub, _ = await make_hub()
    slow_wire = Wire()
    slow = Connection(User(1, "slow", "slow"), slow_wire, 3)  # writer never started: never drains
    await hub.subscribe(slow, 1)
    hub.go_live(slow, 1, 0, [], lambda p, s: "subscribed")
    _, fast = await live(hub, 1, 0, "fast")
    for seq in range(1, 11):
        hub.publish(1, msg(seq))
    assert slow.closing and slow.close_code == 1013
    await drain()
    assert [f for f in fast.frames if f.startswith("m")] == [f"m{i}" for i in range(1, 11)]
