"""Usage and cost: what each reply used, cost and how fast it came; sums by conversation, user,
model and day; model stats. Real PostgreSQL, fake providers over HTTP that report usage or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from server.settings import ProviderConfig
from tests.conftest import Client, Running, fresh_database, running_server
from tests.fakes import FakeOpenAI


class Rig:
    def __init__(self, srv: Running, client: Client, reporting: FakeOpenAI, silent: FakeOpenAI) -> None:
        self.srv, self.client, self.reporting, self.silent = srv, client, reporting, silent


@pytest.fixture(scope="module")
async def rig(postgres_url: str, http: Any) -> AsyncIterator[Rig]:
    async with FakeOpenAI(models=["gpt-4o-mini", "house-model"]) as reporting, FakeOpenAI() as silent:
        silent.omit_usage = True
        providers = (
            ProviderConfig("openai", "openai", "OpenAI", base_url=reporting.base_url, api_key="sk",
                           models=("gpt-4o-mini", "house-model"),
                           prices={"house-model": {"input": 1.0, "output": 2.0}}),
            ProviderConfig("llamacpp", "openai", "llama.cpp", base_url=silent.base_url, models=("local",)),
        )
        async with running_server(await fresh_database(postgres_url), providers=providers) as srv:
            yield Rig(srv, Client(http, srv.base_url, srv.ws_url), reporting, silent)


async def reply(user: Any, cid: int, content: str, model: str) -> dict[str, Any]:
    r = await user.call("POST", f"/conversations/{cid}/messages?wait=true", {"content": content, "model": model})
    assert r.status == 201, r.body
    return r.body["reply"]


async def test_a_reply_stores_the_providers_usage_its_price_and_its_speed(rig: Rig) -> None:
    rig.reporting.usage = (1200, 300)
    u = await rig.client.user()
    conv = await u.conversation()
    usage = (await reply(u, conv["id"], "hello", "openai:gpt-4o-mini"))["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["estimated"]) == (1200, 300, False)
    # genai-prices' bundled table: gpt-4o-mini at $0.15 in / $0.60 out per million tokens
    assert usage["cost_usd"] == pytest.approx((1200 * 0.15 + 300 * 0.60) / 1e6)
    assert usage["ttft_ms"] is not None and usage["ttft_ms"] >= 0
    assert usage["gen_ms"] is not None and usage["tokens_per_second"] is not None
    rig.reporting.usage = None


async def test_chat_toml_prices_win_and_local_models_cost_nothing(rig: Rig) -> None:
    rig.reporting.usage = (1000, 500)
    u = await rig.client.user()
    conv = await u.conversation()
    assert (await reply(u, conv["id"], "hi", "openai:house-model"))["usage"]["cost_usd"] == pytest.approx(
        (1000 * 1.0 + 500 * 2.0) / 1e6)
    assert (await reply(u, conv["id"], "hi", "echo:echo"))["usage"]["cost_usd"] == 0.0
    rig.reporting.usage = None


async def test_a_provider_that_reports_no_usage_gets_an_estimate_marked_estimated(rig: Rig) -> None:
    u = await rig.client.user()
    conv = await u.conversation()
    usage = (await reply(u, conv["id"], "x" * 400, "llamacpp:local"))["usage"]
    assert usage["estimated"] is True
    assert usage["prompt_tokens"] >= 100  # at least the 400 characters sent, four per token
    assert usage["completion_tokens"] == -(-len("Hello, world!") // 4)
    assert usage["cost_usd"] is None  # an OpenAI-compatible server with no known price: unknown, not free


async def test_conversation_and_user_usage_sum_by_model_and_day_for_those_allowed(rig: Rig) -> None:
    rig.reporting.usage = (100, 10)
    admin = await rig.client.user()
    first_user_is_admin = admin.info["is_admin"]
    alice, bob = await rig.client.user(), await rig.client.user()
    conv = await alice.conversation(mode="group", ai_answers="all", participant_usernames=[bob.username])
    await reply(alice, conv["id"], "one", "openai:gpt-4o-mini")
    await reply(alice, conv["id"], "two", "openai:gpt-4o-mini")
    await reply(bob, conv["id"], "three", "echo:echo")
    r = await bob.call("GET", f"/conversations/{conv['id']}/usage")
    assert r.status == 200
    body = r.body
    assert body["total"]["turns"] == 3
    by_model = {b["model"]: b for b in body["by_model"]}
    assert by_model["openai:gpt-4o-mini"]["turns"] == 2
    assert by_model["openai:gpt-4o-mini"]["prompt_tokens"] == 200 and by_model["echo:echo"]["cost_usd"] == 0.0
    assert len(body["by_day"]) == 1 and body["by_day"][0]["turns"] == 3
    day = body["by_day"][0]["day"]
    assert sorted((b["day"], b["model"], b["turns"]) for b in body["by_day_model"]) == [
        (day, "echo:echo", 1), (day, "openai:gpt-4o-mini", 2)]
    stranger = await rig.client.user()
    assert (await stranger.call("GET", f"/conversations/{conv['id']}/usage")).status == 404
    # Per user: the replies each one asked for.
    mine = (await alice.call("GET", "/usage")).body
    assert mine["user_id"] == alice.id and mine["total"]["turns"] == 2
    assert (await bob.call("GET", f"/usage?user_id={alice.id}")).status == 403
    assert (await bob.call("GET", "/usage?all=true")).status == 403
    assert (await bob.call("GET", "/usage?from=2026-01-02&to=2026-01-01")).status == 422
    assert (await bob.call("GET", "/usage?to=0001-01-01")).status == 422  # not an overflow (500)
    empty = (await alice.call("GET", "/usage?from=2001-01-01&to=2001-01-02")).body
    assert empty["total"]["turns"] == 0 and empty["by_model"] == []
    if first_user_is_admin:
        everyone = (await admin.call("GET", "/usage?all=true")).body
        assert everyone["user_id"] is None and everyone["total"]["turns"] >= 3
        assert (await admin.call("GET", f"/usage?user_id={bob.id}")).body["total"]["turns"] == 1
    rig.reporting.usage = None


async def test_model_stats_come_from_stored_replies_and_show_in_the_model_list(rig: Rig) -> None:
    u = await rig.client.user()
    conv = await u.conversation()
    for _ in range(3):
        await reply(u, conv["id"], "speed?", "openai:gpt-4o-mini")
    await rig.srv.node.stats.refresh()
    table = (await u.call("GET", "/ai/stats")).body
    row = next(m for m in table["models"] if m["model"] == "openai:gpt-4o-mini")
    assert row["turns"] >= 3 and row["error_rate"] == 0.0
    assert row["ttft_p50_ms"] is not None and row["ttft_p95_ms"] >= row["ttft_p50_ms"]
    assert row["tokens_per_second"] is not None
    models = (await u.call("GET", "/ai/models")).body
    entry = next(m for p in models["providers"] for m in p["models"] if m["id"] == "openai:gpt-4o-mini")
    assert entry["stats"]["turns"] == row["turns"] and "model" not in entry["stats"]


async def test_usage_of_a_conversation_with_100000_messages_is_summed_over_a_replies_index(rig: Rig) -> None:
    u = await rig.client.user()
    conv = await u.conversation(with_ai=False)
    db = rig.srv.node.store.db
    setup = await asyncpg.connect(rig.srv.settings.database_url)  # not under the server's 3 s deadline
    try:
        await setup.execute(
            "WITH c AS (UPDATE conversations SET last_seq = 100000 WHERE id = $1)"
            " INSERT INTO messages (conversation_id, seq, role, author_id, content, model_used, status,"
            "                       prompt_tokens, completion_tokens, cost_usd, requested_by)"
            " SELECT $1, i, CASE WHEN i % 2 = 0 THEN 'assistant' ELSE 'user' END,"
            "        CASE WHEN i % 2 = 0 THEN NULL ELSE $2::bigint END, 'x',"
            "        CASE WHEN i % 2 = 0 THEN 'openai:gpt-4o-mini' END, 'complete',"
            "        CASE WHEN i % 2 = 0 THEN 10 END, CASE WHEN i % 2 = 0 THEN 5 END,"
            "        CASE WHEN i % 2 = 0 THEN 0.001 END, CASE WHEN i % 2 = 0 THEN $2::bigint END"
            " FROM generate_series(1, 100000) AS i", conv["id"], u.id)
        await setup.execute("ANALYZE messages")
    finally:
        await setup.close()
    body = (await u.call("GET", f"/conversations/{conv['id']}/usage")).body
    assert body["total"]["turns"] == 50000 and body["total"]["prompt_tokens"] == 500000
    assert body["total"]["cost_usd"] == pytest.approx(50.0)
    plan = "\n".join(r[0] for r in await db.fetch(
        "EXPLAIN SELECT count(*) FROM messages WHERE role = 'assistant' AND status <> 'streaming'"
        " AND created_at >= now() - interval '30 days' AND created_at < now() AND conversation_id = $1",
        conv["id"]))
    assert "Seq Scan" not in plan and "messages_replies_by" in plan  # a replies-only index, not every row
