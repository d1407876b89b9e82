"""The web client's usage view, cost hints, model speed and budgets, in a real Chromium against a
real server, database and fake providers that report usage at a configured price."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.settings import ProviderConfig
from tests.browser import launch, shot_path
from tests.conftest import Client, fresh_database, running_server
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.test_web_client import TOKENS, Person, Rig, group

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

OPENAI_PRICE = {"input": 1.0, "output": 2.0}  # USD per million tokens, every model of the provider
ANTHROPIC_PRICE = {"input": 3.0, "output": 15.0}


@pytest.fixture(scope="module")
async def rig(postgres_url: str, http: Any) -> AsyncIterator[Rig]:
    database = await fresh_database(postgres_url)  # the first user here is the admin (user budgets)
    pw, browser = await launch()
    try:
        async with FakeOpenAI(models=["gpt-4o-mini", "gpt-4o"]) as oa, FakeAnthropic() as an:
            providers = (
                ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, api_key="sk-test",
                               models=("gpt-4o-mini", "gpt-4o"), prices=OPENAI_PRICE),
                ProviderConfig("anthropic", "anthropic", "Anthropic", base_url=an.base_url, api_key="ak-test",
                               models=("claude-haiku-4",), prices=ANTHROPIC_PRICE),
            )
            async with running_server(database, providers=providers, default_model="openai:gpt-4o-mini",
                                      echo_delay=0.01, node_check_interval=60) as srv:
                client = Client(http, srv.base_url, srv.ws_url)
                admin = await client.user("admin", display_name="Admin")
                assert admin.info["is_admin"]
                yield Rig(srv, client, browser, oa, an, admin)
    finally:
        await browser.close()
        await pw.stop()


@pytest.fixture
async def web(rig: Rig) -> AsyncIterator[Rig]:
    rig.reset()
    for fake in (rig.openai, rig.anthropic):
        fake.usage = None
        fake.tokens = list(TOKENS)
    yield rig
    errors = await rig.close_people()
    assert errors == [], errors  # no uncaught exception in any page


async def ask(user: Any, cid: int, text: str, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"content": text}
    if model:
        body["model"] = model
    r = await user.call("POST", f"/conversations/{cid}/messages?wait=true", body)
    assert r.status == 201, r.body
    return r.body["reply"]


async def open_usage(p: Person) -> Any:
    await p.page.click(".room-header .usage-button")
    await p.page.locator(".usage-pane[aria-busy=false]").wait_for()
    pane = p.page.locator(".usage-pane")
    await pane.locator(".total-cost .value").wait_for()
    return pane


async def test_usage_view_shows_the_conversations_total_and_per_model_rows_matching_the_server(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Budget planning")
    cid = conv["id"]
    web.openai.usage = (12_000, 3_000)  # $0.012 + $0.006 at $1 / $2 per million
    await ask(alice.user, cid, "first", "openai:gpt-4o-mini")
    await ask(bob.user, cid, "second", "openai:gpt-4o-mini")
    web.anthropic.usage = (2_000, 1_000)  # $0.006 + $0.015
    await ask(bob.user, cid, "third", "anthropic:claude-haiku-4")
    server = (await bob.user.call("GET", f"/conversations/{cid}/usage")).body
    await web.srv.node.stats.refresh()

    await bob.open(cid)  # a member sees the conversation's usage too
    pane = await open_usage(bob)
    shown = float(await pane.locator(".total-cost .value").get_attribute("data-usd"))
    assert shown == pytest.approx(server["total"]["cost_usd"]) == pytest.approx(0.036 + 0.021)
    assert (await pane.locator(".total-cost .value").inner_text()) == "$0.057"
    assert int(await pane.locator(".total-turns .value").get_attribute("data-turns")) == 3
    rows = pane.locator("table.by-model tbody tr")
    assert await rows.count() == len(server["by_model"]) == 2
    for i, bucket in enumerate(server["by_model"]):  # the server's order: most expensive first
        row = rows.nth(i)
        assert await row.get_attribute("data-model") == bucket["model"]
        assert await row.locator(".turns").inner_text() == str(bucket["turns"])
        assert float(await row.locator(".cost").get_attribute("data-usd")) == pytest.approx(bucket["cost_usd"])
    stats = pane.locator("table.model-stats tr[data-model='anthropic:claude-haiku-4']")
    assert await stats.locator(".turns").inner_text() == "1"
    await bob.page.screenshot(path=shot_path("usage-member"))


async def test_the_chart_draws_one_bar_per_day_and_model_for_cost_and_for_tokens(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Charted")
    cid = conv["id"]
    r = await alice.user.call("PUT", f"/conversations/{cid}/budget", {"period": "month", "limit_usd": 0.25})
    assert r.status == 200
    web.openai.usage = (40_000, 8_000)
    await ask(alice.user, cid, "one", "openai:gpt-4o-mini")
    await ask(alice.user, cid, "two", "openai:gpt-4o")
    web.anthropic.usage = (5_000, 2_000)
    await ask(alice.user, cid, "three", "anthropic:claude-haiku-4")
    db = web.srv.node.store.db  # move one reply to two days ago: two days, three model series
    await db.execute("UPDATE messages SET created_at = created_at - interval '2 days'"
                     " WHERE conversation_id = $1 AND model_used = 'openai:gpt-4o'", cid)
    server = (await alice.user.call("GET", f"/conversations/{cid}/usage")).body
    assert len(server["by_day"]) == 2

    await alice.open(cid)
    pane = await open_usage(alice)
    bars = pane.locator("svg.usage-chart rect.bar")
    await bars.first.wait_for()
    pairs = {(await bars.nth(i).get_attribute("data-day"), await bars.nth(i).get_attribute("data-model"))
             for i in range(await bars.count())}
    assert await bars.count() == 3 and len(pairs) == 3
    assert {m for _, m in pairs} == {b["model"] for b in server["by_model"]}
    assert {d for d, _ in pairs} == {b["day"] for b in server["by_day"]}
    assert await pane.locator(".legend li").count() == 3
    await pane.locator(".metric button[data-metric=tokens]").click()
    await pane.locator("svg.usage-chart[data-metric=tokens]").wait_for()
    assert await pane.locator("svg.usage-chart rect.bar").count() == 3
    heights = [float(await bars.nth(i).get_attribute("height")) for i in range(3)]
    assert all(h > 0 for h in heights)
    await pane.locator(".metric button[data-metric=cost]").click()
    # A shorter period re-asks the server and draws the same bars, wider.
    await pane.locator(".ranges button[data-days='7']").click()
    await pane.locator(".budget[data-scope=conversation][data-set=true]").wait_for()
    await alice.page.locator(".usage-pane[aria-busy=false] .ranges button[data-days='7'][aria-pressed=true]").wait_for()
    assert await pane.locator("svg.usage-chart rect.bar").count() == 3
    await alice.page.set_viewport_size({"width": 1280, "height": 1150})
    await alice.page.screenshot(path=shot_path("usage-view"))
    # Phone width, dark: nothing sticks out sideways.
    phone = await web.person("alice2", "Alice", viewport={"width": 390, "height": 844}, color_scheme="dark")
    await phone.context.close()
    web.people.remove(phone)
    ctx = await web.browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", bypass_csp=True,
                                        storage_state={"cookies": [], "origins": [{"origin": web.srv.base_url,
                                                       "localStorage": [{"name": "chat.token", "value": alice.user.token}]}]})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(web.srv.base_url + f"/#/c/{cid}")
    await page.click(".room-header .usage-button")
    await page.locator("svg.usage-chart rect.bar").first.wait_for()
    assert await page.locator("svg.usage-chart rect.bar").count() == 3
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await page.screenshot(path=shot_path("usage-phone-dark"), full_page=True)
    await page.click(".usage-back")
    await page.locator(".room-header").wait_for()
    await ctx.close()
    assert errors == []


async def test_a_finished_reply_shows_its_cost_and_tokens_with_speed_in_the_tooltip(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Chips")
    web.openai.usage = (1_000, 200)  # $0.001 + $0.0004
    web.openai.delay = 0.01
    await alice.open(conv["id"])
    await alice.send("how much was that?")
    row = await alice.last_ai_done("how much was that?")
    hint = row.locator(".usage-hint")
    assert await hint.inner_text() == "$0.0014 · 1.2k tok"
    title = await hint.get_attribute("title")
    assert "1000 prompt + 200 completion tokens" in title and "first token after" in title and "tok/s" in title
    # A provider that reports nothing: the server's count, marked estimated.
    web.openai.omit_usage = True
    try:
        await alice.send("and this one?")
        row = await alice.last_ai_done("and this one?")
        assert (await row.locator(".usage-hint").inner_text()).endswith(" est.")
        assert await row.locator(".usage-hint").get_attribute("data-estimated") == "true"
    finally:
        web.openai.omit_usage = False


async def test_the_model_selector_shows_time_to_first_token_and_speed_once_a_model_has_replies(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Speed")
    web.openai.delay = 0.02
    for i in range(3):
        await ask(alice.user, conv["id"], f"speed {i}", "openai:gpt-4o")
    await web.srv.node.stats.refresh()  # what the server does every node_check_interval
    stats = next(m for m in (await alice.user.call("GET", "/ai/stats")).body["models"] if m["model"] == "openai:gpt-4o")
    await alice.open(conv["id"])
    await alice.page.click(".route-button")
    speed = alice.page.locator(".picker button.model[data-model='openai:gpt-4o'] .model-speed")
    text = await speed.inner_text()
    assert re.fullmatch(r"~\d+(\.\d)? (ms|s) to first token · \d+ tok/s", text), text
    assert f"{math.floor(stats['tokens_per_second'] + 0.5)} tok/s" in text  # JS rounds halves up
    # A model with no replies yet shows no guess.
    assert await alice.page.locator(".picker button.model[data-model='echo:echo'] .model-speed").count() == 0


async def test_the_owner_sets_a_conversation_budget_inline_and_a_member_sees_it_read_only(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Limited")
    cid = conv["id"]
    await alice.open(cid)
    pane = await open_usage(alice)
    form = pane.locator("form.budget-form")
    await form.locator("input[name=limit_usd]").fill("-1")
    await form.locator("button[type=submit]").click()
    error = form.locator(".form-error")
    await error.wait_for()
    assert "limit_usd must be a number of dollars" in await error.inner_text()  # the server's 422, inline
    await form.locator("input[name=limit_usd]").fill("5")
    await form.locator("select[name=period]").select_option("day")
    await form.locator("input[name=warn_at]").fill("50")
    await form.locator("button[type=submit]").click()
    bar = pane.locator(".budget[data-scope=conversation][data-set=true]")
    await bar.wait_for()
    assert await form.locator(".form-error").is_hidden()
    assert float(await bar.locator(".remaining").get_attribute("data-usd")) == 5.0
    assert "resets" in await bar.locator(".budget-foot").inner_text()
    stored = (await bob.user.call("GET", f"/conversations/{cid}/budget")).body["budget"]
    assert (stored["limit_usd"], stored["period"], stored["warn_at"]) == (5.0, "day", 0.5)

    await bob.open(cid)
    member = await open_usage(bob)
    seen = member.locator(".budget[data-scope=conversation][data-set=true]")
    await seen.wait_for()
    assert (await seen.locator(".remaining").inner_text()) == "$5.00 left"
    assert await member.locator("form.budget-form").count() == 0
    assert "Only Alice (the owner)" in await member.locator(".owner-note").inner_text()
    await alice.page.screenshot(path=shot_path("usage-owner-budget"))

    await form.locator(".remove-budget").click()
    await pane.locator(".budget[data-scope=conversation][data-set=false]").wait_for()
    assert (await bob.user.call("GET", f"/conversations/{cid}/budget")).body["budget"] is None


async def test_a_budget_warning_notice_appears_for_the_owner_when_a_reply_crosses_warn_at(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Warned")
    cid = conv["id"]
    r = await alice.user.call("PUT", f"/conversations/{cid}/budget", {"period": "month", "limit_usd": 10, "warn_at": 0.25})
    assert r.status == 200
    await alice.open(cid)
    await bob.open(cid)
    web.openai.usage = (3_000_000, 0)  # $3 of $10: past 25%
    await bob.send("an expensive question")
    await bob.last_ai_done("an expensive question")
    notice = alice.page.locator(".budget-warning")
    await notice.wait_for()
    text = await notice.inner_text()
    assert "30% of the monthly AI budget of $10.00 is spent" in text and "resets" in text
    await alice.page.screenshot(path=shot_path("budget-warning"))
    assert await bob.page.locator(".budget-warning").count() == 0  # the owner's, not the member's
    await notice.locator(".dismiss").click()
    await notice.wait_for(state="detached")


async def test_a_reply_refused_with_budget_exceeded_shows_the_limit_and_when_it_resets(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Spent")
    r = await web.admin.call("PUT", f"/budgets/users/{alice.user.id}", {"period": "month", "limit_usd": 0.5})
    assert r.status == 200
    web.openai.usage = (1_000_000, 0)  # $1: over the $0.50 once paid; the next is refused
    await ask(alice.user, conv["id"], "the last affordable one")
    await alice.open(conv["id"])
    await alice.send("one more please")
    row = await alice.last_ai_done("one more please")
    assert await row.get_attribute("data-status") == "error"
    note = await row.locator(".budget-note").inner_text()
    assert note.startswith("Not sent to the AI: Your monthly AI budget of $0.50 is spent"), note
    assert "resets " in note and "T00:00" not in note  # a local time, not the raw timestamp
    assert await row.locator(".status.error").inner_text() == "Budget reached"
    # The user's own budget shows as spent in the usage view.
    pane = await open_usage(alice)
    mine = pane.locator(".budget[data-scope=user][data-state=over]")
    await mine.wait_for()
    assert await mine.locator(".remaining").inner_text() == "$0 left"


async def test_my_usage_counts_completions_from_openai_clients_and_says_how_much_came_through_the_api(
        web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    web.openai.usage = (10_000, 5_000)  # $0.01 + $0.01
    r = await alice.user.call("POST", "/v1/chat/completions", {"model": "openai:gpt-4o",
                                                               "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200, r.body
    await web.srv.node.completions.ended()
    conv = await alice.user.conversation(title="Notes")
    await alice.open(conv["id"])
    pane = await open_usage(alice)
    await pane.locator(".scopes button[data-scope=me]").click()
    await pane.locator("table.by-model tbody tr[data-model='openai:gpt-4o']").wait_for()
    assert float(await pane.locator(".total-cost .value").get_attribute("data-usd")) == pytest.approx(0.02)
    note = await pane.locator(".totals .notes").inner_text()
    assert "1 was asked through the OpenAI-compatible API ($0.02)" in note, note
