"""Hub ordering with plain values: racing publishes still reach every subscriber in seq order."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import orjson

from server.broker import LocalBroker
from server.connection import Connection
from server.events import Event
from server.hub import Hub
from server.records import Message, User


class Wire:
    """Stands in for the ASGI server's send: records what the connection puts on the socket."""

    def __init__(self) -> None:
        self.frames: list[Any] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.frames.append(message.get("text", message["type"]))


def stored(seq: int) -> Message:
    return Message(id=seq, conversation_id=1, seq=seq, role="user", author=None, content=f"m{seq}",
                   model_used=None, status="complete", client_id=None, reply_to=None, reply_id=None,
                   prompt_tokens=None, completion_tokens=None, created_at=datetime.now(timezone.utc))


def msg(seq: int) -> Event:
    return Event(f"m{seq}", seq=seq)


async def make_hub(in_store: list[int] | None = None, gap: float = 0.05) -> tuple[Hub, list[tuple[int, int]]]:
    """A hub whose gap filler reads `in_store` seqs back, recording each read."""
    calls: list[tuple[int, int]] = []

    async def replay(cid: int, after: int, cap: int) -> tuple[list[Message], int]:
        calls.append((cid, after))
        return [stored(s) for s in in_store or [] if s > after], max(in_store or [0])

    hub = Hub(LocalBroker(), replay, replay_cap=500, gap_timeout=gap)
    await hub.start()
    return hub, calls


async def live(hub: Hub, cid: int, last_seq: int, name: str = "u", covered: dict[str, int] | None = None,
               frames: list[str] | None = None) -> tuple[Connection, Wire]:
    wire = Wire()
    conn = Connection(User(abs(hash(name)) % 1000 + 10, name, name), wire, 100)
    conn.start()
    await hub.subscribe(conn, cid)
    await hub.join(conn, cid)
    hub.go_live(conn, cid, last_seq, frames or ["subscribed"], covered or {})
    return conn, wire


def messages(wire: Wire) -> list[str]:
    return [f for f in wire.frames if f.startswith("m")]


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
        assert messages(wire) == ["m1", "m2", "m3", "m4", "m5"]


async def test_duplicates_are_dropped() -> None:
    hub, _ = await make_hub()
    _, a = await live(hub, 1, 0)
    for seq in (1, 1, 2, 1, 2, 3):
        hub.publish(1, msg(seq))
    await drain()
    assert messages(a) == ["m1", "m2", "m3"]


async def test_reply_frames_wait_for_their_message_and_unpositioned_frames_never_wait() -> None:
    hub, _ = await make_hub()
    _, a = await live(hub, 1, 0)
    hub.publish(1, msg(2))  # the reply's message, published before seq 1
    hub.publish(1, Event("start", after=2, reply_id="r", step=0))
    hub.publish(1, Event("d0", after=2, reply_id="r", step=1))
    hub.publish(1, Event("typing"))
    hub.publish(1, msg(1))
    await drain()
    assert a.frames[1:] == ["typing", "m1", "m2", "start", "d0"]


async def test_a_gap_that_never_fills_is_read_back_from_the_store() -> None:
    hub, calls = await make_hub(in_store=[1, 2, 3])
    _, a = await live(hub, 1, 0)
    hub.publish(1, msg(3))  # seqs 1 and 2 were committed by a publisher that died
    await asyncio.sleep(0.2)
    assert calls == [(1, 0)]
    seqs = [orjson.loads(f)["message"]["seq"] if f.startswith("{") else int(f[1:])
            for f in a.frames if f != "subscribed"]
    assert seqs == [1, 2, 3]  # 3 came from the store too; the held copy was a duplicate


async def test_events_during_replay_are_buffered_and_deduplicated() -> None:
    hub, _ = await make_hub()
    await live(hub, 1, 0, "old")
    hub.publish(1, msg(1))
    wire = Wire()
    conn = Connection(User(7, "new", "new"), wire, 100)
    conn.start()
    await hub.subscribe(conn, 1)  # replay query "running"
    hub.publish(1, msg(2))  # stored and published during the replay: the replay saw it too
    hub.publish(1, msg(3))  # committed after the replay's snapshot
    await hub.join(conn, 1)
    hub.go_live(conn, 1, 2, ["m1", "m2", "subscribed"], {})
    await drain()
    assert wire.frames == ["m1", "m2", "subscribed", "m3"]


