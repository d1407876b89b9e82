"""The OpenAI-compatible endpoint, driven by the official `openai` SDK over real HTTP: the same
registry, chain, fallback, auto routing, budgets and usage accounting as chat turns, and
OpenAI's shapes for responses, chunks and errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import openai
import orjson
import pytest

from server.settings import ProviderConfig
from server.store_budgets import Holder
from tests.conftest import Client, Running, fresh_database, running_server
from tests.fakes import FakeOpenAI

PRICE = {"house": {"input": 1.0, "output": 2.0}}  # USD per million tokens
ROUTING = {"default": [{"contains_code": True, "model": "openai:house", "reason": "code goes to house"},
                       {"model": "backup:backup", "reason": "chit-chat goes to backup"}]}


class Rig:
    def __init__(self, srv: Running, client: Client, house: FakeOpenAI, backup: FakeOpenAI, admin: Any) -> None:
        self.srv, self.client, self.house, self.backup, self.admin = srv, client, house, backup, admin

    async def sdk(self, token: str | None = None) -> tuple[openai.AsyncOpenAI, Any]:
        user = await self.client.user("api")
        return openai.AsyncOpenAI(api_key=token or user.token, base_url=self.srv.base_url + "/v1",
                                  max_retries=0, timeout=10), user

    async def settled(self) -> None:
        await self.srv.node.completions.ended()


@pytest.fixture(scope="module")
async def rig(postgres_url: str, http: Any) -> AsyncIterator[Rig]:
    async with FakeOpenAI(models=["house"]) as house, FakeOpenAI(models=["backup"]) as backup:
        providers = (
            ProviderConfig("openai", "openai", "OpenAI", base_url=house.base_url, models=("house",), prices=PRICE),
            ProviderConfig("backup", "openai", "Backup", base_url=backup.base_url, models=("backup",)),
        )
        async with running_server(await fresh_database(postgres_url), providers=providers,
                                  default_model="backup:backup", routing=ROUTING,
                                  api_max_concurrent_per_user=2) as srv:
            client = Client(http, srv.base_url, srv.ws_url)
            admin = await client.user("admin")  # the first user is an admin
            assert admin.info["is_admin"]
            yield Rig(srv, client, house, backup, admin)


@pytest.fixture
def api(rig: Rig) -> Rig:
    for fake in (rig.house, rig.backup):
        fake.fail_status, fake.fail_after, fake.delay, fake.usage = None, None, 0.0, None
        fake.tokens = ["Hello", ",", " world", "!"]
    return rig


async def test_a_non_streaming_completion_answers_in_openai_shape_with_usage_from_the_provider(api: Rig) -> None:
    sdk, _ = await api.sdk()
    api.house.usage = (12, 4)
    done = await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    assert done.model == "openai:house"
    assert done.choices[0].message.role == "assistant" and done.choices[0].message.content == "Hello, world!"
    assert done.choices[0].finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (12, 4, 16)


async def test_a_streamed_completion_arrives_as_chunks_with_the_role_first_then_finish_and_usage(api: Rig) -> None:
    sdk, _ = await api.sdk()
    api.house.usage = (7, 4)
    stream = await sdk.chat.completions.create(model="openai:house", stream=True,
                                               stream_options={"include_usage": True},
                                               messages=[{"role": "system", "content": "be brief"},
                                                         {"role": "user", "content": "hi"}])
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 7 and chunks[-1].usage.completion_tokens == 4
    assert all(c.model == "openai:house" and c.id == chunks[0].id for c in chunks)
    sent = api.house.requests[-1].json
    assert [m["role"] for m in sent["messages"]] == ["system", "user"] and sent["model"] == "house"


async def test_model_list_has_every_served_model_and_auto(api: Rig) -> None:
    sdk, _ = await api.sdk()
    ids = [m.id async for m in sdk.models.list()]
    assert {"openai:house", "backup:backup", "echo:echo", "auto"} <= set(ids)
    one = await sdk.models.retrieve("openai:house")
    assert one.owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.models.retrieve("nope:nothing")
    assert err.value.code == "model_not_found"


async def test_the_system_default_answers_when_the_request_names_no_model(api: Rig) -> None:
    user = await api.client.user()
    r = await user.call("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200 and r.body["model"] == "backup:backup"
    assert r.headers["x-chat-tier"] == "system"


async def test_a_wrong_token_is_refused_with_openais_invalid_api_key(api: Rig) -> None:
    sdk, _ = await api.sdk(token="not-a-token")
    with pytest.raises(openai.AuthenticationError) as err:
        await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert err.value.body["type"] == "invalid_request_error"


async def test_an_unknown_model_is_model_not_found_and_no_provider_is_asked(api: Rig) -> None:
    sdk, _ = await api.sdk()
    asked = len(api.house.requests) + len(api.backup.requests)
    with pytest.raises(openai.NotFoundError) as err:
        await sdk.chat.completions.create(model="nope:nothing", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found" and err.value.param == "model"
    assert len(api.house.requests) + len(api.backup.requests) == asked


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": ["\n"]}, "stop"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}, "stream_options"),
])
async def test_bad_requests_get_openais_400_naming_the_parameter(api: Rig, body: dict[str, Any], param: str) -> None:
    user = await api.client.user()
    r = await user.call("POST", "/v1/chat/completions", body)
    assert r.status == 400, r.body
    assert r.body["error"]["type"] == "invalid_request_error" and r.body["error"]["param"] == param


async def test_bodies_over_the_limit_and_unknown_paths_answer_in_openais_shape(api: Rig) -> None:
    user = await api.client.user()
    r = await user.call("GET", "/v1/nothing")
    assert r.status == 404 and r.body["error"]["type"] == "invalid_request_error"
    r = await user.call("GET", "/v1/chat/completions")
    assert r.status == 405 and "error" in r.body
    r = await user.call("POST", "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.body["error"]["type"] == "invalid_request_error"


async def test_text_content_parts_and_developer_messages_are_accepted(api: Rig) -> None:
    user = await api.client.user()
    r = await user.call("POST", "/v1/chat/completions", {"model": "openai:house", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one "}, {"type": "text", "text": "two"}]}]})
    assert r.status == 200, r.body
    sent = api.house.requests[-1].json["messages"]
    assert sent == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two"}]


async def test_a_model_failing_before_its_first_token_falls_back_to_the_system_default(api: Rig) -> None:
    sdk, _ = await api.sdk()
    api.house.fail_status = 500
    raw = await sdk.chat.completions.with_raw_response.create(model="openai:house",
                                                              messages=[{"role": "user", "content": "hi"}])
    done = raw.parse()
    assert done.model == "backup:backup" and done.choices[0].message.content == "Hello, world!"
    assert raw.headers["x-chat-fallback-from"] == "openai:house" and raw.headers["x-chat-tier"] == "system"


async def test_every_model_failing_is_a_server_error_that_names_no_address(api: Rig) -> None:
    sdk, _ = await api.sdk()
    api.house.fail_status = api.backup.fail_status = 503
    with pytest.raises(openai.APIStatusError) as err:
        await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code in (502, 503) and err.value.body["type"] == "server_error"
    assert "127.0.0.1" not in str(err.value.body) and str(api.backup.port) not in str(err.value.body)


async def test_a_failure_mid_stream_reaches_the_sdk_as_an_error_after_the_text_so_far(api: Rig) -> None:
    sdk, _ = await api.sdk()
    api.house.fail_after, api.house.fail_mode = 2, "error_event"
    stream = await sdk.chat.completions.create(model="openai:house", stream=True,
                                               messages=[{"role": "user", "content": "hi"}])
    got = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert "".join(g or "" for g in got) == "Hello,"
    api.house.fail_mode = "reset"


async def test_a_client_leaving_mid_stream_closes_the_upstream_request_and_is_stored_cancelled(api: Rig) -> None:
    sdk, user = await api.sdk()
    api.house.tokens, api.house.delay = [f"t{i} " for i in range(100)], 0.02
    before = api.house.disconnects
    stream = await sdk.chat.completions.create(model="openai:house", stream=True,
                                               messages=[{"role": "user", "content": "hi"}])
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    assert await api.house.wait_disconnects(before + 1, timeout=5) == before + 1
    await api.settled()
    row = await api.srv.node.store.db.fetchrow(
        "SELECT status, completion_tokens, usage_estimated FROM completions WHERE user_id = $1", user.id)
    assert row["status"] == "cancelled" and row["usage_estimated"] and 0 < row["completion_tokens"] < 100 * 2


async def test_auto_sends_code_to_one_model_and_chit_chat_to_another_with_the_reason(api: Rig) -> None:
    sdk, _ = await api.sdk()
    code = await sdk.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "```python\ndef f(): return 1\n```"}])
    chat = await sdk.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "how are you today?"}])
    assert code.parse().model == "openai:house" and code.headers["x-chat-route-reason"] == "code goes to house"
    assert chat.parse().model == "backup:backup" and chat.headers["x-chat-route-reason"] == "chit-chat goes to backup"
    assert code.headers["x-chat-tier"] == "message"


async def test_completions_count_in_the_users_usage_by_model_and_as_api(api: Rig) -> None:
    sdk, user = await api.sdk()
    api.house.usage = (1000, 500)
    for _ in range(2):
        await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    await api.settled()
    usage = (await user.call("GET", "/usage")).body
    assert usage["total"]["turns"] == 2 and usage["total"]["prompt_tokens"] == 2000
    assert usage["total"]["cost_usd"] == pytest.approx(2 * (1000 * 1.0 + 500 * 2.0) / 1e6)
    assert usage["by_source"] == [{"source": "api", **usage["total"]}]
    assert [b["model"] for b in usage["by_model"]] == ["openai:house"]


async def test_a_user_over_budget_gets_insufficient_quota_before_any_provider_call(api: Rig) -> None:
    sdk, user = await api.sdk()
    api.house.usage = (1_000_000, 0)  # $1.00
    r = await api.admin.call("PUT", f"/budgets/users/{user.id}", {"period": "day", "limit_usd": 0.5})
    assert r.status == 200, r.body
    first = await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert first.usage.prompt_tokens == 1_000_000
    await api.settled()
    asked = len(api.house.requests)
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "insufficient_quota" and "daily AI budget of $0.50" in err.value.message
    assert len(api.house.requests) == asked
    spent = (await user.call("GET", "/budget")).body["budget"]
    assert spent["spent_usd"] == pytest.approx(1.0) and spent["reserved_usd"] == 0


async def test_concurrent_completions_per_user_are_capped_with_a_429(api: Rig) -> None:
    sdk, _ = await api.sdk()
    # 2.5 s per stream: both still hold their slots when the third asks, however slow the machine
    api.house.tokens, api.house.delay = ["a", "b", "c", "d", "e"], 0.5
    streams = [await sdk.chat.completions.create(model="openai:house", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]) for _ in range(2)]
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "rate_limit_exceeded"
    async def text(stream: Any) -> str:
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.gather(*(text(s) for s in streams))
    assert texts == ["abcde", "abcde"]
    await api.settled()
    again = await sdk.chat.completions.create(model="openai:house", messages=[{"role": "user", "content": "hi"}])
    assert again.choices[0].message.content == "abcde"


async def test_a_dead_servers_open_completion_is_interrupted_and_its_budget_hold_let_go(api: Rig) -> None:
    _, user = await api.sdk()
    node, db = api.srv.node, api.srv.node.store.db
    r = await api.admin.call("PUT", f"/budgets/users/{user.id}", {"period": "day", "limit_usd": 5})
    assert r.status == 200
    await db.execute("INSERT INTO server_nodes (node_id, seen_at) VALUES ('dead-node', now() - interval '1 hour')"
                     " ON CONFLICT (node_id) DO UPDATE SET seen_at = now() - interval '1 hour'")
    cid = await node.store.completions.open(user.id, "openai:house", "message", None, "dead-node")
    assert await node.store.budgets.reserve(Holder("completion", cid), user.id, None, Decimal("1")) is True
    assert (await user.call("GET", "/budget")).body["budget"]["reserved_usd"] == 1.0
    await node.turns.replies.heartbeat()  # a survivor's heartbeat ends the dead server's completions
    await node.budgets.sweep()  # and the sweep lets their reservations go
    assert await db.fetchval("SELECT status FROM completions WHERE id = $1", cid) == "interrupted"
    budget = (await user.call("GET", "/budget")).body["budget"]
    assert budget["reserved_usd"] == 0 and budget["spent_usd"] == 0


async def test_a_server_only_thought_dead_spends_its_real_cost_once_when_it_settles_late(api: Rig) -> None:
    _, user = await api.sdk()
    node, db = api.srv.node, api.srv.node.store.db
    assert (await api.admin.call("PUT", f"/budgets/users/{user.id}", {"period": "day", "limit_usd": 5})).status == 200
    await db.execute("INSERT INTO server_nodes (node_id, seen_at) VALUES ('late-node', now() - interval '1 hour')"
                     " ON CONFLICT (node_id) DO UPDATE SET seen_at = now() - interval '1 hour'")
    late = await node.store.completions.open(user.id, "openai:house", "message", None, "late-node")
    assert await node.store.budgets.reserve(Holder("completion", late), user.id, None, Decimal("1")) is True
    await node.turns.replies.heartbeat()  # presumed dead: interrupted, with no cost stored
    await node.budgets.sweep()
    budget = (await user.call("GET", "/budget")).body["budget"]
    assert budget["reserved_usd"] == 0 and budget["spent_usd"] == 0
    await node.budgets.settle(Holder("completion", late), Decimal("0.25"), None, user.id, None)  # it was alive
    assert (await user.call("GET", "/budget")).body["budget"]["spent_usd"] == pytest.approx(0.25)
    # One that stored its cost before the sweep charged it: its own settle adds nothing more.
    done = await node.store.completions.open(user.id, "openai:house", "message", None, "late-node")
    assert await node.store.budgets.reserve(Holder("completion", done), user.id, None, Decimal("1")) is True
    await db.execute("UPDATE completions SET status = 'complete', cost_usd = 0.5 WHERE id = $1", done)
    await node.budgets.sweep()
    assert (await user.call("GET", "/budget")).body["budget"]["spent_usd"] == pytest.approx(0.75)
    await node.budgets.settle(Holder("completion", done), Decimal("0.5"), None, user.id, None)
    budget = (await user.call("GET", "/budget")).body["budget"]
    assert budget["spent_usd"] == pytest.approx(0.75) and budget["reserved_usd"] == 0


async def test_completions_and_messages_share_the_users_send_rate(postgres_url: str, http: Any) -> None:
    async with running_server(await fresh_database(postgres_url), send_rate_per_second=0.05,
                              send_rate_burst=3) as srv:
        client = Client(http, srv.base_url, srv.ws_url)
        u = await client.user()
        sdk = openai.AsyncOpenAI(api_key=u.token, base_url=srv.base_url + "/v1", max_retries=0, timeout=10)
        for _ in range(2):
            await sdk.chat.completions.create(model="echo:echo", messages=[{"role": "user", "content": "hi"}])
        assert (await u.send((await u.conversation(with_ai=False))["id"], "one message")).status == 201
        with pytest.raises(openai.RateLimitError) as err:
            await sdk.chat.completions.create(model="echo:echo", messages=[{"role": "user", "content": "hi"}])
        assert err.value.code == "rate_limit_exceeded" and int(err.value.response.headers["retry-after"]) >= 1


async def test_a_client_leaving_a_non_streamed_completion_closes_the_upstream_request(api: Rig) -> None:
    _, user = await api.sdk()
    api.house.tokens, api.house.delay = [f"t{i} " for i in range(100)], 0.02
    before = api.house.disconnects
    body = {"model": "openai:house", "messages": [{"role": "user", "content": "hi"}]}
    asked = len(api.house.requests)
    call = asyncio.create_task(user.call("POST", "/v1/chat/completions", body))
    async with asyncio.timeout(5):  # the request has reached the provider: now the client leaves
        while len(api.house.requests) == asked:
            await asyncio.sleep(0.01)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await api.house.wait_disconnects(before + 1, timeout=5) == before + 1
    await api.settled()
    status = await api.srv.node.store.db.fetchval(
        "SELECT status FROM completions WHERE user_id = $1 ORDER BY id DESC LIMIT 1", user.id)
    assert status == "cancelled"


async def test_a_streaming_client_that_reads_nothing_is_cut_and_frees_its_provider_slot(
        postgres_url: str, http: Any) -> None:
    async with FakeOpenAI(models=["one"], tokens=["x" * 65536] * 400) as fake:
        cfg = ProviderConfig("solo", "openai", "Solo", base_url=fake.base_url, models=("one",), concurrency=1)
        async with running_server(await fresh_database(postgres_url), providers=(cfg,), default_model="solo:one",
                                  api_stall_timeout=0.5) as srv:
            u = await Client(http, srv.base_url, srv.ws_url).user()
            body = orjson.dumps({"model": "solo:one", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.settings.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         + f"Authorization: Bearer {u.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()  # and never read
            assert await fake.wait_disconnects(1, timeout=10) == 1  # cut: the upstream request is closed
            fake.tokens = ["free"]
            sdk = openai.AsyncOpenAI(api_key=u.token, base_url=srv.base_url + "/v1", max_retries=0, timeout=5)
            done = await sdk.chat.completions.create(model="solo:one", messages=[{"role": "user", "content": "hi"}])
            assert done.choices[0].message.content == "free"  # the only provider slot is free again
            writer.close()


async def test_a_browser_on_another_origin_may_use_the_openai_sdk_and_read_the_routing_headers(api: Rig) -> None:
    user = await api.client.user()
    pre = await user.call("OPTIONS", "/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os, x-stainless-retry-count"})
    assert pre.status == 200
    allowed = pre.headers["Access-Control-Allow-Headers"].lower()
    assert "x-stainless-os" in allowed and "x-stainless-retry-count" in allowed
    r = await user.call("POST", "/v1/chat/completions", {"model": "openai:house", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"Origin": "https://app.example"})
    assert r.status == 200 and r.headers["x-chat-model"] == "openai:house"
    assert "x-chat-model" in r.headers["Access-Control-Expose-Headers"].lower()
