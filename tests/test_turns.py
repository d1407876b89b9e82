"""Turns end to end: real fake providers over HTTP, a real server, real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.records import FinalReply
from server.settings import ProviderConfig
from tests.conftest import Client, Running, Socket, running_server
from tests.fakes import FakeAnthropic, FakeOpenAI


class Rig:
    def __init__(self, srv: Running, client: Client, openai: FakeOpenAI, anthropic: FakeAnthropic) -> None:
        self.srv, self.client, self.openai, self.anthropic = srv, client, openai, anthropic

    def reset(self) -> None:
        for fake in (self.openai, self.anthropic):
            fake.fail_status = fake.fail_after = None
            fake.delay = 0.0
            fake.tokens = ["Hello", ",", " world", "!"]
            fake.requests.clear()


@pytest.fixture(scope="module")
async def rig(database_url: str, http: Any) -> AsyncIterator[Rig]:
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        providers = (
            ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, api_key="sk-test",
                           models=("gpt-a", "gpt-b")),
            ProviderConfig("anthropic", "anthropic", "Anthropic", base_url=an.base_url, api_key="ak-test",
                           models=("claude-x",)),
        )
        async with running_server(database_url, providers=providers, provider_timeout_idle=2.0,
                                  provider_timeout_first_token=3.0, coalesce_ms=0.0) as srv:
            yield Rig(srv, Client(http, srv.base_url, srv.ws_url), oa, an)


@pytest.fixture
def ai(rig: Rig) -> Rig:
    rig.reset()
    return rig


def is_end(f: dict[str, Any]) -> bool:
    return f["type"] in ("ai.done", "ai.error")


async def turn_frames(sock: Socket, timeout: float = 10.0) -> list[dict[str, Any]]:
    return await sock.collect({"ai.start", "ai.delta", "ai.done", "ai.error"}, is_end, timeout)


async def room(ai: Rig, **conv: Any) -> tuple[Any, dict[str, Any], Socket]:
    u = await ai.client.user("ai", display_name="Alice")
    c = await u.conversation(**conv)
    s = await u.ws()
    await s.subscribe(c["id"])
    return u, c, s


def check_stream(frames: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Every frame names the model; indexes are gap-free; deltas add up to the stored content."""
    deltas = [f for f in frames if f["type"] == "ai.delta"]
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    end = frames[-1]
    assert all(f["model"] == model for f in frames if f["type"] != "ai.start" or "fallback_from" not in f
               or f["model"] == model)
    stored = end["message"] if end["type"] == "ai.done" else end["message_obj"]
    assert "".join(d["text"] for d in deltas) == stored["content"]
    assert stored["model_used"] == model
    return stored


async def test_system_tier_echo_streams_tagged_frames_and_stores_the_reply(ai: Rig) -> None:
    u, c, s = await room(ai)
    r = await u.send(c["id"], "echo these words back")
    assert r.status == 201 and r.body["ai"]["model"] == "echo:echo" and r.body["ai"]["tier"] == "system"
    frames = await turn_frames(s)
    start = frames[0]
    assert start["type"] == "ai.start" and start["reply_id"] == r.body["ai"]["reply_id"]
    assert start["reply_to"] == r.body["message"]["id"] and start["tier"] == "system"
    assert all(f["model"] == "echo:echo" for f in frames)
    stored = check_stream(frames, "echo:echo")
    assert stored["content"] == "echo these words back"
    assert (stored["status"], stored["role"], stored["reply_to"]) == ("complete", "assistant", r.body["message"]["id"])
    assert stored["id"] == start["message_id"] and stored["seq"] == start["seq"] == 2
    assert stored["usage"]["completion_tokens"] == 4
    page = await u.call("GET", f"/conversations/{c['id']}/messages")
    assert page.body["messages"][-1] == stored


