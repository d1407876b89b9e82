"""Event: one encoded frame plus the little the hub needs to order and route it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Event:
    """A frame for a conversation's subscribers; `frame` is encoded once and shared by all."""

    frame: str
    seq: int | None = None  # a stored message's seq: delivered in seq order, exactly once
    after: int | None = None  # deliver only after the message with this seq (a reply's AI frames)
    skip_user: int | None = None  # not to this user's connections (their own typing, presence)
    only_user: int | None = None  # to this user's connections only (a budget warning)
    members: tuple[int, ...] | None = None  # conversation.updated: who may still listen
    reply_id: str | None = None  # the AI reply this frame belongs to
    step: int | None = None  # its place among that reply's frames (a snapshot covers the earlier ones)
    send: dict[str, Any] = field(init=False, repr=False, compare=False)  # the ASGI message, shared

    def __post_init__(self) -> None:
        object.__setattr__(self, "send", {"type": "websocket.send", "text": self.frame})

    def to_bytes(self) -> bytes:
        """Serialized for a broker between processes."""
        return orjson.dumps({"f": self.frame, "s": self.seq, "a": self.after, "u": self.skip_user,
                             "m": self.members, "r": self.reply_id, "p": self.step, "o": self.only_user})

    @classmethod
    def from_bytes(cls, data: bytes) -> Event:
        d = orjson.loads(data)
        return cls(frame=d["f"], seq=d["s"], after=d["a"], skip_user=d["u"],
                   members=tuple(d["m"]) if d["m"] is not None else None, reply_id=d["r"], step=d["p"], only_user=d.get("o"))
