"""Event: one encoded frame plus the little the hub needs to order and route it."""

from __future__ import annotations

from typing import Any

import orjson
from websockets.frames import Frame, Opcode


class Event:
    """A frame for a conversation's subscribers; `frame` is encoded once and shared by all.

    Never changed once made (several queues hold the same one). A plain class with slots,
    not a frozen dataclass: one is made per frame, and a frozen dataclass's __init__ sets
    each field through object.__setattr__ (~5 µs against ~0.5 µs)."""

    __slots__ = ("frame", "seq", "after", "skip_user", "only_user", "members", "reply_id", "step", "send", "_wire")

    def __init__(self, frame: str, seq: int | None = None, after: int | None = None, skip_user: int | None = None,
                 only_user: int | None = None, members: tuple[int, ...] | None = None, reply_id: str | None = None,
                 step: int | None = None) -> None:
        self.frame = frame
        self.seq = seq  # a stored message's seq: delivered in seq order, exactly once
        self.after = after  # deliver only after the message with this seq (a reply's AI frames)
        self.skip_user = skip_user  # not to this user's connections (their own typing, presence)
        self.only_user = only_user  # to this user's connections only (a budget warning)
        self.members = members  # conversation.updated: who may still listen
        self.reply_id = reply_id  # the AI reply this frame belongs to
        self.step = step  # its place among that reply's frames (a snapshot covers the earlier ones)
        self.send: dict[str, Any] = {"type": "websocket.send", "text": frame}  # the ASGI message, shared
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        """The whole WebSocket text frame, made on first use and written as is to every
        recipient (see connection.Direct): as websockets would frame it for a server with no
        extensions, once per event rather than once per socket."""
        wire = self._wire
        if wire is None:
            wire = self._wire = Frame(Opcode.TEXT, self.frame.encode()).serialize(mask=False)
        return wire

    def __repr__(self) -> str:
        return (f"Event(seq={self.seq}, after={self.after}, reply_id={self.reply_id}, step={self.step}, "
                f"frame={self.frame[:60]!r})")

    def to_bytes(self) -> bytes:
        """Serialized for a broker between processes."""
        return orjson.dumps({"f": self.frame, "s": self.seq, "a": self.after, "u": self.skip_user,
                             "m": self.members, "r": self.reply_id, "p": self.step, "o": self.only_user})

    @classmethod
    def from_bytes(cls, data: bytes) -> Event:
        d = orjson.loads(data)
        return cls(frame=d["f"], seq=d["s"], after=d["a"], skip_user=d["u"],
                   members=tuple(d["m"]) if d["m"] is not None else None, reply_id=d["r"], step=d["p"], only_user=d.get("o"))
