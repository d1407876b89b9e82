"""WebSocket frames: decoding and validation into plain values, and the server's frames. No I/O."""

from __future__ import annotations

from typing import Any

import orjson

from . import inputs
from .errors import BadRequest, ChatError, Invalid

CLIENT_TYPES = frozenset({"auth", "subscribe", "unsubscribe", "message.send", "typing", "ai.cancel", "ping"})


def decode(text: str | bytes) -> tuple[dict[str, Any], Any]:
    """A client frame and its `ref`; raises BadRequest (with whatever ref could be read)."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise BadRequest("frame must be a JSON object")
    ref = frame.get("ref")
    if ref is not None and not (isinstance(ref, (str, int, float)) and not isinstance(ref, bool)):
        raise FrameError(Invalid("ref", "ref must be a string or a number"), None)
    if isinstance(ref, str) and len(ref) > 128:
        raise FrameError(Invalid("ref", "ref must be at most 128 characters"), None)
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise FrameError(Invalid("type", f"unknown frame type {kind!r}" if isinstance(kind, str)
                                 else "type must be a string"), ref)
    return frame, ref


class FrameError(Exception):
    """A ChatError tied to the ref of the frame that caused it."""

    def __init__(self, error: ChatError, ref: Any) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref


def conversation_id(frame: dict[str, Any]) -> int:
    value = frame.get("conversation_id")
    if isinstance(value, str):
        raise Invalid("conversation_id", "conversation_id must be an integer")
    return inputs.integer(value, "conversation_id", minimum=1)


def after(frame: dict[str, Any]) -> int | None:
    value = frame.get("after")
    if value is None:
        return None
    if isinstance(value, str):
        raise Invalid("after", "after must be an integer seq")
    return inputs.integer(value, "after")


def error_frame(err: ChatError, ref: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", **err.body()}
    if ref is not None:
        frame["ref"] = ref
    return frame
