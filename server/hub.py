"""Hub: which local connections listen to which conversation, and in-order fan-out to them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .broker import Broker
from .connection import Connection
from .events import AI_DELTA, AI_END, AI_START, UPDATED, Event, encode
from .records import User

log = logging.getLogger("chat.hub")

# (conversation id, last delivered seq) -> the stored messages after it, as events
Fill = Callable[[int, int], Awaitable[list[Event]]]
# conversation id -> replies this process is generating (seed for a channel born mid-turn)
Seed = Callable[[int], list[dict[str, Any]]]


class Subscription:
    """One connection's interest in one conversation."""

    __slots__ = ("conn", "buffer", "skip_through")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.buffer: list[Event] | None = []  # live events held while the replay runs
        self.skip_through = 0  # seqs up to this one were sent by the replay


class Channel:
    """A conversation as seen by this process: subscribers, delivery position, live replies."""

    __slots__ = ("id", "subs", "last", "held", "timer", "streaming", "users", "ready")

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.subs: dict[Connection, Subscription] = {}
        self.last: int | None = None  # highest seq delivered, in order; None until known
        self.held: list[Event] = []  # events waiting for an earlier seq
        self.timer: asyncio.TimerHandle | None = None
        self.streaming: dict[str, dict[str, Any]] = {}  # reply_id -> snapshot
        self.users: dict[int, list[Any]] = {}  # user id -> [User, live subscription count]
        self.ready: asyncio.Future[None] | None = None  # the broker listens to this channel


