"""Turns: one AI reply each, queued per conversation, streamed, coalesced, stored, cancellable.

The only holder of a live reply's text: late subscribers get it from `streaming()`."""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChatMessage, ProviderError, StreamEnd
from providers.registry import Backend

from . import logs, protocol
from .accounting import Clock
from .budgets import Budgets
from .coalescing import Coalescer, Window
from .errors import ChatError, Forbidden, NotFound, Unavailable
from .events import Event
from .hub import Hub
from .metrics import Metrics
from .prefetch import Prefetch, Prefetcher
from .prompt import prompt_for
from .records import Message, Room, User
from .replies import Replies
from .routing import Choice, Router
from .settings import Settings
from .store import Store
from .store_budgets import Holder

log = logging.getLogger("chat.turns")

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class Turn:
    """One AI reply, from queued to stored."""

    reply_id: str
    room: Room
    trigger: Message
    choice: Choice
    requested_by: int
    model: str = ""  # the model generating now (a fallback changes it)
    tier: str = ""  # the tier that named it
    fallback_from: str | None = None  # the model that failed before the current one took over
    message: Message | None = None  # the reply's row, once stored
    parts: list[str] = field(default_factory=list)
    index: int = 0  # the next ai.delta's index
    step: int = 0  # the next frame's place among this reply's frames
    cancel_by: int | None = None
    stream_task: asyncio.Task[Any] | None = None
    checkpoint: asyncio.Task[None] | None = None  # the text so far being stored (see _delta)
    clock: Clock = field(default_factory=Clock)
    reserved: bool = False  # it holds a budget reservation to settle when it ends
    prompt_chars: int = 0  # what the prompt weighed, to estimate its tokens when the provider says nothing
    checkpointed: float = 0.0  # loop time of the last checkpoint, or of the row's insert
    done: asyncio.Future[Message] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    listeners: list[Listener] = field(default_factory=list)
    ahead: Prefetch | None = None  # its provider request, sent while its message was being stored
    side_by_side: bool = False  # one of several replies to its trigger

    def info(self) -> dict[str, Any]:
        info = protocol.ai_info(self.reply_id, self.choice.model, self.choice.tier)
        if self.choice.reason:
            info["route_reason"] = self.choice.reason
        return info