async def test_conversation_default_beats_system_and_message_override_beats_both(ai: Rig) -> None:
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    r = await u.send(c["id"], "hi")
    assert (r.body["ai"]["model"], r.body["ai"]["tier"]) == ("openai:gpt-a", "conversation")
    stored = check_stream(await turn_frames(s), "openai:gpt-a")
    assert stored["content"] == "Hello, world!"
    sent = ai.openai.requests[-1]
    assert sent.json["model"] == "gpt-a" and sent.json["stream"] is True
    assert sent.headers["Authorization"] == "Bearer sk-test"
    r = await u.send(c["id"], "again", model="anthropic:claude-x")
    assert (r.body["ai"]["model"], r.body["ai"]["tier"]) == ("anthropic:claude-x", "message")
    check_stream(await turn_frames(s), "anthropic:claude-x")
    assert ai.anthropic.requests[-1].json["model"] == "claude-x"
    r = await u.send(c["id"], "third")  # the override was for one message only
    assert r.body["ai"]["tier"] == "conversation"
    await turn_frames(s)
    await s.close()


async def test_group_history_names_who_said_what(ai: Rig) -> None:
    alice = await ai.client.user("al", display_name="Alice")
    bob = await ai.client.user("bo", display_name="Bob")
    c = await alice.conversation(mode="group", ai_answers="all", participant_usernames=[bob.username],
                                 default_model_id="openai:gpt-a")
    s = await alice.ws()
    await s.subscribe(c["id"])
    await alice.send(c["id"], "first question", ai=False)
    await bob.send(c["id"], "second question")
    await turn_frames(s)
    contents = [m["content"] for m in ai.openai.requests[-1].json["messages"]]
    assert contents[-2:] == ["Alice: first question", "Bob: second question"]
    assert ai.openai.requests[-1].json["messages"][0]["role"] == "system"
    await s.close()


async def test_ai_false_and_with_ai_off_start_no_turn(ai: Rig) -> None:
    u, c, s = await room(ai)
    r = await u.send(c["id"], "quiet", ai=False)
    assert r.body["ai"] is None
    off = await u.conversation(with_ai=False)
    r = await u.send(off["id"], "also quiet", model="openai:gpt-a")
    assert r.body["ai"] is None
    assert [f for f in await s.quiet(0.3) if f["type"].startswith("ai.")] == []
    await s.close()


async def test_fallback_to_the_next_tier_before_the_first_token(ai: Rig) -> None:
    ai.openai.fail_status = 500
    u, c, s = await room(ai, default_model_id="anthropic:claude-x")
    r = await u.send(c["id"], "hi", model="openai:gpt-a")
    assert r.body["ai"]["model"] == "openai:gpt-a"
    frames = await turn_frames(s)
    starts = [f for f in frames if f["type"] == "ai.start"]
    assert [f["model"] for f in starts] == ["openai:gpt-a", "anthropic:claude-x"]
    assert starts[1]["fallback_from"] == "openai:gpt-a"
    assert all(f["model"] == "anthropic:claude-x" for f in frames if f["type"] in ("ai.delta", "ai.done"))
    stored = frames[-1]["message"]
    assert stored["model_used"] == "anthropic:claude-x" and stored["status"] == "complete"
    # How it came to be stays with the reply: the history shows it too.
    assert stored["tier"] == "conversation" and stored["fallback_from"] == "openai:gpt-a"
    page = (await u.call("GET", f"/conversations/{c['id']}/messages")).body["messages"]
    assert (page[-1]["tier"], page[-1]["fallback_from"]) == ("conversation", "openai:gpt-a")
    await s.close()


@pytest.mark.parametrize("mode", ["reset", "error_event", "malformed", "eof"])
async def test_provider_failure_after_tokens_stores_the_partial_as_error(ai: Rig, mode: str) -> None:
    ai.openai.fail_after, ai.openai.fail_mode = 2, mode
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    await u.send(c["id"], "hi")
    frames = await turn_frames(s)
    end = frames[-1]
    assert end["type"] == "ai.error" and end["code"] in ("provider_error", "unavailable") and end["message"]
    assert end["model"] == "openai:gpt-a"
    stored = check_stream(frames, "openai:gpt-a")
    assert stored["status"] == "error" and stored["content"] == "Hello,"
    await s.close()


