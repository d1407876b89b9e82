"""Messages: the one send path shared by REST and WebSocket: validate, store, fan out, start a turn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import inputs
from .conversations import Conversations
from .events import MESSAGE, Event, encode
from .hub import Hub
from .records import Message, User
from .settings import Settings
from .store import Store
from .turns import Turn, Turns
from .writer import MessageWriter


@dataclass(frozen=True, slots=True)
class Sent:
    """What a send produced: the stored message, the AI turn it started, whether it was a resend."""

    message: Message
    turn: Turn | None
    ai: dict[str, Any] | None
    duplicate: bool


def message_event(msg: Message) -> Event:
    return Event(encode({"type": "message", "message": msg.wire()}), kind=MESSAGE, seq=msg.seq)


class Messages:
    def __init__(self, store: Store, hub: Hub, conversations: Conversations, turns: Turns,
                 settings: Settings) -> None:
        self.store = store
        self.hub = hub
        self.conversations = conversations
        self.turns = turns
        self.settings = settings
        self.writer = MessageWriter(store)

    async def send(self, user: User, cid: int, body: dict[str, Any]) -> Sent:
        """Store first, then fan out and start the AI turn; a repeated client_id changes nothing."""
        content = inputs.content(body, self.settings)
        client_id = inputs.client_id(body, self.settings)
        model = inputs.model_id(body, "model")
        wants_ai = inputs.boolean(body, "ai", True)
        if model is not None:
            self.conversations.router.check(model)
        history = self.settings.history_messages if wants_ai else 0
        msg, room = await self.writer.insert(cid, user, content, client_id, history)
        if room is None:
            turn = self.turns.for_trigger(msg.id)
            ai = turn.info() if turn else await self._past_reply(msg)
            return Sent(msg, turn, ai, True)
        self.hub.publish(cid, message_event(msg))
        turn = None
        if room.with_ai and wants_ai:
            turn = self.turns.start(room, msg, model, user)
        return Sent(msg, turn, turn.info() if turn else None, False)

    async def _past_reply(self, msg: Message) -> dict[str, Any] | None:
        reply = await self.store.reply_to_message(msg.id)
        if reply is None or reply.reply_id is None:
            return None
        return {"reply_id": reply.reply_id, "model": reply.model_used, "tier": None}

    async def page(self, user: User, cid: int, query: dict[str, str]) -> tuple[list[Message], bool]:
        await self.conversations.visible(cid, user)
        after = inputs.integer(query["after"], "after") if query.get("after") not in (None, "") else None
        before = inputs.integer(query["before"], "before") if query.get("before") not in (None, "") else None
        limit = inputs.integer(query.get("limit") or 50, "limit", minimum=1, maximum=500)
        return await self.store.messages(cid, after=after, before=before, limit=limit)
