"""Broker: carries a conversation's events to every server process that has listeners."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from .events import Event

log = logging.getLogger("chat.broker")

Deliver = Callable[[int, Event], None]


class Broker(Protocol):
    """publish() never awaits; deliver() is called for every event of a subscribed channel."""

    async def start(self, deliver: Deliver) -> None: ...
    def publish(self, cid: int, event: Event) -> None: ...
    def subscribe(self, cid: int) -> None: ...
    def unsubscribe(self, cid: int) -> None: ...
    async def close(self) -> None: ...


class LocalBroker:
    """One process: publishing is delivering."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, cid: int, event: Event) -> None:
        if self._deliver is not None:
            self._deliver(cid, event)

    def subscribe(self, cid: int) -> None:
        pass

    def unsubscribe(self, cid: int) -> None:
        pass

    async def close(self) -> None:
        self._deliver = None


class RedisBroker:
    """Several processes: events travel over Redis pub/sub, one channel per conversation.

    Publishing goes through a single writer task fed by an unbounded-in-time but bounded-in-size
    queue, so callers never await Redis. Every process, the publisher included, receives its
    own events back from Redis, which keeps one delivery order for all of them.
    """

    def __init__(self, url: str, prefix: str = "chat:conv:", max_pending: int = 100_000) -> None:
        import redis.asyncio as redis  # imported here: only multi-node deployments need it

        self._redis = redis.from_url(url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._prefix = prefix
        self._outbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(max_pending)
        self._changes: asyncio.Queue[tuple[bool, int]] = asyncio.Queue()
        self._deliver: Deliver | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._redis.ping()
        # A placeholder channel so the pub/sub connection exists before the first listener.
        await self._pubsub.subscribe(self._prefix + "_")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publisher()), loop.create_task(self._reader()),
                       loop.create_task(self._subscriber())]

    def publish(self, cid: int, event: Event) -> None:
        try:
            self._outbox.put_nowait((cid, event.to_bytes()))
        except asyncio.QueueFull:
            # The hub's gap filler reads stored messages back; live-only frames are lost.
            log.error("redis outbox full; dropping an event of conversation %s", cid)

    def subscribe(self, cid: int) -> None:
        self._changes.put_nowait((True, cid))

    def unsubscribe(self, cid: int) -> None:
        self._changes.put_nowait((False, cid))

    async def _publisher(self) -> None:
        while True:
            cid, data = await self._outbox.get()
            try:
                await self._redis.publish(f"{self._prefix}{cid}", data)
            except Exception:
                log.exception("redis publish failed for conversation %s", cid)

    async def _subscriber(self) -> None:
        while True:
            add, cid = await self._changes.get()
            try:
                if add:
                    await self._pubsub.subscribe(f"{self._prefix}{cid}")
                else:
                    await self._pubsub.unsubscribe(f"{self._prefix}{cid}")
            except Exception:
                log.exception("redis subscribe change failed for conversation %s", cid)

    async def _reader(self) -> None:
        plen = len(self._prefix)
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except Exception:
                log.exception("redis read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if msg is None or msg.get("type") != "message" or self._deliver is None:
                continue
            try:
                cid = int(msg["channel"][plen:])
                self._deliver(cid, Event.from_bytes(msg["data"]))
            except Exception:
                log.exception("bad event from redis")

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pubsub.aclose()
        await self._redis.aclose()