async def test_a_late_subscriber_gets_only_the_reply_frames_its_snapshot_did_not_cover() -> None:
    hub, _ = await make_hub()
    await live(hub, 1, 0, "a")
    hub.publish(1, msg(1))
    hub.publish(1, Event("start", after=1, reply_id="r", step=0))
    hub.publish(1, Event("d0", after=1, reply_id="r", step=1))
    wire = Wire()
    conn = Connection(User(9, "late", "late"), wire, 100)
    conn.start()
    await hub.subscribe(conn, 1)
    hub.publish(1, Event("d1", after=1, reply_id="r", step=2))  # during its replay: inside the snapshot
    await hub.join(conn, 1)
    # The snapshot (taken now) covers the reply's first three frames; d2 comes after it.
    hub.go_live(conn, 1, 1, ["subscribed"], {"r": 3})
    hub.publish(1, Event("d1-late", after=1, reply_id="r", step=2))  # a broker delivering late
    hub.publish(1, Event("d2", after=1, reply_id="r", step=3))
    hub.publish(1, Event("other", after=1, reply_id="s", step=0))
    await drain()
    assert wire.frames == ["subscribed", "d2", "other"]


async def test_presence_is_announced_on_the_first_join_and_the_last_leave_only() -> None:
    hub, _ = await make_hub()
    watcher, w = await live(hub, 1, 0, "watcher")
    one, _ = await live(hub, 1, 0, "bob")
    two, _ = await live(hub, 1, 0, "bob")
    assert [u.username for u in hub.presence.present(1)] == ["watcher", "bob"]
    hub.drop(one)
    assert not [f for f in w.frames if '"left"' in f]
    hub.drop(two)
    await drain()
    states = [f for f in w.frames if '"presence"' in f]
    assert len(states) == 2 and '"joined"' in states[0] and '"left"' in states[1]
    assert [u.username for u in hub.presence.present(1)] == ["watcher"]


async def test_overflowing_connection_is_closed_1013_and_others_unaffected() -> None:
    hub, _ = await make_hub()
    slow_wire = Wire()
    slow = Connection(User(1, "slow", "slow"), slow_wire, 3)  # never started: every frame queues
    await hub.subscribe(slow, 1)
    await hub.join(slow, 1)
    hub.go_live(slow, 1, 0, ["subscribed"], {})
    _, fast = await live(hub, 1, 0, "fast")
    for seq in range(1, 11):
        hub.publish(1, msg(seq))
    assert slow.closing and slow.close_code == 1013
    await drain()
    assert messages(fast) == [f"m{i}" for i in range(1, 11)]


async def test_a_gap_too_large_to_fill_asks_the_rooms_subscribers_to_resume_instead_of_holding_forever() -> None:
    hub, calls = await make_hub(in_store=[])  # the store has nothing it may replay
    conn, _ = await live(hub, 1, 0)
    hub.publish(1, msg(700))  # seqs 1..699 will never come
    await asyncio.sleep(0.2)
    assert calls and conn.closing and conn.close_code == 1013
    assert 1 not in hub.channels


async def test_a_subscription_dropped_before_it_went_live_leaves_presence_as_it_was() -> None:
    hub, _ = await make_hub()
    watcher, w = await live(hub, 1, 0, "watcher")
    conn = Connection(User(77, "brief", "brief"), Wire(), 100)
    conn.start()
    await hub.subscribe(conn, 1)
    await hub.join(conn, 1)  # counted, then removed before go_live (e.g. taken out of the room)
    hub.unsubscribe(conn, 1)
    await drain()
    assert [u.username for u in hub.presence.present(1)] == ["watcher"]
    states = [orjson.loads(f)["state"] for f in w.frames if '"presence"' in f]
    assert states == ["joined", "left"]