@pytest.mark.parametrize("status,body", [(429, {"error": {"message": "Rate limit reached", "type": "rate"}}),
                                         (502, "<html><body><h1>502 Bad Gateway</h1></body></html>")])
async def test_provider_http_errors_before_the_first_token_fall_back_to_the_next_tier(
        ai: Rig, status: int, body: Any) -> None:
    ai.openai.fail_status, ai.openai.fail_body = status, body
    ai.openai.fail_content_type = "text/html" if isinstance(body, str) else None
    u, c, s = await room(ai)
    await u.send(c["id"], "hi", model="openai:gpt-a")
    frames = await turn_frames(s)
    end = frames[-1]
    # echo:echo (the system default) is a lower tier: the turn falls back to it.
    assert [f.get("fallback_from") for f in frames if f["type"] == "ai.start"] == [None, "openai:gpt-a"]
    assert end["type"] == "ai.done" and end["model"] == "echo:echo"
    ai.openai.fail_content_type = None
    ai.openai.fail_body = None
    await s.close()


async def test_fallback_walks_down_every_tier_and_each_start_names_its_own_tier(ai: Rig) -> None:
    ai.openai.fail_status = 503
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    await u.send(c["id"], "hi", model="openai:gpt-b")  # both openai; then echo answers
    frames = await turn_frames(s)
    starts = [(f["model"], f["tier"]) for f in frames if f["type"] == "ai.start"]
    assert starts == [("openai:gpt-b", "message"), ("openai:gpt-a", "conversation"), ("echo:echo", "system")]
    assert frames[-1]["type"] == "ai.done" and frames[-1]["model"] == "echo:echo"
    await s.close()


async def test_http_errors_with_no_lower_tier_left_end_in_ai_error_with_the_providers_reason(
        database_url: str, http: Any) -> None:
    async with FakeOpenAI() as oa:
        cfg = ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, models=("gpt-a",))
        async with running_server(database_url, providers=(cfg,), default_model="openai:gpt-a") as srv:
            u = await Client(http, srv.base_url, srv.ws_url).user("ai")
            c = await u.conversation()
            s = await u.ws()
            await s.subscribe(c["id"])
            cases = [(429, {"error": {"message": "Rate limit reached", "type": "rate"}}, "Rate limit reached"),
                     (500, "<html>Internal Server Error</html>", "500")]
            for status, body, reason in cases:
                oa.fail_status, oa.fail_body = status, body
                oa.fail_content_type = "text/html" if isinstance(body, str) else None
                await u.send(c["id"], "hi")
                frames = await turn_frames(s)
                end = frames[-1]
                assert [f["model"] for f in frames if f["type"] == "ai.start"] == ["openai:gpt-a"]
                assert end["type"] == "ai.error" and end["code"] == "provider_error" and reason in end["message"]
                assert end["message_obj"]["status"] == "error" and end["message_obj"]["content"] == ""
                # The reason stays with the reply: history says it too.
                assert end["message_obj"]["error"] == {"code": "provider_error", "message": end["message"]}
                page = (await u.call("GET", f"/conversations/{c['id']}/messages")).body["messages"]
                assert page[-1]["error"] == end["message_obj"]["error"]
            await s.close()


async def test_stalled_provider_hits_the_idle_timeout(ai: Rig) -> None:
    ai.openai.fail_after, ai.openai.fail_mode = 1, "stall"
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    await u.send(c["id"], "hi")
    frames = await turn_frames(s, timeout=10)
    end = frames[-1]
    assert end["type"] == "ai.error" and "no data within 2s" in end["message"]
    assert end["message_obj"]["content"] == "Hello" and end["message_obj"]["status"] == "error"
    await s.close()


