"""Hub: which local connections listen to which conversation, in-order fan-out to them, presence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from . import protocol
from .broker import Broker
from .connection import CLOSE_TRY_LATER, Connection
from .errors import NotFound
from .events import Event
from .presence import LocalPresence, Presence
from .records import Message, User

# (conversation, after seq, cap) -> (up to `cap` stored messages after it, or none if more; last seq)
Replay = Callable[[int, int, int], Awaitable[tuple[list[Message], int]]]

log = logging.getLogger("chat.hub")


class Subscription:
    """One connection's interest in one conversation."""

    __slots__ = ("conn", "buffer", "skip_through", "covered", "joined")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.joined = False  # counted as present (see join)
        self.buffer: list[Event] | None = []  # live events held while the replay runs
        self.skip_through = 0  # seqs up to this one were sent by the replay
        # reply id -> its frames before this step were in the snapshot; None when none were
        self.covered: dict[str, int] | None = None


class Channel:
    """A conversation as seen by this process: subscribers and the delivery position."""

    __slots__ = ("id", "subs", "last", "held", "timer", "ready")

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.subs: dict[Connection, Subscription] = {}
        self.last: int | None = None  # highest seq delivered, in order; None until known
        self.held: list[Event] = []  # events waiting for an earlier seq
        self.timer: asyncio.TimerHandle | None = None
        self.ready: asyncio.Future[None] | None = None  # the broker listens to this channel


