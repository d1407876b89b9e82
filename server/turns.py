"""Turns: one AI reply each, queued per conversation, streamed, coalesced, stored, cancellable."""

from __future__ import annotations

import asyncio
import heapq
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from providers.base import ChatMessage, ProviderError, StreamEnd

from .errors import ChatError, Forbidden, NotFound, Unavailable
from .events import AI_DELTA, AI_END, AI_START, MESSAGE, Event, encode
from .hub import Hub
from .records import Message, Room, User
from .routing import Choice, Router
from .settings import Settings
from .store import Store

log = logging.getLogger("chat.turns")

SYSTEM_PROMPT = (
    "You are the AI participant of a chat conversation. Answer the latest message helpfully "
    "and concisely."
)


@dataclass(eq=False)
class Turn:
    """One AI reply, from queued to stored."""

    reply_id: str
    conversation: Room
    trigger: Message
    choice: Choice
    requested_by: int
    model: str = ""
    message: Message | None = None
    parts: list[str] = field(default_factory=list)
    index: int = 0
    cancel_by: int | None = None
    stream_task: asyncio.Task[Any] | None = None
    fresh: bool = False  # nothing ran in its conversation since the trigger: its history is current
    row: asyncio.Future[Message] | None = None  # the reply's stored row, maybe still being written
    done: asyncio.Future[Message] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    listeners: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {"reply_id": self.reply_id, "model": self.choice.model, "tier": self.choice.tier}


