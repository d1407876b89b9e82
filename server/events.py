"""Event: one encoded frame plus the little the hub needs to order and route it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# kinds the hub treats specially; every other frame is relayed as is
MESSAGE, AI_START, AI_DELTA, AI_END, UPDATED = "message", "ai.start", "ai.delta", "ai.end", "updated"


@dataclass(frozen=True, slots=True)
class Event:
    """A frame for a conversation's subscribers; `frame` is encoded once and shared by all."""

    frame: str
    kind: str = ""
    seq: int | None = None  # a stored message: delivered in seq order, exactly once
    after: int | None = None  # deliver only after the message with this seq (a reply's AI frames)
    skip_user: int | None = None  # not to this user's connections (their own typing)
    members: tuple[int, ...] | None = None  # conversation.updated: who may still listen
    reply_id: str | None = None
    text: str = ""  # ai.delta's text / ai.start's model, kept for late subscribers' snapshot
    meta: dict[str, Any] | None = None  # ai.start: message_id, seq, tier
    send: dict[str, Any] = field(init=False, repr=False, compare=False)  # the ASGI message, shared

    def __post_init__(self) -> None:
        object.__setattr__(self, "send", {"type": "websocket.send", "text": self.frame})

    def to_bytes(self) -> bytes:
        """Serialized for a broker between processes."""
        return orjson.dumps({
            "f": self.frame, "k": self.kind, "s": self.seq, "a": self.after, "u": self.skip_user,
            "m": self.members, "r": self.reply_id, "t": self.text, "x": self.meta,
        })

    @classmethod
    def from_bytes(cls, data: bytes) -> Event:
        d = orjson.loads(data)
        return cls(frame=d["f"], kind=d["k"], seq=d["s"], after=d["a"], skip_user=d["u"],
                   members=tuple(d["m"]) if d["m"] is not None else None, reply_id=d["r"],
                   text=d["t"], meta=d["x"])


def encode(frame: dict[str, Any]) -> str:
    """A frame as JSON text, once: the same str goes to every recipient."""
    return orjson.dumps(frame).decode()