class Hub:
    """Fan-out never awaits: frames go onto each connection's bounded queue."""

    def __init__(self, broker: Broker, replay: Replay, replay_cap: int, gap_timeout: float = 1.0,
                 presence: Presence | None = None) -> None:
        self.broker = broker
        self.replay = replay  # reads a gap's messages back from the store
        self.replay_cap = replay_cap
        self.gap_timeout = gap_timeout
        self.presence: Presence = presence or LocalPresence()
        self.presence.announce = self._announce
        self.channels: dict[int, Channel] = {}
        self.by_user: dict[int, set[Connection]] = {}  # every open connection, by its user
        self.delivered = 0  # frames handed to connections (read by the metrics at scrape time)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.broker.start(self.deliver)

    async def close(self) -> None:
        for ch in self.channels.values():
            if ch.timer:
                ch.timer.cancel()
        await self.broker.close()

    # -- connections ------------------------------------------------------------

    def connect(self, conn: Connection) -> None:
        self.by_user.setdefault(conn.user.id, set()).add(conn)

    def connections_of(self, user_id: int) -> set[Connection]:
        return self.by_user.get(user_id, set())

    def connections(self) -> list[Connection]:
        return [conn for conns in self.by_user.values() for conn in conns]

    def subscription_count(self) -> int:
        return sum(len(ch.subs) for ch in self.channels.values())

    def drop(self, conn: Connection) -> None:
        """Forget a closed connection everywhere."""
        for cid in list(conn.subscriptions):
            self.unsubscribe(conn, cid)
        conns = self.by_user.get(conn.user.id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_user[conn.user.id]

    # -- subscriptions --------------------------------------------------------

    async def subscribe(self, conn: Connection, cid: int) -> None:
        """Start listening (buffered) before the replay query, so nothing falls between."""
        ch = self.channels.get(cid)
        if ch is None:
            ch = self.channels[cid] = Channel(cid)
            ch.ready = asyncio.ensure_future(self.broker.subscribe(cid))
        try:
            await asyncio.shield(ch.ready)  # type: ignore[arg-type]  # every subscriber waits for the broker
        except BaseException:
            if not ch.subs and self.channels.get(cid) is ch:
                del self.channels[cid]
            raise
        old = ch.subs.get(conn)
        if old is not None:
            self._leave(ch, old)
        ch.subs[conn] = Subscription(conn)
        conn.subscriptions.add(cid)

    async def join(self, conn: Connection, cid: int) -> list[User]:
        """Count a buffering subscription as present (the room hears of a first join); who is present.

        With shared presence this asks Redis; news published meanwhile lands in the
        subscription's buffer and follows `subscribed`, so the list plus the news is exact."""
        ch = self.channels.get(cid)
        sub = ch.subs.get(conn) if ch else None
        if ch is None or sub is None or sub.buffer is None:
            raise NotFound(f"conversation {cid} not found")  # removed from it meanwhile
        sub.joined = True  # from here a drop counts the leave, even while the join is in flight
        return await self.presence.join(cid, conn.user)

    def go_live(self, conn: Connection, cid: int, last_seq: int, frames: list[str],
                covered: dict[str, int]) -> None:
        """Send `frames` (the replay and `subscribed`), then what arrived meanwhile minus what the
        replay (seqs up to `last_seq`) and the streaming snapshot (`covered` steps) already had."""
        ch = self.channels.get(cid)
        sub = ch.subs.get(conn) if ch else None
        if ch is None or sub is None:
            raise NotFound(f"conversation {cid} not found")  # removed from it meanwhile
        if ch.last is None:
            ch.last = last_seq
        for frame in frames:
            conn.enqueue(frame)
        buffered, sub.buffer = sub.buffer or [], None
        sub.skip_through = max(last_seq, sub.skip_through)
        sub.covered = covered or None
        for ev in buffered:
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

    def _leave(self, ch: Channel, sub: Subscription) -> None:
        if not sub.joined:
            return  # never counted as present
        self.presence.leave(ch.id, sub.conn.user)

    def _announce(self, cid: int, user: User, state: str) -> None:
        """Presence news (a user's first subscription, or last one, gone): to the room."""
        self.publish(cid, _presence(cid, user, state))

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
            missed, _ = await self.replay(ch.id, ch.last or 0, self.replay_cap)
        except Exception as e:  # the database may be down: the timer tries again
            log.warning("filling conversation %s failed: %r", ch.id, e)
            self._release(ch)
            return
        before = ch.last
        for msg in missed:
            if msg.seq == (ch.last or 0) + 1:
                self._send(ch, protocol.message_event(msg))
        if ch.last == before and ch.held and not missed:
            # More is missing than a replay may carry: rather than hold the room forever, its
            # subscribers here reconnect and resume with `after` (and page the history).
            log.warning("conversation %s: cannot fill the gap after seq %s; asking its subscribers to resume",
                        ch.id, ch.last)
            for conn in list(ch.subs):
                self.unsubscribe(conn, ch.id)
                conn.close(CLOSE_TRY_LATER, "missed too much: resume with after")
            return
        self._release(ch)

    def _send(self, ch: Channel, ev: Event) -> None:
        if ev.seq is not None:
            ch.last = ev.seq
        self.delivered += len(ch.subs)
        for sub in ch.subs.values():
            self._send_one(sub, ev)
        if ev.members is not None:
            members = set(ev.members)
            for conn in [c for c in ch.subs if c.user.id not in members]:
                self.unsubscribe(conn, ch.id)

    @staticmethod
    def _send_one(sub: Subscription, ev: Event) -> None:
        if sub.buffer is not None:
            sub.buffer.append(ev)
            return
        if ev.seq is not None and ev.seq <= sub.skip_through:
            return
        if sub.covered and ev.reply_id is not None and ev.reply_id in sub.covered:
            if ev.step is not None and ev.step < sub.covered[ev.reply_id]:
                return  # already inside the snapshot's text
            del sub.covered[ev.reply_id]
        if ev.skip_user is None and ev.only_user is None:  # nearly every frame
            sub.conn.deliver(ev)
            return
        uid = sub.conn.user.id
        if uid != ev.skip_user and (ev.only_user is None or uid == ev.only_user):
            sub.conn.deliver(ev)


def _presence(cid: int, user: User, state: str) -> Event:
    return Event(protocol.encode(protocol.presence(cid, user, state)), skip_user=user.id)
