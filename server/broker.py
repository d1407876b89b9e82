"""Broker: carries a conversation's events to every server process that has listeners."""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from .events import Event

log = logging.getLogger("chat.broker")

Deliver = Callable[[int, Event], None]
# (topic, payload) -> an answer, or None when this process has nothing to say (another may)
Answer = Callable[[str, dict[str, Any]], Awaitable["dict[str, Any] | None"]]
_PIPELINE = 512  # events per pipeline at most
_STAMP = struct.Struct("!d")  # the publish time (wall clock, seconds) after the origin on the Redis wire


class Broker(Protocol):
    """publish() never awaits; deliver() is called for every event of a subscribed channel.
    ask() puts a question to the other processes; the first that answers wins."""

    on_ask: Answer | None
    shared: bool  # other processes may hold state this one lacks (True for Redis)

    async def start(self, deliver: Deliver) -> None: ...
    def publish(self, cid: int, event: Event) -> None: ...
    async def subscribe(self, cid: int) -> None:
        """Returns once events published from now on will be delivered here."""
    def unsubscribe(self, cid: int) -> None: ...
    async def ask(self, topic: str, payload: dict[str, Any], timeout: float,
                  want: int = 1) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


class LocalBroker:
    """One process: publishing is delivering, and there is nobody else to ask."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self.on_ask: Answer | None = None
        self.shared = False

    async def ask(self, topic: str, payload: dict[str, Any], timeout: float,
                  want: int = 1) -> list[dict[str, Any]]:
        return []

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def publish(self, cid: int, event: Event) -> None:
        if self._deliver is not None:
            self._deliver(cid, event)

    async def subscribe(self, cid: int) -> None:
        pass

    def unsubscribe(self, cid: int) -> None:
        pass

    async def close(self) -> None:
        self._deliver = None


class RedisBroker:
    """Several processes: events travel over Redis pub/sub, one channel per conversation.

    An event is delivered to this process's own subscribers at once, and published for the
    others through one writer task fed by a bounded queue, so callers never await Redis; an
    event coming back from Redis with this process's origin is skipped. While Redis is down
    each process keeps serving its own subscribers; other processes catch up through the
    hub's gap fill (stored messages) when it is back, and resubscribing happens by itself.
    """

    def __init__(self, url: str, prefix: str = "chat:conv:", max_pending: int = 100_000,
                 on_lag: Callable[[float], None] | None = None) -> None:
        import redis.asyncio as redis  # imported here: only multi-node deployments need it

        self._redis = redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10)
        self._pubsub = self._redis.pubsub()
        self._prefix = prefix
        self._origin = secrets.token_hex(4).encode()  # 8 bytes that mark this process's events
        self._outbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(max_pending)
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._wanted: set[int] = set()
        self._deliver: Deliver | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._down = False  # Redis was unreachable at the last attempt
        self._on_lag = on_lag  # seconds from another process's publish to delivery here
        self.on_ask: Answer | None = None
        self.shared = True
        self._questions = prefix.split(":", 1)[0] + ":ask"  # "chat:ask": questions to every process
        self._answers = prefix.split(":", 1)[0] + ":answer"
        self._asked: dict[str, tuple[list[dict[str, Any]], int, asyncio.Future[None]]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    @property
    def redis(self) -> Any:
        """The client, for the state shared beside the events (presence, counts, rate limits)."""
        return self._redis

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._redis.ping()
        # The question and answer channels; the pub/sub connection exists before the first listener.
        await self._pubsub.subscribe(self._questions, self._answers)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._publisher()), loop.create_task(self._reader())]

    def publish(self, cid: int, event: Event) -> None:
        if self._deliver is not None:
            self._deliver(cid, event)
        try:
            self._outbox.put_nowait((cid, self._origin + _STAMP.pack(time.time()) + event.to_bytes()))
        except asyncio.QueueFull:
            # The other processes' gap fillers read stored messages back; live-only frames are lost.
            log.error("redis outbox full; an event of conversation %s reaches this process only", cid)

    async def subscribe(self, cid: int) -> None:
        """Returns once Redis confirmed it (so no later publish can miss this process), or at
        once while Redis is down: this process's own events still arrive."""
        self._wanted.add(cid)
        if self._down:
            return
        channel = f"{self._prefix}{cid}".encode()
        done = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(done)
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(done, 5.0)
        except Exception as e:
            self._went_down(e)

    def unsubscribe(self, cid: int) -> None:
        self._wanted.discard(cid)
        task = asyncio.get_running_loop().create_task(self._unsubscribe(cid))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _unsubscribe(self, cid: int) -> None:
        if cid not in self._wanted:  # a new listener may have come back meanwhile
            await self._pubsub.unsubscribe(f"{self._prefix}{cid}")

    def _went_down(self, e: BaseException) -> None:
        if not self._down:
            log.error("redis unavailable (%r): delivering to this process's subscribers only", e)
        self._down = True

    async def _publisher(self) -> None:
        # What queued up during a round trip goes out in one pipeline (in order, one connection):
        # a streaming reply publishes a frame per coalescing window, and one PUBLISH awaited at a
        # time caps a process at one frame per round trip.
        outbox, prefix = self._outbox, self._prefix
        while True:
            batch = [await outbox.get()]
            while len(batch) < _PIPELINE and not outbox.empty():
                batch.append(outbox.get_nowait())
            try:
                if len(batch) == 1:
                    await self._redis.publish(f"{prefix}{batch[0][0]}", batch[0][1])
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    for cid, data in batch:
                        pipe.publish(f"{prefix}{cid}", data)
                    await pipe.execute()
            except Exception as e:
                self._went_down(e)
            finally:
                for _ in batch:
                    outbox.task_done()

    async def _reader(self) -> None:
        plen = len(self._prefix)
        while True:
            try:
                if self._down:
                    await self._reconnect()
                msg = await self._pubsub.get_message(timeout=1.0)
            except Exception as e:
                self._went_down(e)
                await asyncio.sleep(0.5)
                continue
            if msg is None:
                continue
            if msg["type"] == "subscribe":
                for fut in self._confirm.pop(msg["channel"], []):
                    if not fut.done():
                        fut.set_result(None)
                continue
            data = msg["data"]
            if msg["type"] != "message" or self._deliver is None or data[:8] == self._origin:
                continue
            channel = msg["channel"].decode()
            if channel in (self._questions, self._answers):
                try:
                    self._question_or_answer(channel, data[8:])
                except Exception:
                    log.exception("bad question or answer from redis")
                continue
            try:
                self._deliver(int(msg["channel"][plen:]), Event.from_bytes(data[16:]))
                if self._on_lag is not None:
                    self._on_lag(max(0.0, time.time() - _STAMP.unpack_from(data, 8)[0]))
            except Exception:
                log.exception("bad event from redis")

    async def ask(self, topic: str, payload: dict[str, Any], timeout: float,
                  want: int = 1) -> list[dict[str, Any]]:
        """Answers from other processes: once `want` of them came, or whatever came in time."""
        qid = secrets.token_hex(8)
        answers: list[dict[str, Any]] = []
        enough: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asked[qid] = (answers, want, enough)
        try:
            await self._redis.publish(self._questions, self._origin + orjson.dumps(
                {"id": qid, "topic": topic, "payload": payload}))
            await asyncio.wait_for(enough, timeout)
        except Exception:  # not all in time, or Redis is down: what came is all there is
            pass
        finally:
            self._asked.pop(qid, None)
        return answers

    def _question_or_answer(self, channel: str, data: bytes) -> None:
        body = orjson.loads(data)
        if channel == self._answers:
            asked = self._asked.get(body["id"])
            if asked is not None:
                answers, want, enough = asked
                answers.append(body["answer"])
                if len(answers) >= want and not enough.done():
                    enough.set_result(None)
        elif self.on_ask is not None:
            task = asyncio.get_running_loop().create_task(self._answer(body))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, question: dict[str, Any]) -> None:
        assert self.on_ask is not None
        try:
            answer = await self.on_ask(question["topic"], question["payload"])
        except Exception:
            log.exception("answering %s failed", question.get("topic"))
            return
        if answer is not None:
            await self._redis.publish(self._answers, self._origin + orjson.dumps({"id": question["id"],
                                                                                  "answer": answer}))

    async def _reconnect(self) -> None:
        """Listen again to every conversation this process has subscribers for."""
        await self._redis.ping()
        channels = [self._questions, self._answers, *(f"{self._prefix}{cid}" for cid in self._wanted)]
        await self._pubsub.subscribe(*channels)
        self._down = False
        log.warning("redis is back: listening to %d conversations again", len(channels) - 2)

    async def close(self) -> None:
        if not self._down and self._tasks:  # the last frames (users leaving, replies ending) go out first
            try:
                await asyncio.wait_for(self._outbox.join(), 1.0)
            except TimeoutError:
                log.warning("%d events not published to redis at shutdown", self._outbox.qsize())
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._pubsub.aclose()
        await self._redis.aclose()
