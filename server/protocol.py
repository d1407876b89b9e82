"""The WebSocket wire: client frames parsed into typed commands at the edge, and every server
frame built by one function each. Pure: no I/O, tested with plain values in tests/test_protocol.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from . import inputs
from .errors import BadRequest, ChatError, Invalid
from .events import Event
from .records import Conversation, Message, User, rfc3339
from .settings import Settings

# -- client commands ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    """`auth`: the first frame, when no header or query token was given."""

    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """`subscribe`: listen, replaying what came after `after` when given."""

    conversation_id: int
    after: int | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """`unsubscribe`."""

    conversation_id: int


@dataclass(frozen=True, slots=True)
class SendMessage:
    """`message.send`, and the body of POST /conversations/{id}/messages: one shape, one parser."""

    conversation_id: int
    content: str
    model: str | None
    client_id: str | None
    ai: bool | None  # None: as the conversation's `ai_answers` says
    models: tuple[str, ...] | None = None  # side by side: one reply per model

@dataclass(frozen=True, slots=True)
class Typing:
    """`typing`: a hint for the room, dropped when over its rate."""

    conversation_id: int
    state: bool


@dataclass(frozen=True, slots=True)
class Cancel:
    """`ai.cancel`: stop a reply being generated."""

    reply_id: str


@dataclass(frozen=True, slots=True)
class Ping:
    """`ping`: answered with `pong`."""

    pass


Command = Authenticate | Subscribe | Unsubscribe | SendMessage | Typing | Cancel | Ping

MAX_REF_CHARS = 128


class FrameError(Exception):
    """A ChatError tied to the ref of the frame that caused it."""

    def __init__(self, error: ChatError, ref: Any) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref


def parse(data: str | bytes, settings: Settings) -> tuple[Command, Any]:
    """A client frame as (command, ref); raises FrameError carrying whatever ref could be read."""
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError(BadRequest("frame is not valid JSON"), None) from None
    if not isinstance(frame, dict):
        raise FrameError(BadRequest("frame must be a JSON object"), None)
    ref = frame.get("ref")
    if ref is not None and not (isinstance(ref, (str, int, float)) and not isinstance(ref, bool)):
        raise FrameError(Invalid("ref", "ref must be a string or a number"), None)
    if isinstance(ref, str) and len(ref) > MAX_REF_CHARS:
        raise FrameError(Invalid("ref", f"ref must be at most {MAX_REF_CHARS} characters"), None)
    kind = frame.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise FrameError(Invalid("type", f"unknown frame type {kind!r}" if isinstance(kind, str)
                                 else "type must be a string"), ref)
    try:
        return parser(frame, settings), ref
    except ChatError as e:
        raise FrameError(e, ref) from None


def ref_of(data: str | bytes) -> Any:
    """Only the ref of a frame the server will not otherwise read (one refused by a rate
    limit), so that even that answer echoes it; None when there is no usable ref."""
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    ref = frame.get("ref") if isinstance(frame, dict) else None
    if isinstance(ref, bool) or not isinstance(ref, (str, int, float)):
        return None
    return ref if not isinstance(ref, str) or len(ref) <= MAX_REF_CHARS else None


def send_message(body: dict[str, Any], conversation_id: int, settings: Settings) -> SendMessage:
    """A message to store, from a `message.send` frame or a REST body."""
    content = inputs.text(body, "content", max_chars=settings.max_content_chars)
    if not content.strip():  # type: ignore[union-attr]
        raise Invalid("content", "content must not be blank")
    return SendMessage(
        conversation_id=conversation_id,
        content=content,  # type: ignore[arg-type]
        model=inputs.model_id(body, "model"),
        client_id=inputs.text(body, "client_id", max_chars=settings.max_client_id_chars, required=False),
        ai=inputs.boolean(body, "ai", None),
        models=_side_by_side(body),
    )


MAX_SIDE_BY_SIDE = 3


def _side_by_side(body: dict[str, Any]) -> tuple[str, ...] | None:
    value = body.get("models")
    if value is None:
        return None
    if body.get("model") is not None:
        raise Invalid("models", "give either model or models, not both")
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_SIDE_BY_SIDE:
        raise Invalid("models", f"models must be a list of 2 to {MAX_SIDE_BY_SIDE} model ids")
    ids = tuple(inputs.model_id({"models": m}, "models") or "" for m in value)
    if len(set(ids)) != len(ids):
        raise Invalid("models", "models must be different")
    return ids


def _conversation_id(frame: dict[str, Any]) -> int:
    value = frame.get("conversation_id")
    if isinstance(value, str):
        raise Invalid("conversation_id", "conversation_id must be an integer")
    return inputs.integer(value, "conversation_id", minimum=1)


def _subscribe(frame: dict[str, Any], settings: Settings) -> Subscribe:
    after = frame.get("after")
    if isinstance(after, str):
        raise Invalid("after", "after must be an integer seq")
    return Subscribe(_conversation_id(frame), None if after is None else inputs.integer(after, "after"))


def _typing(frame: dict[str, Any], settings: Settings) -> Typing:
    cid = _conversation_id(frame)
    state = frame.get("state")
    if not isinstance(state, bool):
        raise Invalid("state", "state must be true or false")
    return Typing(cid, state)


def _auth(frame: dict[str, Any], settings: Settings) -> Authenticate:
    token = frame.get("token")
    if not isinstance(token, str):
        raise Invalid("token", "token must be a string")
    return Authenticate(token)


_PARSERS: dict[str, Any] = {
    "auth": _auth,
    "subscribe": _subscribe,
    "unsubscribe": lambda f, s: Unsubscribe(_conversation_id(f)),
    "message.send": lambda f, s: send_message(f, _conversation_id(f), s),
    "typing": _typing,
    "ai.cancel": lambda f, s: Cancel(inputs.text(f, "reply_id", max_chars=64)),  # type: ignore[arg-type]
    "ping": lambda f, s: Ping(),
}


# -- server frames --------------------------------------------------------------


def encode(frame: dict[str, Any]) -> str:
    """A frame as JSON text, once: the same str goes to every recipient."""
    return orjson.dumps(frame).decode()


def _with_ref(frame: dict[str, Any], ref: Any) -> dict[str, Any]:
    if ref is not None:
        frame["ref"] = ref
    return frame


def error(err: ChatError, ref: Any = None) -> dict[str, Any]:
    return _with_ref({"type": "error", **err.body()}, ref)


def hello(user: User, now: datetime) -> dict[str, Any]:
    return {"type": "hello", "user": user.wire(), "server_time": rfc3339(now)}


def pong(ref: Any) -> dict[str, Any]:
    return {"type": "pong", "ref": ref}


@dataclass(frozen=True, slots=True)
class Live:
    """An AI reply being generated, as a late subscriber first sees it."""

    reply_id: str
    model: str
    text: str
    message_id: int
    seq: int
    tier: str
    step: int  # how many of the reply's frames this text already covers (not on the wire)

    def wire(self) -> dict[str, Any]:
        return {"reply_id": self.reply_id, "model": self.model, "text": self.text,
                "message_id": self.message_id, "seq": self.seq, "tier": self.tier}

    def wire_with_step(self) -> dict[str, Any]:
        """Between server processes: the snapshot and the step it covers."""
        return {**self.wire(), "step": self.step}


def subscribed(cid: int, ref: Any, last_seq: int, recovered: bool, present: list[User],
               streaming: list[Live]) -> dict[str, Any]:
    return {"type": "subscribed", "conversation_id": cid, "ref": ref, "last_seq": last_seq,
            "recovered": recovered, "present": [u.wire() for u in present],
            "streaming": [live.wire() for live in streaming]}


def unsubscribed(cid: int, ref: Any) -> dict[str, Any]:
    return {"type": "unsubscribed", "conversation_id": cid, "ref": ref}


def message(msg: Message) -> dict[str, Any]:
    return {"type": "message", "message": msg.wire()}


def message_event(msg: Message) -> Event:
    """A stored message for the hub: ordered and deduplicated by its seq."""
    return Event(encode(message(msg)), seq=msg.seq)


def ai_info(reply_id: str, model: str | None, tier: str | None) -> dict[str, Any]:
    """The `ai` object of an ack: which reply a send started, on which model, chosen by which tier."""
    return {"reply_id": reply_id, "model": model, "tier": tier}


def message_ack(ref: Any, msg: Message, ai: dict[str, Any] | None, duplicate: bool,
                ais: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ack = {"type": "message.ack", "ref": ref, "client_id": msg.client_id, "message": msg.wire(), "ai": ai}
    if ais is not None:
        ack["ais"] = ais  # side by side: every reply's; `ai` is the first
    if duplicate:
        ack["duplicate"] = True
    return ack


def cancel_ack(reply_id: str, ref: Any) -> dict[str, Any]:
    return {"type": "ack", "for": "ai.cancel", "reply_id": reply_id, "ref": ref}


def typing(cid: int, user: User, state: bool) -> dict[str, Any]:
    return {"type": "typing", "conversation_id": cid, "user": user.wire(), "state": state}


def presence(cid: int, user: User, state: str) -> dict[str, Any]:
    return {"type": "presence", "conversation_id": cid, "user": user.wire(), "state": state}


def conversation_updated(conv: Conversation) -> dict[str, Any]:
    return {"type": "conversation.updated", "conversation": conv.wire()}


def budget_warning(budget: dict[str, Any], cid: int) -> dict[str, Any]:
    """To the user a budget concerns, once per period, when its spending crosses `warn_at`."""
    return {"type": "budget.warning", "conversation_id": cid, "budget": budget,
            "message": f"{round(budget['spent_usd'] / budget['limit_usd'] * 100) if budget['limit_usd'] else 100}% "
                       f"of the {inputs.BUDGET_PERIODS[budget['period']]} AI budget of ${budget['limit_usd']:.2f} is spent"}


def ai_start(msg: Message, reply_id: str, model: str, tier: str, reply_to: int,
             fallback_from: str | None, route_reason: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "ai.start", "conversation_id": msg.conversation_id, "reply_id": reply_id,
        "message_id": msg.id, "seq": msg.seq, "model": model, "tier": tier, "reply_to": reply_to,
    }
    if fallback_from is not None:
        frame["fallback_from"] = fallback_from
    if route_reason is not None:
        frame["route_reason"] = route_reason
    return frame


def ai_delta(cid: int, reply_id: str, model: str, index: int, text: str) -> dict[str, Any]:
    return {"type": "ai.delta", "conversation_id": cid, "reply_id": reply_id, "model": model,
            "index": index, "text": text}


def ai_done(reply_id: str, model: str, msg: Message) -> dict[str, Any]:
    return {"type": "ai.done", "conversation_id": msg.conversation_id, "reply_id": reply_id, "model": model,
            "message": msg.wire()}


def ai_error(cid: int, reply_id: str, model: str, code: str, text: str, msg: Message | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "ai.error", "conversation_id": cid, "reply_id": reply_id,
                             "model": model, "code": code, "message": text}
    if msg is not None:
        frame["message_obj"] = msg.wire()
    return frame