class Turns:
    """Turns of one conversation run one after another in message order; conversations in parallel."""

    def __init__(self, store: Store, hub: Hub, router: Router, settings: Settings, replies: Replies,
                 metrics: Metrics, budgets: Budgets, prefetcher: Prefetcher) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.settings = settings
        self.replies = replies
        self.metrics = metrics
        self.budgets = budgets
        self.prefetcher = prefetcher
        self.received = 0  # provider deltas received (read by the metrics at scrape time)
        self.window = Window(settings.coalesce_ms / 1000.0, settings.coalesce_ms * settings.coalesce_growth / 1000.0)
        self.by_reply: dict[str, Turn] = {}
        self.by_trigger: dict[int, Turn] = {}
        self._queues: dict[int, list[tuple[int, int, list[Turn]]]] = {}  # a trigger's replies go together
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._order = 0

    # -- starting, finding, cancelling ---------------------------------------

    def start(self, room: Room, trigger: Message, model: str | None, user: User, tier: str = "message",
              ahead: Prefetch | None = None) -> Turn:
        """Queue a reply to `trigger`; returns at once with the chosen model and tier (`tier`
        names what set a message's own model: its `model` field, or a mention). A request sent
        `ahead` goes with it when it runs next; behind another turn, its history will differ."""
        idle = self.idle(room.id)
        turn = self.start_side_by_side(room, trigger, [model], user, tier)[0]
        if idle:
            turn.ahead = ahead
        return turn

    def idle(self, cid: int) -> bool:
        """No turn of this conversation is running or waiting here."""
        return cid not in self._workers

    def start_side_by_side(self, room: Room, trigger: Message, models: list[str | None], user: User,
                           tier: str = "message") -> list[Turn]:
        """Queue one reply per model to `trigger`; they stream at the same time, each its own
        message, and end (or are cancelled) each on its own."""
        turns = []
        for model in models:
            choice = self.router.choose(model, room.default_model_id, tier, trigger.content)
            turn = Turn(secrets.token_hex(8), room, trigger, choice, user.id, model=choice.model, tier=choice.tier,
                        side_by_side=len(models) > 1)
            self.by_reply[turn.reply_id] = turn
            self.by_trigger.setdefault(trigger.id, turn)  # a regenerated reply leaves the first one found
            turns.append(turn)
        self._order += 1
        heapq.heappush(self._queues.setdefault(room.id, []), (trigger.seq, self._order, turns))
        if room.id not in self._workers:
            task = asyncio.get_running_loop().create_task(self._work(room.id), name=f"turns-{room.id}")
            self._workers[room.id] = task
        return turns

    def for_trigger(self, message_id: int) -> Turn | None:
        return self.by_trigger.get(message_id)

    async def cancel(self, reply_id: str, user: User) -> Turn:
        """Stop a reply: its requester or the conversation's owner may; others learn nothing."""
        turn = self.by_reply.get(reply_id)
        if turn is None:
            raise NotFound(f"no running reply {reply_id!r}")
        if user.id not in (turn.requested_by, turn.room.owner_id):
            conv = await self.store.conversation(turn.room.id)
            if conv is None or not conv.has(user.id):
                raise NotFound(f"no running reply {reply_id!r}")
            raise Forbidden("only the message's author or the conversation owner may cancel")
        turn.cancel_by = user.id
        if turn.stream_task is not None:
            turn.stream_task.cancel()
        return turn

    def streaming(self, cid: int) -> list[protocol.Live]:
        """The conversation's replies being generated here, with their text so far."""
        return [
            protocol.Live(t.reply_id, t.model, "".join(t.parts), t.message.id, t.message.seq, t.tier, t.step)
            for t in self.by_reply.values()
            if t.room.id == cid and t.message is not None and not t.done.done()
        ]

    async def close(self) -> None:
        """Shutdown: stop generating; partial replies are stored as `interrupted`."""
        workers = list(self._workers.values())
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


    # -- running --------------------------------------------------------------

    async def _work(self, cid: int) -> None:
        logs.about(conversation=cid)
        queue = self._queues[cid]
        try:
            await asyncio.sleep(0)  # let sends racing this one enqueue, so seq order holds
            while queue:
                _, _, turns = heapq.heappop(queue)
                if len(turns) == 1:
                    await self._run_one(turns[0])
                else:  # side by side: at once; one failing or cancelled leaves the others
                    await asyncio.gather(*(self._run_one(t) for t in turns))
        finally:
            del self._workers[cid]
            if not queue:
                self._queues.pop(cid, None)
            for _, _, waiting in queue:  # shutdown: requests sent ahead for turns that never ran
                for turn in waiting:
                    if turn.ahead is not None:
                        await self.prefetcher.drop(turn.ahead)

    async def _run_one(self, turn: Turn) -> None:
        try:
            await self._run(turn)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not isinstance(e, Unavailable):
                log.exception("turn %s failed", turn.reply_id)
            if not turn.done.done():
                turn.done.set_exception(Unavailable(f"the AI turn failed: {e.__class__.__name__}"))
                turn.done.exception()  # retrieved: a waiting request raises it, nobody else must
        finally:
            self.by_reply.pop(turn.reply_id, None)
            if self.by_trigger.get(turn.trigger.id) is turn:
                del self.by_trigger[turn.trigger.id]
            if not turn.done.done():
                turn.done.cancel()
            if turn.ahead is not None:
                await self.prefetcher.drop(turn.ahead)

    async def _run(self, turn: Turn) -> None:
        s = self.settings
        # The reply's row (which fixes its seq) and the history it answers: one round trip.
        try:
            msg, history, instructions = await self.store.messages.start_reply(
                turn.room.id, turn.trigger.id, turn.trigger.seq, turn.reply_id, turn.model, turn.tier,
                turn.requested_by, s.node_id, s.history_messages, s.history_chars, turn.choice.reason)
        except Exception as e:
            # No row: nothing to store, but whoever was told of this reply hears that it ended.
            log.warning("turn %s could not start: %r", turn.reply_id, e)
            self._emit(turn, protocol.ai_error(turn.room.id, turn.reply_id, turn.model, "unavailable",
                                               "the reply could not be started: the database is unavailable",
                                               None))
            raise
        turn.message = msg
        if turn.side_by_side:  # the other replies' rows are unknown here
            self.prefetcher.forget(turn.room.id)
        else:
            self.prefetcher.started(turn.room, turn.trigger, msg, history, instructions, turn.requested_by)
        turn.checkpointed = asyncio.get_running_loop().time()
        self._emit(turn, protocol.message(msg), seq=msg.seq)
        self._emit(turn, protocol.ai_start(msg, turn.reply_id, turn.model, turn.tier, turn.trigger.id, None,
                                           turn.choice.reason))
        try:
            if turn.cancel_by is not None:
                outcome: Outcome = ("cancelled", None, None, None)
            else:
                sent = prompt_for(turn.room.mode, [line for _, line in history], instructions)
                turn.prompt_chars = sum(len(m.content) for m in sent)
                try:
                    turn.reserved = await self.budgets.reserve(Holder("message", msg.id), turn.requested_by,
                                                               turn.room.id, turn.model, turn.prompt_chars)
                except ChatError as e:  # over a budget, or the check itself could not be made
                    outcome = ("error", e.code, e.message, None)
                else:
                    # a cancel that came while the budget was checked
                    outcome = ("cancelled", None, None, None) if turn.cancel_by is not None \
                        else await self._generate(turn, sent)
        except asyncio.CancelledError:
            # Shutdown: store what we have; the task finishes this before it ends.
            await self._finish(turn, ("interrupted", None, None, None))
            raise
        await self._finish(turn, outcome)

    async def _generate(self, turn: Turn, prompt: list[ChatMessage]) -> Outcome:
        """Stream from the chosen model, falling back down the tiers before the first token."""
        candidates = [(turn.choice.model, turn.choice.tier), *turn.choice.fallbacks]
        for i, (model, tier) in enumerate(candidates):
            if turn.cancel_by is not None:  # cancelled between two attempts
                return "cancelled", None, None, None
            if i > 0:
                if turn.ahead is not None:  # sent to the model that failed, or never adopted
                    await self.prefetcher.drop(turn.ahead)
                previous, turn.model, turn.tier = turn.model, model, tier
                turn.fallback_from = previous
                assert turn.message is not None
                self._emit(turn, protocol.ai_start(turn.message, turn.reply_id, model, tier, turn.trigger.id,
                                                   previous))
            try:
                backend, name = self.router.resolve(model)
            except ChatError as e:
                err: ChatError | ProviderError = e
            else:
                turn.stream_task = asyncio.ensure_future(
                    self._relay(turn, backend, name, prompt, turn.ahead if i == 0 else None))
                try:
                    return "complete", None, None, await turn.stream_task
                except asyncio.CancelledError:
                    if turn.cancel_by is None:
                        turn.stream_task.cancel()
                        raise
                    return "cancelled", None, None, None
                except ProviderError as e:
                    err = e
                    self.metrics.provider_failed(model, e)
                finally:
                    turn.stream_task = None
            if turn.parts or i == len(candidates) - 1:
                log.info("turn %s on %s failed: %s", turn.reply_id, model, err)
                code = err.code if isinstance(err, ProviderError) else "provider_error"
                return "error", code, err.message, None
            log.info("turn %s: %s failed before its first token (%s); falling back", turn.reply_id, model, err)
        raise AssertionError("unreachable")

    async def _relay(self, turn: Turn, backend: Backend, name: str, prompt: list[ChatMessage],
                     sent_ahead: Prefetch | None) -> StreamEnd | None:
        """Provider deltas -> coalesced ai.delta frames (see coalescing.py): the first at once.
        A request sent ahead for this prompt already holds a backend slot, maybe its first item."""
        loop = asyncio.get_running_loop()
        frames = Coalescer(lambda text: self._delta(turn, text), self.window)
        end: StreamEnd | None = None
        clock = turn.clock

        def take(item: str | StreamEnd) -> None:
            nonlocal end
            if isinstance(item, StreamEnd):
                end = item
                return
            if not clock.first:
                clock.first = loop.time()
            self.received += 1
            frames.add(item)

        try:
            # adopted here, not before: a relay cancelled before it starts leaves it to be dropped
            ahead = None if sent_ahead is None else \
                await self.prefetcher.adopt(sent_ahead, turn.model, backend, name, prompt)
            if ahead is not None:
                assert ahead.task is not None and ahead.backend.limit is not None
                clock.asked, limit = ahead.asked, ahead.backend.limit
                try:
                    first = await ahead.task  # its own failure has closed the stream and freed the slot
                except BaseException:
                    await ahead.close()  # cancelled here after it got its first item: ours to close
                    raise
                clock.first = ahead.first_at if isinstance(first, str) else 0.0
                stream = ahead.stream
                assert stream is not None
            else:
                assert backend.limit is not None
                limit = backend.limit
                await limit.acquire()  # queue here, not on the backend
                clock.asked = loop.time()
                stream = backend.provider.stream(name, prompt, max_tokens=self.settings.ai_max_tokens,
                                                 temperature=self.settings.ai_temperature)
                first = None
            self.window.enter()
            try:
                if first is not None:
                    take(first)
                async for item in stream:
                    take(item)
            finally:
                self.window.leave()
                try:
                    await stream.aclose()  # type: ignore[attr-defined]
                finally:
                    limit.release()
        finally:
            clock.ended = loop.time()
            frames.close()  # nothing received is ever dropped, even on cancel or error
        return end

    def _delta(self, turn: Turn, text: str) -> None:
        turn.parts.append(text)
        frame = protocol.ai_delta(turn.room.id, turn.reply_id, turn.model, turn.index, text)
        turn.index += 1
        self._emit(turn, frame)
        self.replies.maybe_checkpoint(turn)

    async def _finish(self, turn: Turn, outcome: Outcome) -> None:
        """Store the reply and end it for its subscribers. When it cannot be stored, it still
        ends (`ai.error` `unavailable`, with the text) and is stored once the database is back."""
        status, code, error, end = outcome
        msg = turn.message
        assert msg is not None
        if status == "error":
            code, error = code or "provider_error", error or "the AI provider failed"
        final = self.replies.final(turn, status, end, code, error)
        stored = await self.replies.store_final(msg, final)
        self.prefetcher.ended(stored)
        self.replies.count(turn, final)
        if turn.reserved:
            try:
                await self.budgets.settle(Holder("message", msg.id), final.cost_usd, turn.room.id, turn.requested_by,
                                          turn.room.owner_id)
            except Exception as e:  # the reservation is released by the next sweep (Budgets.sweep)
                log.warning("turn %s: settling its budget failed: %r", turn.reply_id, e)
        if stored.status == "error":
            self._emit(turn, protocol.ai_error(turn.room.id, turn.reply_id, turn.model, stored.error_code or "",
                                               stored.error_message or "", stored))
        else:
            self._emit(turn, protocol.ai_done(turn.reply_id, turn.model, stored))
        self._emit(turn, protocol.message(stored))
        if not turn.done.done():
            turn.done.set_result(stored)

    def _emit(self, turn: Turn, frame: dict[str, Any], seq: int | None = None) -> None:
        """Publish one of the turn's frames: its row by seq, the rest after that row, numbered."""
        if seq is not None:
            event = Event(protocol.encode(frame), seq=seq)
        else:
            event = Event(protocol.encode(frame), after=turn.message.seq if turn.message else None,
                          reply_id=turn.reply_id, step=turn.step)
            turn.step += 1
        self.hub.publish(turn.room.id, event)
        for listener in turn.listeners:
            listener(frame["type"], frame)


Outcome = tuple[str, "str | None", "str | None", "StreamEnd | None"]  # status, error code, error text, end