async def test_cancel_stops_the_provider_and_stores_the_partial(ai: Rig) -> None:
    ai.openai.tokens = [f"t{i} " for i in range(100)]
    ai.openai.delay = 0.02
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    r = await u.send(c["id"], "long please")
    await s.until("ai.delta")
    await s.send({"type": "ai.cancel", "reply_id": r.body["ai"]["reply_id"], "ref": "c"})
    frames = await turn_frames(s)
    end = frames[-1]
    assert end["type"] == "ai.done" and end["message"]["status"] == "cancelled"
    assert end["message"]["cancelled_by"] == {"id": u.id, "username": u.username, "display_name": "Alice"}
    assert 0 < len(end["message"]["content"]) < len("".join(ai.openai.tokens))
    await ai.openai.wait_disconnects(1, timeout=2)
    await s.close()


async def test_only_author_or_owner_may_cancel(ai: Rig) -> None:
    ai.openai.tokens = [f"t{i} " for i in range(200)]
    ai.openai.delay = 0.02  # four seconds: still streaming when the owner cancels
    owner = await ai.client.user()
    member, other = await ai.client.user(), await ai.client.user()
    c = await owner.conversation(mode="group", ai_answers="all", participant_usernames=[member.username, other.username],
                                 default_model_id="openai:gpt-a")
    s = await other.ws()
    await s.subscribe(c["id"])
    o = await owner.ws()
    r = await member.send(c["id"], "go")
    await s.until("ai.delta")
    await s.send({"type": "ai.cancel", "reply_id": r.body["ai"]["reply_id"], "ref": 1})
    err = await s.until("error")
    assert err["code"] == "forbidden" and err["ref"] == 1
    await o.send({"type": "ai.cancel", "reply_id": r.body["ai"]["reply_id"], "ref": 2})
    assert (await o.until("ack"))["ref"] == 2
    end = await s.until("ai.done")
    assert end["message"]["status"] == "cancelled"
    await s.close()
    await o.close()


async def test_two_messages_get_replies_in_order(ai: Rig) -> None:
    ai.openai.delay = 0.01
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    a = await u.send(c["id"], "one")
    b = await u.send(c["id"], "two")
    first = await turn_frames(s)
    second = await turn_frames(s)
    assert first[0]["reply_to"] == a.body["message"]["id"] and second[0]["reply_to"] == b.body["message"]["id"]
    assert first[-1]["message"]["seq"] < second[-1]["message"]["seq"]
    # The second turn waited for the first, and its history includes the first reply.
    sent = [(m["role"], m["content"]) for m in ai.openai.requests[-1].json["messages"]]
    assert sent[-3:] == [("user", "one"), ("assistant", "Hello, world!"), ("user", "two")]
    first_sent = [(m["role"], m["content"]) for m in ai.openai.requests[-2].json["messages"]]
    assert first_sent[-1] == ("user", "one") and ("user", "two") not in first_sent
    await s.close()


async def test_many_conversations_stream_concurrently(ai: Rig) -> None:
    ai.openai.delay = 0.25  # one-second streams: they overlap however slowly the turns start
    ai.openai.max_active = 0
    rooms = [await room(ai, default_model_id="openai:gpt-a") for _ in range(6)]
    await asyncio.gather(*(u.send(c["id"], "go") for u, c, _ in rooms))
    ends = await asyncio.gather(*(turn_frames(s) for _, _, s in rooms))
    assert all(e[-1]["type"] == "ai.done" and e[-1]["message"]["content"] == "Hello, world!" for e in ends)
    assert ai.openai.max_active >= 3
    for _, _, s in rooms:
        await s.close()


async def test_wait_true_returns_the_finished_reply(ai: Rig) -> None:
    u = await ai.client.user()
    c = await u.conversation(default_model_id="anthropic:claude-x")
    r = await u.call("POST", f"/conversations/{c['id']}/messages?wait=true", {"content": "hi"})
    assert r.status == 201
    assert r.body["reply"]["content"] == "Hello, world!" and r.body["reply"]["model_used"] == "anthropic:claude-x"
    assert r.body["reply"]["reply_to"] == r.body["message"]["id"]


