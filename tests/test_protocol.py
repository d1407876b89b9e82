"""The wire, with plain values: client frames parse into typed commands or errors that keep
their ref; every server frame has the contract's shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from server import protocol
from server.errors import BadRequest, Invalid, RateLimited
from server.protocol import (
    Authenticate,
    Cancel,
    FrameError,
    Ping,
    SendMessage,
    Subscribe,
    Typing,
    Unsubscribe,
)
from server.records import Conversation, Message, Participant, User
from server.settings import Settings

SETTINGS = Settings(max_content_chars=20, max_client_id_chars=8)
NOW = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
ALICE = User(1, "alice", "Alice", True)


def parse(frame: Any) -> tuple[Any, Any]:
    return protocol.parse(orjson.dumps(frame), SETTINGS)


def failure(frame: Any) -> FrameError:
    with pytest.raises(FrameError) as info:
        protocol.parse(frame if isinstance(frame, (str, bytes)) else orjson.dumps(frame), SETTINGS)
    return info.value


@pytest.mark.parametrize(("frame", "command"), [
    ({"type": "auth", "token": "t"}, Authenticate("t")),
    ({"type": "subscribe", "conversation_id": 3}, Subscribe(3, None)),
    ({"type": "subscribe", "conversation_id": 3, "after": 0}, Subscribe(3, 0)),
    ({"type": "unsubscribe", "conversation_id": 3}, Unsubscribe(3)),
    ({"type": "message.send", "conversation_id": 3, "content": "hi"}, SendMessage(3, "hi", None, None, None)),
    ({"type": "message.send", "conversation_id": 3, "content": "hi", "model": "echo:echo", "client_id": "c1",
      "ai": False}, SendMessage(3, "hi", "echo:echo", "c1", False)),
    ({"type": "typing", "conversation_id": 3, "state": True}, Typing(3, True)),
    ({"type": "ai.cancel", "reply_id": "abc"}, Cancel("abc")),
    ({"type": "ping"}, Ping()),
])
def test_each_client_frame_parses_into_its_command(frame: dict[str, Any], command: Any) -> None:
    assert parse({**frame, "ref": 7}) == (command, 7)


@pytest.mark.parametrize("data", [b"{nope", b"[1, 2]", b'"text"', b"null"])
def test_frames_that_are_not_json_objects_are_bad_requests_without_a_ref(data: bytes) -> None:
    err = failure(data)
    assert isinstance(err.error, BadRequest) and err.ref is None


@pytest.mark.parametrize(("frame", "field"), [
    ({"type": "nope", "ref": "r"}, "type"),
    ({"ref": "r"}, "type"),
    ({"type": "subscribe", "conversation_id": "3", "ref": "r"}, "conversation_id"),
    ({"type": "subscribe", "conversation_id": 0, "ref": "r"}, "conversation_id"),
    ({"type": "subscribe", "conversation_id": 1, "after": "2", "ref": "r"}, "after"),
    ({"type": "subscribe", "conversation_id": 1, "after": -1, "ref": "r"}, "after"),
    ({"type": "message.send", "conversation_id": 1, "content": " \n", "ref": "r"}, "content"),
    ({"type": "message.send", "conversation_id": 1, "content": "x" * 21, "ref": "r"}, "content"),
    ({"type": "message.send", "conversation_id": 1, "content": "a\x00b", "ref": "r"}, "content"),
    ({"type": "message.send", "conversation_id": 1, "content": "hi", "client_id": "x" * 9, "ref": "r"},
     "client_id"),
    ({"type": "message.send", "conversation_id": 1, "content": "hi", "model": 5, "ref": "r"}, "model"),
    ({"type": "message.send", "conversation_id": 1, "content": "hi", "ai": "yes", "ref": "r"}, "ai"),
    ({"type": "typing", "conversation_id": 1, "state": "on", "ref": "r"}, "state"),
    ({"type": "ai.cancel", "ref": "r"}, "reply_id"),
    ({"type": "auth", "token": 5, "ref": "r"}, "token"),
])
def test_invalid_fields_name_the_field_and_keep_the_ref(frame: dict[str, Any], field: str) -> None:
    err = failure(frame)
    assert isinstance(err.error, Invalid) and err.error.details["field"] == field  # type: ignore[index]
    assert err.ref == "r"


@pytest.mark.parametrize("ref", [True, [1], {"a": 1}, "x" * 129])
def test_a_ref_that_cannot_be_echoed_is_invalid(ref: Any) -> None:
    err = failure({"type": "ping", "ref": ref})
    assert isinstance(err.error, Invalid) and err.ref is None


def test_the_rest_body_and_the_frame_share_one_parser() -> None:
    body = {"content": "hi", "model": "echo:echo", "client_id": "c", "ai": False}
    assert protocol.send_message(body, 9, SETTINGS) == parse({"type": "message.send", "conversation_id": 9,
                                                              **body})[0]


def message(**changes: Any) -> Message:
    base = dict(id=5, conversation_id=2, seq=3, role="user", author=ALICE, content="hi", model_used=None,
                status="complete", client_id="c", reply_to=None, reply_id=None, prompt_tokens=None,
                completion_tokens=None, created_at=NOW)
    return Message(**{**base, **changes})  # type: ignore[arg-type]


def test_message_and_ack_frames_carry_the_stored_message() -> None:
    m = message()
    wire = {"id": 5, "conversation_id": 2, "seq": 3, "role": "user",
            "author": {"id": 1, "username": "alice", "display_name": "Alice"}, "content": "hi",
            "model_used": None, "status": "complete", "client_id": "c", "reply_to": None, "usage": None,
            "created_at": "2026-01-02T03:04:05.006Z", "tier": None, "fallback_from": None, "cancelled_by": None,
            "error": None, "route_reason": None}
    assert protocol.message(m) == {"type": "message", "message": wire}
    ai = protocol.ai_info("r1", "echo:echo", "system")
    assert protocol.message_ack("ref", m, ai, False) == {"type": "message.ack", "ref": "ref", "client_id": "c",
                                                         "message": wire, "ai": ai}
    assert protocol.message_ack(None, m, None, True)["duplicate"] is True
    event = protocol.message_event(m)
    assert event.seq == 3 and orjson.loads(event.frame) == {"type": "message", "message": wire}


def test_ai_frames_name_the_model_and_reply() -> None:
    reply = message(id=6, seq=4, role="assistant", author=None, content="", status="streaming", client_id=None,
                    reply_to=5, reply_id="r1")
    assert protocol.ai_start(reply, "r1", "echo:echo", "system", 5, None) == {
        "type": "ai.start", "conversation_id": 2, "reply_id": "r1", "message_id": 6, "seq": 4,
        "model": "echo:echo", "tier": "system", "reply_to": 5}
    assert protocol.ai_start(reply, "r1", "echo:echo", "system", 5, "openai:a")["fallback_from"] == "openai:a"
    assert protocol.ai_delta(2, "r1", "echo:echo", 0, "He") == {
        "type": "ai.delta", "conversation_id": 2, "reply_id": "r1", "model": "echo:echo", "index": 0, "text": "He"}
    done = protocol.ai_done("r1", "echo:echo", reply)
    assert done["type"] == "ai.done" and done["message"]["id"] == 6 and done["conversation_id"] == 2
    err = protocol.ai_error(2, "r1", "openai:a", "provider_error", "boom", reply)
    assert err == {"type": "ai.error", "conversation_id": 2, "reply_id": "r1", "model": "openai:a",
                   "code": "provider_error", "message": "boom", "message_obj": reply.wire()}


def test_error_frames_carry_code_message_and_ref_only_when_given() -> None:
    assert protocol.error(Invalid("content", "too long", max=5), "r") == {
        "type": "error", "code": "invalid", "message": "too long",
        "details": {"field": "content", "max": 5}, "ref": "r"}
    assert "ref" not in protocol.error(BadRequest("nope"))
    assert protocol.error(RateLimited("slow down", retry_after=0.25))["retry_after"] == 0.25


def test_room_frames_have_the_contract_shapes() -> None:
    assert protocol.hello(ALICE, NOW) == {"type": "hello", "user": ALICE.wire(),
                                          "server_time": "2026-01-02T03:04:05.006Z"}
    assert protocol.pong(4) == {"type": "pong", "ref": 4}
    assert protocol.typing(2, ALICE, True) == {"type": "typing", "conversation_id": 2, "user": ALICE.wire(),
                                               "state": True}
    assert protocol.presence(2, ALICE, "left")["state"] == "left"
    live = protocol.Live("r1", "echo:echo", "Hel", 6, 4, "system", step=3)
    sub = protocol.subscribed(2, "s", 4, True, [ALICE], [live])
    assert sub == {"type": "subscribed", "conversation_id": 2, "ref": "s", "last_seq": 4, "recovered": True,
                   "present": [ALICE.wire()],
                   "streaming": [{"reply_id": "r1", "model": "echo:echo", "text": "Hel", "message_id": 6,
                                  "seq": 4, "tier": "system"}]}
    conv = Conversation(2, "t", "solo", True, None, 1, (Participant(1, "alice", "Alice", "owner"),), NOW, NOW, 4)
    assert protocol.conversation_updated(conv) == {"type": "conversation.updated", "conversation": conv.wire()}


def test_budget_warnings_name_the_period_as_daily_or_monthly() -> None:
    for period, word in (("day", "daily"), ("month", "monthly")):
        frame = protocol.budget_warning({"period": period, "limit_usd": 10.0, "spent_usd": 8.0}, 3)
        assert frame["message"] == f"80% of the {word} AI budget of $10.00 is spent"
