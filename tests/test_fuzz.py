"""Property tests: any JSON a client sends gets a contract answer (never a 500) and stores
nothing unless it was accepted."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Client, User

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
message_bodies = st.fixed_dictionaries(
    {},
    optional={"content": json_values | st.text(max_size=60), "client_id": json_values, "model": json_values,
              "ai": json_values, "extra": json_values,
              "models": json_values | st.lists(st.sampled_from(["echo:echo", "auto", "x:y"]), max_size=4)},
)
conversation_bodies = st.fixed_dictionaries(
    {},
    optional={"title": json_values | st.text(max_size=60), "mode": st.sampled_from(["solo", "group", "x"]) | json_values,
              "with_ai": json_values, "default_model_id": json_values, "participant_usernames": json_values,
              "ai_answers": st.sampled_from(["all", "mentions"]) | json_values,
              "instructions": json_values | st.text(max_size=60), "template": json_values},
)
OK = {200, 201}
CLIENT_ERRORS = {400, 404, 409, 413, 422}

@pytest.fixture(scope="module")
async def fz(client: Client) -> User:
    return await client.user("fz")


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=message_bodies)
async def test_any_message_body_gets_a_contract_answer(fz: User, body: dict[str, Any]) -> None:
    u = fz
    conv = await u.conversation(with_ai=False)
    r = await u.call("POST", f"/conversations/{conv['id']}/messages", data=orjson.dumps(body),
                     headers={"Content-Type": "application/json"})
    assert r.status in OK | CLIENT_ERRORS, (body, r.status, r.body)
    if r.status not in OK:
        assert set(r.body["error"]) >= {"code", "message"}
    page = await u.call("GET", f"/conversations/{conv['id']}/messages")
    assert len(page.body["messages"]) == (1 if r.status in OK else 0)


@FUZZ
@given(body=conversation_bodies)
async def test_any_conversation_body_gets_a_contract_answer(fz: User, body: dict[str, Any]) -> None:
    u = fz
    before = len((await u.call("GET", "/conversations")).body["conversations"])
    r = await u.call("POST", "/conversations", data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status in OK | CLIENT_ERRORS, (body, r.status, r.body)
    listed = (await u.call("GET", "/conversations")).body["conversations"]
    assert len(listed) == before + (1 if r.status in OK else 0)


@FUZZ
@given(frame=st.dictionaries(st.sampled_from(["type", "conversation_id", "content", "after", "ref", "state",
                                             "reply_id", "model", "client_id"]), json_values, max_size=6))
async def test_any_frame_gets_an_answer_and_the_socket_stays_open(fz: User, frame: dict[str, Any]) -> None:
    u = fz
    s = await u.ws()
    try:
        await s.conn.send(orjson.dumps(frame).decode())
        await s.send({"type": "ping", "ref": "after"})
        async with asyncio.timeout(5):
            while True:
                f = await s.recv()
                if f.get("type") == "pong" and f.get("ref") == "after":
                    break
                assert f["type"] in {"error", "pong", "subscribed", "message", "message.ack", "unsubscribed",
                                     "ack", "presence", "typing", "ai.start", "ai.delta", "ai.done", "ai.error",
                                     "conversation.updated"}, f
                if f["type"] == "error":
                    assert f["code"] in {"bad_request", "invalid", "not_found", "forbidden", "unknown_model",
                                         "too_large", "rate_limited"}, f
    finally:
        await s.close()