async def test_event_stream_post_streams_the_turn_as_sse(ai: Rig) -> None:
    u = await ai.client.user()
    c = await u.conversation()
    async with ai.client.http.post(f"{ai.client.base_url}/conversations/{c['id']}/messages",
                                   json={"content": "stream me"},
                                   headers={"Authorization": f"Bearer {u.token}",
                                            "Accept": "text/event-stream"}) as resp:
        assert resp.status == 201 and resp.headers["Content-Type"].startswith("text/event-stream")
        body = (await resp.read()).decode()
    blocks = [block.split("\n") for block in body.strip().split("\n\n")]
    events = [(lines[0].removeprefix("event: "), json.loads(lines[-1].removeprefix("data: "))) for lines in blocks]
    names = [name for name, _ in events]
    assert names[0] == "message.ack" and names[-1] == "ai.done" and "ai.start" in names
    text = "".join(data["text"] for name, data in events if name == "ai.delta")
    assert text == events[-1][1]["message"]["content"] and text


async def test_late_subscriber_sees_the_text_so_far(ai: Rig) -> None:
    ai.openai.tokens = [f"w{i} " for i in range(40)]
    ai.openai.delay = 0.05  # two seconds: still streaming once the late socket has subscribed
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    await u.send(c["id"], "go")
    await s.until("ai.delta", index=3)
    late = await u.ws()
    _, sub = await late.subscribe(c["id"])
    assert len(sub["streaming"]) == 1
    snap = sub["streaming"][0]
    assert snap["model"] == "openai:gpt-a" and snap["text"].startswith("w0 w1 w2 w3 ")
    rest = await late.collect({"ai.delta", "ai.done"}, is_end)
    final = rest[-1]["message"]["content"]
    assert snap["text"] + "".join(f["text"] for f in rest if f["type"] == "ai.delta") == final
    await s.close()
    await late.close()


async def test_turn_survives_the_requester_disconnecting(ai: Rig) -> None:
    ai.openai.delay = 0.02
    u = await ai.client.user()
    c = await u.conversation(default_model_id="openai:gpt-a")
    s = await u.ws()
    await s.send({"type": "message.send", "conversation_id": c["id"], "content": "bye"})
    await s.until("message.ack")
    await s.close()
    for _ in range(100):
        page = await u.call("GET", f"/conversations/{c['id']}/messages")
        last = page.body["messages"][-1]
        if last["role"] == "assistant" and last["status"] == "complete":
            break
        await asyncio.sleep(0.05)
    assert last["content"] == "Hello, world!" and last["status"] == "complete"


async def test_unknown_models_are_rejected_wherever_they_are_set(ai: Rig) -> None:
    u, c, s = await room(ai)
    for model in ["openai:gpt-zzz", "nope:x", "client:999:llama", "openai", ""]:
        r = await u.send(c["id"], "x", model=model)
        assert r.status == 422 and r.body["error"]["code"] in ("unknown_model", "invalid"), model
        r = await u.call("PUT", f"/conversations/{c['id']}", {"default_model_id": model})
        assert r.status == 422, model
    assert (await u.call("GET", f"/conversations/{c['id']}/messages")).body["messages"] == []
    await s.close()


async def test_per_provider_concurrency_limit_queues_turns(database_url: str, http: Any) -> None:
    async with FakeOpenAI(delay=0.02) as oa:
        cfg = ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, models=("gpt-a",), concurrency=1)
        async with running_server(database_url, providers=(cfg,), default_model="openai:gpt-a") as srv:
            c = Client(http, srv.base_url, srv.ws_url)
            u = await c.user()
            convs = [await u.conversation() for _ in range(3)]
            replies = await asyncio.gather(*(u.call("POST", f"/conversations/{cv['id']}/messages?wait=true",
                                                     {"content": "go"}) for cv in convs))
            assert all(r.body["reply"]["status"] == "complete" for r in replies)
            assert oa.max_active == 1 and oa.completed == 3