class Turns:
    """Turns of one conversation run one after another in message order; conversations in parallel."""

    def __init__(self, store: Store, hub: Hub, router: Router, settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.settings = settings
        self.node_id = settings.node_id
        self.window = settings.coalesce_ms / 1000.0
        self.by_reply: dict[str, Turn] = {}
        self.by_trigger: dict[int, Turn] = {}
        self._queues: dict[int, list[tuple[int, int, Turn]]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._order = 0

    # -- starting, finding, cancelling ---------------------------------------

    def start(self, conv: Room, trigger: Message, model: str | None, user: User) -> Turn:
        """Queue a reply to `trigger`; returns at once with the chosen model and tier."""
        choice = self.router.choose(model, conv.default_model_id)
        turn = Turn(secrets.token_hex(8), conv, trigger, choice, user.id, model=choice.model,
                    fresh=conv.recent is not None and conv.id not in self._workers)
        self.by_reply[turn.reply_id] = turn
        self.by_trigger[trigger.id] = turn
        self._order += 1
        heapq.heappush(self._queues.setdefault(conv.id, []), (trigger.seq, self._order, turn))
        if conv.id not in self._workers:
            task = asyncio.get_running_loop().create_task(self._work(conv.id), name=f"turns-{conv.id}")
            self._workers[conv.id] = task
        return turn

    def for_trigger(self, message_id: int) -> Turn | None:
        return self.by_trigger.get(message_id)

    async def cancel(self, reply_id: str, user: User) -> Turn:
        """Stop a reply: its requester or the conversation's owner may; others learn nothing."""
        turn = self.by_reply.get(reply_id)
        if turn is None:
            raise NotFound(f"no running reply {reply_id!r}")
        if user.id not in (turn.requested_by, turn.conversation.owner_id):
            conv = await self.store.conversation(turn.conversation.id)
            if conv is None or not conv.has(user.id):
                raise NotFound(f"no running reply {reply_id!r}")
            raise Forbidden("only the message's author or the conversation owner may cancel")
        turn.cancel_by = user.id
        if turn.stream_task is not None:
            turn.stream_task.cancel()
        return turn

    def streaming(self, cid: int) -> list[dict[str, Any]]:
        """Live replies of a conversation with their text so far (seed for the hub)."""
        return [
            {"reply_id": t.reply_id, "model": t.model, "text": list(t.parts),
             "message_id": t.message.id, "seq": t.message.seq, "tier": t.choice.tier}
            for t in self.by_reply.values()
            if t.conversation.id == cid and t.message is not None and not t.done.done()
        ]

    async def close(self) -> None:
        """Shutdown: stop generating; partial replies are stored as `interrupted`."""
        workers = list(self._workers.values())
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    # -- running --------------------------------------------------------------

    async def _work(self, cid: int) -> None:
        queue = self._queues[cid]
        try:
            await asyncio.sleep(0)  # let sends racing this one enqueue, so seq order holds
            ran = False
            while queue:
                _, _, turn = heapq.heappop(queue)
                if ran:
                    turn.fresh = False  # a reply was written since its history was read
                ran = True
                try:
                    await self._run(turn)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.exception("turn %s failed", turn.reply_id)
                    if not turn.done.done():
                        turn.done.set_exception(Unavailable(f"the AI turn failed: {e.__class__.__name__}"))
                finally:
                    self.by_reply.pop(turn.reply_id, None)
                    self.by_trigger.pop(turn.trigger.id, None)
                    if not turn.done.done():
                        turn.done.cancel()
        finally:
            del self._workers[cid]
            if not queue:
                self._queues.pop(cid, None)

    async def _run(self, turn: Turn) -> None:
        cid = turn.conversation.id
        insert = self.store.insert_assistant_message(cid, turn.trigger.id, turn.reply_id, turn.model, self.node_id)
        rows: Any
        if turn.fresh:
            # The history came with the trigger's insert: ask the provider while the reply's row
            # is being stored; its first delta waits for that row (see _started).
            turn.row = asyncio.ensure_future(insert)
            recent = turn.conversation.recent or ()
            rows = [*recent, _line(turn.trigger)]
        else:
            # The row (which fixes the reply's seq) and the history it answers: one round trip.
            stored, found = await asyncio.gather(
                insert, self.store.recent_messages(cid, turn.trigger.seq + 1, self.settings.history_messages),
                return_exceptions=True,
            )
            if isinstance(stored, BaseException):
                raise stored
            turn.row = asyncio.get_running_loop().create_future()
            turn.row.set_result(stored)
            await self._started(turn)
            rows = found if isinstance(found, BaseException) else [_line(m) for m in found]
        status, code, error, usage = "complete", None, None, None
        try:
            if turn.cancel_by is not None:
                status = "cancelled"
            elif isinstance(rows, BaseException):
                log.error("turn %s: reading history failed: %r", turn.reply_id, rows)
                status, code, error = "error", "unavailable", "the conversation history could not be read"
            else:
                status, code, error, usage = await self._generate(turn, self._history(turn, rows))
        except asyncio.CancelledError:
            # Shutdown: store what we have; the task finishes this before it ends.
            await self._finish(turn, "interrupted", None, None, None)
            raise
        await self._finish(turn, status, code, error, usage)

    async def _started(self, turn: Turn) -> Message:
        """The reply's row: once it is stored, announce it (`message`, then `ai.start`) exactly once."""
        if turn.message is None:
            assert turn.row is not None
            stored = await asyncio.shield(turn.row)  # a cancelled stream must not cancel the insert
            if turn.message is None:
                turn.message = stored
                self._emit(turn, {"type": "message", "message": stored.wire()}, kind=MESSAGE, seq=stored.seq)
                self._start_frame(turn, None)
        return turn.message

    async def _generate(self, turn: Turn, history: list[ChatMessage]) -> tuple[str, str | None, str | None, Any]:
        """Stream from the chosen model, falling back down the tiers before the first token."""
        candidates = [(turn.choice.model, turn.choice.tier), *turn.choice.fallbacks]
        for i, (model, _tier) in enumerate(candidates):
            if i > 0:
                await self._started(turn)
                previous, turn.model = turn.model, model
                self._start_frame(turn, previous)
            try:
                backend, name = self.router.resolve(model)
            except ChatError as e:
                err: ChatError | ProviderError = e
            else:
                turn.stream_task = asyncio.ensure_future(self._relay(turn, backend, name, history))
                try:
                    return "complete", None, None, await turn.stream_task
                except asyncio.CancelledError:
                    if turn.cancel_by is None:
                        turn.stream_task.cancel()
                        raise
                    return "cancelled", None, None, None
                except ProviderError as e:
                    err = e
                finally:
                    turn.stream_task = None
            if turn.parts or i == len(candidates) - 1:
                log.info("turn %s on %s failed: %s", turn.reply_id, model, err)
                return "error", err.code if isinstance(err, ProviderError) else "provider_error", \
                    err.message, None
            log.info("turn %s: %s failed before its first token (%s); falling back", turn.reply_id, model, err)
        raise AssertionError("unreachable")

    async def _relay(self, turn: Turn, backend: Any, name: str, history: list[ChatMessage]) -> StreamEnd | None:
        """Provider deltas -> coalesced ai.delta frames: the first at once, then one per window."""
        loop = asyncio.get_running_loop()
        pending: list[str] = []
        timer: asyncio.TimerHandle | None = None
        last_flush = 0.0

        def flush() -> None:
            nonlocal timer, last_flush
            timer = None
            if pending:
                text = "".join(pending)
                pending.clear()
                last_flush = loop.time()
                self._delta(turn, text)

        end: StreamEnd | None = None
        try:
            async with self.router.limit(backend):
                stream = backend.provider.stream(name, history)
                try:
                    async for item in stream:
                        if isinstance(item, StreamEnd):
                            end = item
                            continue
                        pending.append(item)
                        if timer is None:
                            wait = last_flush + self.window - loop.time()
                            if wait <= 0:
                                if turn.message is None:
                                    await self._started(turn)  # deltas follow their ai.start
                                flush()
                            else:
                                timer = loop.call_later(wait, flush)
                finally:
                    await stream.aclose()
        finally:
            if timer is not None:
                timer.cancel()
            if pending and turn.message is None:
                await self._started(turn)
            flush()  # nothing received is ever dropped, even on cancel or error
        return end

    def _delta(self, turn: Turn, text: str) -> None:
        turn.parts.append(text)
        frame = {"type": "ai.delta", "conversation_id": turn.conversation.id, "reply_id": turn.reply_id,
                 "model": turn.model, "index": turn.index, "text": text}
        turn.index += 1
        self._emit(turn, frame, kind=AI_DELTA, text=text)

    def _start_frame(self, turn: Turn, fallback_from: str | None) -> None:
        msg = turn.message
        assert msg is not None
        frame: dict[str, Any] = {
            "type": "ai.start", "conversation_id": msg.conversation_id, "reply_id": turn.reply_id,
            "message_id": msg.id, "seq": msg.seq, "model": turn.model, "tier": turn.choice.tier,
            "reply_to": turn.trigger.id,
        }
        if fallback_from is not None:
            frame["fallback_from"] = fallback_from
        meta = {"message_id": msg.id, "seq": msg.seq, "tier": turn.choice.tier}
        self._emit(turn, frame, kind=AI_START, text=turn.model, meta=meta)

    async def _finish(self, turn: Turn, status: str, code: str | None, error: str | None, usage: Any) -> None:
        msg = await self._started(turn)
        final = await self.store.finish_assistant_message(
            msg.id, "".join(turn.parts), status, turn.model,
            usage.usage.prompt_tokens if usage is not None and usage.usage else None,
            usage.usage.completion_tokens if usage is not None and usage.usage else None,
        )
        cid = final.conversation_id
        base = {"conversation_id": cid, "reply_id": turn.reply_id, "model": turn.model}
        if status == "error":
            frame = {"type": "ai.error", **base, "code": code or "provider_error",
                     "message": error or "the AI provider failed", "message_obj": final.wire()}
        else:
            frame = {"type": "ai.done", **base, "message": final.wire()}
        self._emit(turn, frame, kind=AI_END)
        self._emit(turn, {"type": "message", "message": final.wire()})
        if not turn.done.done():
            turn.done.set_result(final)

    def _emit(self, turn: Turn, frame: dict[str, Any], *, kind: str = "", seq: int | None = None,
              text: str = "", meta: dict[str, Any] | None = None) -> None:
        after = None if seq is not None or turn.message is None else turn.message.seq
        self.hub.publish(turn.conversation.id, Event(encode(frame), kind=kind, seq=seq, after=after,
                                                     reply_id=turn.reply_id, text=text, meta=meta))
        for listener in turn.listeners:
            listener(frame["type"], frame)

    def _history(self, turn: Turn, rows: list[Line]) -> list[ChatMessage]:
        """Recent messages up to the trigger, within the budget; in rooms, each line says who spoke."""
        named = turn.conversation.mode != "solo"
        budget = self.settings.history_chars
        out: list[ChatMessage] = []
        for role, status, content, author in reversed(rows):
            if role == "assistant" and (status != "complete" or not content):
                continue
            if named and role == "user" and author is not None:
                content = f"{author}: {content}"
            if budget - len(content) < 0 and out:
                break
            budget -= len(content)
            out.append(ChatMessage(role, content[-self.settings.history_chars:]))
        out.append(ChatMessage("system", SYSTEM_PROMPT))
        out.reverse()
        return out


Line = tuple[str, str, str, "str | None"]  # role, status, content, author's display name


def _line(m: Message) -> Line:
    return (m.role, m.status, m.content, m.author.display_name if m.author else None)