class Hub:
    """Fan-out never awaits: frames go onto each connection's bounded queue."""

    def __init__(self, broker: Broker, fill: Fill, seed: Seed, gap_timeout: float = 1.0) -> None:
        self.broker = broker
        self.fill = fill
        self.seed = seed
        self.gap_timeout = gap_timeout
        self.channels: dict[int, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.broker.start(self.deliver)

    async def close(self) -> None:
        for ch in self.channels.values():
            if ch.timer:
                ch.timer.cancel()
        await self.broker.close()

    # -- subscriptions --------------------------------------------------------

    async def subscribe(self, conn: Connection, cid: int) -> None:
        """Start listening (buffered) before the replay query, so nothing falls between."""
        ch = self.channels.get(cid)
        if ch is None:
            ch = self.channels[cid] = Channel(cid)
            ch.ready = asyncio.ensure_future(self.broker.subscribe(cid))
        try:
            await asyncio.shield(ch.ready)  # every subscriber waits until the broker listens
        except BaseException:
            if not ch.subs and self.channels.get(cid) is ch:
                del self.channels[cid]
            raise
        old = ch.subs.get(conn)
        if old is not None:
            self._leave(ch, old)
        ch.subs[conn] = Subscription(conn)
        conn.subscriptions.add(cid)

    def go_live(self, conn: Connection, cid: int, last_seq: int, replay: list[str],
                subscribed: Callable[[list[dict[str, Any]], list[dict[str, Any]]], str]) -> None:
        """Send the replay, then `subscribed`, then what arrived meanwhile minus what the replay had."""
        ch = self.channels[cid]
        sub = ch.subs.get(conn)
        if sub is None or sub.buffer is None:
            return
        if ch.last is None:
            ch.last = last_seq
            for snap in self.seed(cid):
                ch.streaming.setdefault(snap["reply_id"], snap)
        entry = ch.users.setdefault(conn.user.id, [conn.user, 0])
        entry[1] += 1
        if entry[1] == 1:
            self.publish(cid, presence(cid, conn.user, "joined"))
        present = [u.wire() for u, _ in ch.users.values()]
        streaming = [{**s, "text": "".join(s["text"])} for s in ch.streaming.values()]
        for frame in replay:
            conn.enqueue(frame)
        conn.enqueue(subscribed(present, streaming))
        buffered, sub.buffer = sub.buffer, None
        sub.skip_through = max(last_seq, sub.skip_through)
        for ev in buffered:
            if ev.kind in (AI_START, AI_DELTA) and ev.reply_id in ch.streaming:
                continue  # already inside the snapshot's text
            self._send_one(sub, ev)
        self._release(ch)

    def unsubscribe(self, conn: Connection, cid: int) -> bool:
        ch = self.channels.get(cid)
        sub = ch.subs.pop(conn, None) if ch else None
        conn.subscriptions.discard(cid)
        if ch is None or sub is None:
            return False
        self._leave(ch, sub)
        if not ch.subs:
            if ch.timer:
                ch.timer.cancel()
            del self.channels[cid]
            self.broker.unsubscribe(cid)
        return True

    def drop(self, conn: Connection) -> None:
        """Forget a closed connection everywhere."""
        for cid in list(conn.subscriptions):
            self.unsubscribe(conn, cid)

    def _leave(self, ch: Channel, sub: Subscription) -> None:
        if sub.buffer is not None:
            return  # never went live, never counted as present
        entry = ch.users.get(sub.conn.user.id)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del ch.users[sub.conn.user.id]
            self.publish(ch.id, presence(ch.id, sub.conn.user, "left"))

    def is_subscribed(self, conn: Connection, cid: int) -> bool:
        ch = self.channels.get(cid)
        return ch is not None and conn in ch.subs

    # -- fan-out --------------------------------------------------------------

    def publish(self, cid: int, event: Event) -> None:
        """Hand an event to the broker, which delivers it on every node; never awaits."""
        self.broker.publish(cid, event)

    def deliver(self, cid: int, ev: Event) -> None:
        """Called by the broker: deliver in seq order, holding what arrives early."""
        ch = self.channels.get(cid)
        if ch is None:
            return
        if ch.last is None or ch.held or not self._ready(ch, ev):
            if ev.seq is not None and ch.last is not None and ev.seq <= ch.last:
                return  # duplicate
            ch.held.append(ev)
            if ch.last is not None:
                self._release(ch)
            return
        self._send(ch, ev)

    @staticmethod
    def _ready(ch: Channel, ev: Event) -> bool:
        last = ch.last or 0
        if ev.seq is not None:
            return ev.seq == last + 1
        return ev.after is None or ev.after <= last

    def _release(self, ch: Channel) -> None:
        """Deliver held events that became ready; arm the gap timer for the rest."""
        progress = True
        while ch.held and progress:
            progress = False
            for i, ev in enumerate(ch.held):
                if ev.seq is not None and ev.seq <= (ch.last or 0):
                    del ch.held[i]
                    progress = True
                    break
                if self._ready(ch, ev):
                    del ch.held[i]
                    self._send(ch, ev)
                    progress = True
                    break
        if ch.held and ch.timer is None:
            ch.timer = asyncio.get_running_loop().call_later(self.gap_timeout, self._gap, ch)
        elif not ch.held and ch.timer is not None:
            ch.timer.cancel()
            ch.timer = None

    def _gap(self, ch: Channel) -> None:
        """A seq is late (its publisher died, or a broker dropped it): read it from the store."""
        ch.timer = None
        if not ch.held or self.channels.get(ch.id) is not ch:
            return
        log.warning("conversation %s: gap after seq %s, filling from the store", ch.id, ch.last)
        task = asyncio.get_running_loop().create_task(self._fill(ch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, ch: Channel) -> None:
        try:
            events = await self.fill(ch.id, ch.last or 0)
        except Exception:
            log.exception("filling conversation %s failed", ch.id)
            events = []
        for ev in events:
            if ev.seq is not None and ev.seq == (ch.last or 0) + 1:
                self._send(ch, ev)
        self._release(ch)

    def _send(self, ch: Channel, ev: Event) -> None:
        if ev.seq is not None:
            ch.last = ev.seq
        kind = ev.kind
        if kind:
            self._track(ch, ev)
        for sub in ch.subs.values():
            self._send_one(sub, ev)
        if kind == UPDATED and ev.members is not None:
            members = set(ev.members)
            for conn in [c for c in ch.subs if c.user.id not in members]:
                self.unsubscribe(conn, ch.id)

    @staticmethod
    def _send_one(sub: Subscription, ev: Event) -> None:
        if sub.buffer is not None:
            sub.buffer.append(ev)
        elif ev.seq is not None and ev.seq <= sub.skip_through:
            return
        elif ev.skip_user is None or sub.conn.user.id != ev.skip_user:
            sub.conn.deliver(ev.send)

    @staticmethod
    def _track(ch: Channel, ev: Event) -> None:
        """Keep each live reply's text so far, for `subscribed.streaming`."""
        if ev.kind == AI_DELTA:
            snap = ch.streaming.get(ev.reply_id)  # type: ignore[arg-type]
            if snap is not None:
                snap["text"].append(ev.text)
        elif ev.kind == AI_START and ev.reply_id:
            ch.streaming[ev.reply_id] = {"reply_id": ev.reply_id, "model": ev.text, "text": [],
                                         **(ev.meta or {})}
        elif ev.kind == AI_END:
            ch.streaming.pop(ev.reply_id, None)  # type: ignore[arg-type]


def presence(cid: int, user: User, state: str) -> Event:
    return Event(encode({"type": "presence", "conversation_id": cid, "user": user.wire(),
                         "state": state}), skip_user=user.id)