async def test_restart_marks_this_nodes_streaming_replies_interrupted(database_url: str, http: Any) -> None:
    async with running_server(database_url, node_id="crashy") as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        conv = await u.conversation(with_ai=False)
        m = (await u.send(conv["id"], "q")).body["message"]
        store = srv.node.store
        # What a crash leaves behind: a reply still `streaming`, owned by this node and another.
        mine, _, _ = await store.messages.start_reply(conv["id"], m["id"], m["seq"], "r-crash", "echo:echo", "system",
                                                   u.id, "crashy", 40, 1000)
        theirs, _, _ = await store.messages.start_reply(conv["id"], m["id"], m["seq"], "r-other", "echo:echo", "system",
                                                     u.id, "other-node", 40, 1000)
    async with running_server(database_url, node_id="crashy") as srv:
        page = await Client(http, srv.base_url, srv.ws_url).call("GET", f"/conversations/{conv['id']}/messages",
                                                                 u.token)
        status = {x["id"]: x["status"] for x in page.body["messages"]}
        assert status[mine.id] == "interrupted" and status[theirs.id] == "streaming"


async def test_history_stops_at_the_character_budget(database_url: str, http: Any) -> None:
    async with FakeOpenAI() as oa:
        cfg = ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, models=("gpt-a",))
        async with running_server(database_url, providers=(cfg,), default_model="openai:gpt-a",
                                  history_chars=250) as srv:
            c = Client(http, srv.base_url, srv.ws_url)
            u = await c.user()
            conv = await u.conversation()
            for i in range(4):
                await u.send(conv["id"], f"{i}" * 100, ai=False)
            r = await u.call("POST", f"/conversations/{conv['id']}/messages?wait=true", {"content": "last"})
            assert r.body["reply"]["status"] == "complete"
            sent = [m["content"] for m in oa.requests[-1].json["messages"] if m["role"] == "user"]
            # newest first until the budget: "last", then two 100-character messages fit in 250
            assert sent == ["2" * 100, "3" * 100, "last"]


async def test_regenerate_answers_the_same_message_again_with_another_model_and_the_room_sees_both(ai: Rig) -> None:
    u, c, s = await room(ai, default_model_id="openai:gpt-a")
    first = await u.call("POST", f"/conversations/{c['id']}/messages?wait=true", {"content": "compare us"})
    reply, trigger = first.body["reply"], first.body["message"]
    again = await u.call("POST", f"/conversations/{c['id']}/messages/{reply['id']}/regenerate?wait=true",
                         {"model": "anthropic:claude-x"})
    assert again.status == 201, again.body
    assert again.body["reply_to"] == trigger["id"] and again.body["ai"]["model"] == "anthropic:claude-x"
    second = again.body["reply"]
    assert second["reply_to"] == trigger["id"] and second["id"] != reply["id"] and second["seq"] > reply["seq"]
    assert second["model_used"] == "anthropic:claude-x" and second["status"] == "complete"
    # Regenerating the user message itself, with no body: the room's chain again.
    third = await u.call("POST", f"/conversations/{c['id']}/messages/{trigger['id']}/regenerate")
    assert third.status == 201 and third.body["ai"]["model"] == "openai:gpt-a"
    frames = await s.collect({"ai.done"}, lambda f: f["reply_id"] == third.body["ai"]["reply_id"], timeout=10)
    assert {f["message"]["reply_to"] for f in frames} == {trigger["id"]}
    page = (await u.call("GET", f"/conversations/{c['id']}/messages")).body["messages"]
    assert len([m for m in page if m["reply_to"] == trigger["id"]]) == 3
    assert (await u.call("POST", f"/conversations/{c['id']}/messages/999999/regenerate")).status == 404
    bad = await u.call("POST", f"/conversations/{c['id']}/messages/{trigger['id']}/regenerate", {"model": "no:pe"})
    assert bad.status == 422 and bad.body["error"]["code"] == "unknown_model"
    stranger = await ai.client.user()
    assert (await stranger.call("POST", f"/conversations/{c['id']}/messages/{trigger['id']}/regenerate")).status == 404
    await s.close()


