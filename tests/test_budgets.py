"""Budgets: limits per user and per conversation, refused before any provider is called,
settled with the real cost, warned about once per period; correct when turns race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from server.settings import ProviderConfig
from tests.conftest import Client, Running, fresh_database, running_server
from tests.fakes import FakeOpenAI

PRICE = {"house": {"input": 1.0, "output": 2.0}}  # USD per million tokens


class Rig:
    def __init__(self, srv: Running, client: Client, fake: FakeOpenAI, admin: Any) -> None:
        self.srv, self.client, self.fake, self.admin = srv, client, fake, admin


@pytest.fixture(scope="module")
async def rig(postgres_url: str, http: Any) -> AsyncIterator[Rig]:
    async with FakeOpenAI(models=["house"]) as fake:
        cfg = ProviderConfig("openai", "openai", "OpenAI", base_url=fake.base_url, models=("house",), prices=PRICE)
        async with running_server(await fresh_database(postgres_url), providers=(cfg,),
                                  default_model="openai:house") as srv:
            client = Client(http, srv.base_url, srv.ws_url)
            admin = await client.user("admin")
            assert admin.info["is_admin"]
            yield Rig(srv, client, fake, admin)


@pytest.fixture
def budget(rig: Rig) -> Rig:
    rig.fake.usage, rig.fake.delay = None, 0.0
    return rig


async def ask(user: Any, cid: int, text: str = "hi") -> dict[str, Any]:
    r = await user.call("POST", f"/conversations/{cid}/messages?wait=true", {"content": text})
    assert r.status == 201, r.body
    return r.body["reply"]


async def test_only_admins_set_user_budgets_and_users_see_their_own(budget: Rig) -> None:
    u = await budget.client.user()
    body = {"period": "day", "limit_usd": 2.5}
    assert (await u.call("PUT", f"/budgets/users/{u.id}", body)).status == 403
    for bad in ({"period": "week", "limit_usd": 1}, {"limit_usd": -1}, {"limit_usd": "1"},
                {"limit_usd": 1, "warn_at": 0}):
        assert (await budget.admin.call("PUT", f"/budgets/users/{u.id}", bad)).status == 422, bad
    r = await budget.admin.call("PUT", f"/budgets/users/{u.id}", body)
    assert r.status == 200 and r.body["limit_usd"] == 2.5 and r.body["period"] == "day"
    mine = (await u.call("GET", "/budget")).body["budget"]
    assert mine["remaining_usd"] == 2.5 and mine["spent_usd"] == 0 and mine["resets_at"].endswith("T00:00:00.000Z")
    other = await budget.client.user()
    assert (await other.call("GET", f"/budget?user_id={u.id}")).status == 403
    assert (await other.call("GET", "/budget")).body["budget"] is None
    assert (await budget.admin.call("DELETE", f"/budgets/users/{u.id}")).status == 204
    assert (await budget.admin.call("DELETE", f"/budgets/users/{u.id}")).status == 404


async def test_a_turn_over_the_limit_is_refused_before_any_provider_call_and_a_crossing_one_finishes(
        budget: Rig) -> None:
    u = await budget.client.user()
    conv = await u.conversation()
    await budget.admin.call("PUT", f"/budgets/users/{u.id}", {"period": "month", "limit_usd": 0.5})
    budget.fake.usage = (1_000_000, 0)  # $1.00 at $1 per million prompt tokens: over the limit once paid
    first = await ask(u, conv["id"])
    assert first["status"] == "complete" and first["usage"]["cost_usd"] == pytest.approx(1.0)
    asked = len([r for r in budget.fake.requests if r.method == "POST"])
    sock = await u.ws()
    await sock.subscribe(conv["id"])
    await u.send(conv["id"], "and again")
    end = await sock.until("ai.error")
    assert end["code"] == "budget_exceeded" and "monthly AI budget of $0.50" in end["message"]
    assert "resets at" in end["message"] and end["message_obj"]["status"] == "error"
    assert len([r for r in budget.fake.requests if r.method == "POST"]) == asked  # no provider was called
    mine = (await u.call("GET", "/budget")).body["budget"]
    assert mine["spent_usd"] == pytest.approx(1.0) and mine["remaining_usd"] == 0 and mine["reserved_usd"] == 0
    await sock.close()


async def test_ten_turns_at_once_near_the_limit_do_not_all_slip_through(budget: Rig) -> None:
    u = await budget.client.user()
    convs = [await u.conversation(title=f"race {i}") for i in range(10)]
    estimate = budget.srv.node.budgets.estimate("openai:house", 0)
    # Room for three estimates (and the prompts' few tokens), not four.
    limit = float(estimate) * 3.5
    await budget.admin.call("PUT", f"/budgets/users/{u.id}", {"period": "day", "limit_usd": limit})
    budget.fake.delay = 1.0  # every admitted turn is still running when the others ask
    replies = await asyncio.gather(*(ask(u, c["id"], "go") for c in convs))
    statuses = sorted(r["status"] for r in replies)
    assert statuses.count("complete") == 3 and statuses.count("error") == 7


async def test_a_conversation_budget_is_the_owners_and_warns_the_owner_once_per_period(budget: Rig) -> None:
    owner, member = await budget.client.user(), await budget.client.user()
    conv = await owner.conversation(mode="group", ai_answers="all", participant_usernames=[member.username])
    cid = conv["id"]
    body = {"period": "month", "limit_usd": 10, "warn_at": 0.25}
    assert (await member.call("PUT", f"/conversations/{cid}/budget", body)).status == 403
    assert (await owner.call("PUT", f"/conversations/{cid}/budget", body)).status == 200
    seen_by_member = (await member.call("GET", f"/conversations/{cid}/budget")).body["budget"]
    assert seen_by_member["scope"] == "conversation" and seen_by_member["conversation_id"] == cid
    on_owner, on_member = await owner.ws(), await member.ws()
    await on_owner.subscribe(cid)
    await on_member.subscribe(cid)
    budget.fake.usage = (3_000_000, 0)  # $3 a turn: the first crosses 25% of $10
    await ask(member, cid)
    warning = await on_owner.until("budget.warning")
    assert warning["budget"]["scope"] == "conversation" and warning["budget"]["spent_usd"] == pytest.approx(3.0)
    assert "30% of the monthly AI budget of $10.00" in warning["message"]
    await ask(member, cid)  # $6: past the threshold again, but the warning was given this period
    frames = await on_owner.quiet(0.5) + await on_member.quiet(0.1)
    assert not [f for f in frames if f["type"] == "budget.warning"]
    for sock in (on_owner, on_member):
        await sock.close()


async def test_a_budget_check_the_database_cannot_answer_ends_the_turn_with_unavailable_for_everyone(
        postgres_url: str, http: Any) -> None:
    async with running_server(await fresh_database(postgres_url), db_timeout=2.0) as srv:
        client = Client(http, srv.base_url, srv.ws_url)
        admin = await client.user("admin")
        u = await client.user()
        conv = await u.conversation()
        assert (await admin.call("PUT", f"/budgets/users/{u.id}", {"period": "day", "limit_usd": 5})).status == 200
        sock = await u.ws()
        await sock.subscribe(conv["id"])
        # Another session holds the budget's row lock: the turn's check waits past the deadline.
        con = await asyncpg.connect(srv.settings.database_url)
        try:
            tx = con.transaction()
            await tx.start()
            await con.execute("SELECT * FROM budgets WHERE subject_id = $1 FOR UPDATE", u.id)
            await u.send(conv["id"], "hello")
            end = await sock.until("ai.error", timeout=10)
            await tx.rollback()
        finally:
            await con.close()
        assert end["code"] == "unavailable" and end["message_obj"]["status"] == "error"
        stored = await sock.until("message", timeout=5)
        assert stored["message"]["role"] == "assistant" and stored["message"]["status"] == "error"
        page = (await u.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"]
        assert [m["status"] for m in page if m["role"] == "assistant"] == ["error"]