async def test_side_by_side_replies_stream_at_once_each_its_own_message_and_cancelling_one_leaves_the_other(
        ai: Rig) -> None:
    ai.openai.tokens = ai.anthropic.tokens = [f"t{i} " for i in range(200)]  # four seconds each
    ai.openai.delay = ai.anthropic.delay = 0.02
    u, c, s = await room(ai)
    r = await u.send(c["id"], "compare", models=["openai:gpt-a", "anthropic:claude-x"])
    assert r.status == 201 and [a["model"] for a in r.body["ais"]] == ["openai:gpt-a", "anthropic:claude-x"]
    assert r.body["ai"] == r.body["ais"][0]
    first, second = (a["reply_id"] for a in r.body["ais"])
    frames = []
    async with asyncio.timeout(10):
        while len([f for f in frames if f["type"] == "ai.start"]) < 2:
            frames.append(await s.recv())
    await s.send({"type": "ai.cancel", "reply_id": first, "ref": "c"})
    ends: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(10):
        while len(ends) < 2:
            f = await s.recv()
            if f["type"] in ("ai.done", "ai.error"):
                ends[f["reply_id"]] = f["message"]
    assert ends[first]["status"] == "cancelled" and ends[second]["status"] == "complete"
    assert ends[first]["seq"] != ends[second]["seq"] and ends[second]["model_used"] == "anthropic:claude-x"
    assert ends[first]["reply_to"] == ends[second]["reply_to"] == r.body["message"]["id"]
    for bad in ({"models": ["openai:gpt-a"]}, {"models": ["openai:gpt-a"] * 2},
                {"models": ["openai:gpt-a", "anthropic:claude-x"], "model": "openai:gpt-a"}):
        assert (await u.send(c["id"], "x", **bad)).status == 422, bad
    await s.close()


async def test_a_reply_stored_after_the_next_message_is_in_that_messages_history_after_its_own_trigger(
        database_url: str, http: Any) -> None:
    """"two" was sent while the turn for "one" was still queued, so its seq is below that reply's:
    the turn answering "two" still sees the reply to "one", in its place, and "two" stays last;
    answering "one" again does not see it (it answers the same message)."""
    async with running_server(database_url, node_id="late") as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        conv = await u.conversation(with_ai=False)
        one = (await u.send(conv["id"], "one")).body["message"]
        two = (await u.send(conv["id"], "two")).body["message"]
        store = srv.node.store
        r1, history, _ = await store.messages.start_reply(conv["id"], one["id"], one["seq"], "r-one", "echo:echo",
                                                          "system", u.id, "late", 40, 1000)
        assert [line.content for _, line in history] == ["one"]
        await store.messages.finish_reply(FinalReply(r1.id, "reply to one", "complete", "echo:echo", "system", None,
                                                     None, None, None, None, None, None, None))
        _, history, _ = await store.messages.start_reply(conv["id"], two["id"], two["seq"], "r-two", "echo:echo",
                                                         "system", u.id, "late", 40, 1000)
        assert [(seq, line.role, line.content) for seq, line in history] == [
            (one["seq"], "user", "one"), (r1.seq, "assistant", "reply to one"), (two["seq"], "user", "two")]
        _, again, _ = await store.messages.start_reply(conv["id"], one["id"], one["seq"], "r-again", "echo:echo",
                                                       "system", u.id, "late", 40, 1000)
        assert [line.content for _, line in again] == ["one"]
        _, short, _ = await store.messages.start_reply(conv["id"], two["id"], two["seq"], "r-short", "echo:echo",
                                                       "system", u.id, "late", 2, 1000)
        assert [line.content for _, line in short] == ["reply to one", "two"]
