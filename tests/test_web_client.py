"""The browser client (web/) in a real Chromium against a real server, database and fake providers.

Two or three people (browser contexts) per test; one server and one browser per module.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.settings import ProviderConfig
from tests.browser import launch, shot_path
from tests.conftest import Client, Running, User, fresh_database, running_server
from tests.fakes import FakeAnthropic, FakeOllama, FakeOpenAI

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TOKENS = ["Hello", ",", " world", "!"]
ALIASES = {"claude": "anthropic:claude-sonnet-4", "gpt": "openai:gpt-4o"}  # @claude, @gpt
ROUTING = {"default": [{"model": "anthropic:claude-sonnet-4", "contains_code": True, "reason": "code"},
                       {"model": "openai:gpt-4o-mini", "reason": "chit-chat"}]}  # the model id "auto"
TEMPLATES = {"standup": {"label": "Daily stand-up", "title_prefix": "Stand-up: ", "mode": "group",
                         "ai_answers": "mentions", "instructions": "Summarize blockers in one line each."}}


class Person:
    """One person: a browser context with their own storage, and their REST identity."""

    def __init__(self, user: User, context: Any, page: Any) -> None:
        self.user, self.context, self.page = user, context, page
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    @property
    def name(self) -> str:
        return self.user.username

    async def open(self, cid: int | None = None) -> None:
        await self.page.goto(self.rig.srv.base_url + (f"/#/c/{cid}" if cid else "/"))
        await self.page.wait_for_selector(".connection[data-state]", state="attached")
        await self.page.wait_for_function("window.chatApp.store.conn.state === 'online'")
        if cid:
            await self.page.wait_for_selector(f".conv.active[data-id='{cid}']")

    async def send(self, text: str) -> None:
        box = self.page.locator(".composer .input")
        await box.fill(text)
        await box.press("Enter")

    def row(self, nth: int = -1) -> Any:
        rows = self.page.locator(".messages:not(.pending-list) .msg")
        return rows.nth(nth) if nth >= 0 else rows.last

    async def last_ai_done(self, after: str, timeout: float = 10_000) -> Any:
        """The first AI reply below the latest message containing `after`, once it has ended."""
        found = await self.page.wait_for_function(
            """t => { const rows = [...document.querySelectorAll('.messages:not(.pending-list) .msg')];
                      const i = rows.findLastIndex(m => !m.classList.contains('ai')
                                                   && (m.querySelector('.body')?.textContent || '').includes(t));
                      if (i < 0) return null;
                      const j = rows.findIndex((m, k) => k > i && m.classList.contains('ai'));
                      return j >= 0 && rows[j].dataset.status !== 'streaming' ? j : null; }""",
            arg=after, timeout=timeout)
        return self.row(await found.json_value())


class Rig:
    def __init__(self, srv: Running, client: Client, browser: Any, openai: FakeOpenAI,
                 anthropic: FakeAnthropic, admin: User) -> None:
        self.srv, self.client, self.browser = srv, client, browser
        self.openai, self.anthropic, self.admin = openai, anthropic, admin
        self.people: list[Person] = []

    def reset(self) -> None:
        for fake in (self.openai, self.anthropic):
            fake.fail_status = fake.fail_after = None
            fake.delay = fake.model_delay = 0.0
            fake.tokens = list(TOKENS)

    async def person(self, prefix: str, display: str | None = None, *, viewport: dict[str, int] | None = None,
                     color_scheme: str = "light", signed_in: bool = True) -> Person:
        user = await self.client.user(prefix, display_name=display)
        state = {"cookies": [], "origins": [{"origin": self.srv.base_url,
                                             "localStorage": [{"name": "chat.token", "value": user.token}]}]}
        ctx = await self.browser.new_context(storage_state=state if signed_in else None,
                                             viewport=viewport or {"width": 1280, "height": 800},
                                             color_scheme=color_scheme,
                                             # Playwright's string predicates need eval; with the page's CSP
                                             # off, the XSS test checks the renderer itself, not the CSP.
                                             bypass_csp=True)
        page = await ctx.new_page()
        p = Person(user, ctx, page)
        p.rig = self  # type: ignore[attr-defined]
        self.people.append(p)
        return p

    async def close_people(self) -> list[str]:
        errors = [f"{p.name}: {e}" for p in self.people for e in p.errors]
        for p in self.people:
            await p.context.close()
        self.people.clear()
        return errors


@pytest.fixture(scope="module")
async def rig(postgres_url: str, http: Any) -> AsyncIterator[Rig]:
    database = await fresh_database(postgres_url)  # the first user here is the admin (AI nodes)
    pw, browser = await launch()
    try:
        async with FakeOpenAI() as oa, FakeAnthropic() as an:
            providers = (
                ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, api_key="sk-test",
                               models=("gpt-4o-mini", "gpt-4o")),
                ProviderConfig("anthropic", "anthropic", "Anthropic", base_url=an.base_url, api_key="ak-test",
                               models=("claude-sonnet-4", "claude-haiku-4")),
            )
            async with running_server(database, providers=providers, aliases=ALIASES, provider_timeout_idle=2.0,
                                      provider_timeout_first_token=2.0, echo_delay=0.01,
                                      node_check_interval=0.5, replay_cap=20, routing=ROUTING,
                                      templates=TEMPLATES) as srv:
                client = Client(http, srv.base_url, srv.ws_url)
                admin = await client.user("admin", display_name="Admin")
                yield Rig(srv, client, browser, oa, an, admin)
    finally:
        await browser.close()
        await pw.stop()


@pytest.fixture
async def web(rig: Rig) -> AsyncIterator[Rig]:
    rig.reset()
    yield rig
    errors = await rig.close_people()
    assert errors == [], errors  # no uncaught exception in any page


def last_chat(fake: FakeOpenAI | FakeAnthropic) -> Any:
    """The body of the last chat request a fake received (the server's health checks GET its model list)."""
    return [r for r in fake.requests if r.method == "POST"][-1].json


async def group(owner: Person, *members: Person, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "Design review")
    body.setdefault("mode", "group")
    body.setdefault("ai_answers", "all")  # these rooms' AI answers every message (new groups: mentions only)
    body["participant_usernames"] = [m.name for m in members]
    return await owner.user.conversation(**body)


# -- 1. sign up / sign in / log out -------------------------------------------------------------


async def test_sign_up_then_taken_name_and_wrong_password_show_clear_messages(web: Rig) -> None:
    p = await web.person("visitor", signed_in=False)
    page = p.page
    await page.goto(web.srv.base_url + "/")
    name = "new_" + secrets.token_hex(3)
    await page.get_by_role("tab", name="Create account").click()
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", "a good password")
    await page.fill("input[name=display_name]", "Newcomer")
    await page.click("form.auth-form button[type=submit]")
    await page.wait_for_selector(".me strong:text('Newcomer')")
    token = await page.evaluate("localStorage.getItem('chat.token')")
    assert token and len(token) > 10
    await page.click(".me .logout")
    await page.wait_for_selector(".auth-form")
    assert await page.evaluate("localStorage.getItem('chat.token')") is None
    # The token was revoked on the server too.
    assert (await web.client.call("GET", "/me", token)).status == 401

    await page.get_by_role("tab", name="Create account").click()
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", "another password")
    await page.click("form.auth-form button[type=submit]")
    await page.wait_for_selector(".auth-form .form-error:text('That username is taken')")

    await page.get_by_role("tab", name="Sign in").click()
    await page.fill("input[name=username]", name)
    await page.fill("input[name=password]", "not the password")
    await page.click("form.auth-form button[type=submit]")
    await page.wait_for_selector(".auth-form .form-error:text('Wrong username or password')")
    await page.fill("input[name=password]", "a good password")
    await page.click("form.auth-form button[type=submit]")
    await page.wait_for_selector(".me strong:text('Newcomer')")


async def test_rate_limited_sign_in_says_when_to_try_again(postgres_url: str, http: Any) -> None:
    database = await fresh_database(postgres_url)
    pw, browser = await launch()
    try:
        async with running_server(database, auth_rate_per_second=0.05, auth_rate_burst=2) as srv:
            ctx = await browser.new_context(bypass_csp=True)
            page = await ctx.new_page()
            await page.goto(srv.base_url + "/")
            for _ in range(3):
                await page.fill("input[name=username]", "nobody")
                await page.fill("input[name=password]", "wrong")
                await page.click("form.auth-form button[type=submit]")
                await page.wait_for_selector(".auth-form .form-error:not([hidden])")
            text = await page.inner_text(".auth-form .form-error")
            assert text.startswith("Too many attempts. Try again in ") and "second" in text, text
            await ctx.close()
    finally:
        await browser.close()
        await pw.stop()


# -- 4, 5. model selector and Route ----------------------------------------------------------------


async def test_alice_sets_the_room_model_and_bob_sees_it_live_and_after_reload(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob)
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    header = ".room-header .model-button"
    # Nothing set: the server default (echo) at the system tier, visible to both.
    for p in (alice, bob):
        await p.page.wait_for_selector(f"{header}[data-model='echo:echo'][data-tier='system']")
    await alice.page.click(header)
    picker = alice.page.locator(".picker")
    await picker.locator("input.search").fill("sonnet")
    assert await picker.locator("button.model").count() == 1
    await alice.page.screenshot(path=shot_path("models-open"))
    await picker.locator("button.model[data-model='anthropic:claude-sonnet-4']").click()
    await picker.wait_for(state="hidden")
    for p in (alice, bob):
        await p.page.wait_for_selector(f"{header}[data-model='anthropic:claude-sonnet-4'][data-tier='conversation']")
        assert "claude-sonnet-4" in await p.page.inner_text(header)
    stored = (await alice.user.call("GET", f"/conversations/{conv['id']}")).body
    assert stored["default_model_id"] == "anthropic:claude-sonnet-4"
    await bob.page.reload()
    await bob.page.wait_for_selector(f"{header}[data-model='anthropic:claude-sonnet-4']")
    # Bob is not the owner: his selector is read-only, with the reason.
    await bob.page.click(header)
    await bob.page.wait_for_selector(".picker .note:text('Only Alice (the owner)')")
    assert await bob.page.locator(".picker button.model:not([disabled])").count() == 0
    await bob.page.keyboard.press("Escape")
    await bob.page.locator(".picker").wait_for(state="hidden")


async def test_bob_routes_one_message_and_the_next_goes_back_to_the_room_default(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, default_model_id="anthropic:claude-sonnet-4")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    await bob.page.click(".route-button")
    await bob.page.click(".picker button.model[data-model='openai:gpt-4o']")
    await bob.page.wait_for_selector(".route-chip:not([hidden]) strong[data-model='openai:gpt-4o']")
    await bob.page.wait_for_selector(".room-header .model-button[data-model='openai:gpt-4o'][data-tier='message']")
    await bob.send("Summarize our plan")
    for p in (alice, bob):
        ai = await p.last_ai_done("Summarize ou")
        assert await ai.get_attribute("data-status") == "complete"
        assert await ai.locator(".model-chip").inner_text() == "AI • gpt-4o"
        assert await ai.locator(".tier").get_attribute("data-tier") == "message"
        assert await ai.locator(".body").inner_text() == "Hello, world!"
    # The override was for one message: the picker state cleared, the next reply uses the room default.
    assert await bob.page.locator(".route-chip").is_hidden()
    await bob.page.wait_for_selector(".room-header .model-button[data-tier='conversation']")
    await bob.send("And now?")
    await bob.page.wait_for_function("document.querySelectorAll('.msg.ai').length === 2")
    for p in (alice, bob):
        ai = await p.last_ai_done("And now?")
        assert await ai.locator(".model-chip").inner_text() == "AI • claude-sonnet-4"
        assert await ai.locator(".tier").get_attribute("data-tier") == "conversation"
    assert last_chat(web.openai)["model"] == "gpt-4o"
    assert last_chat(web.anthropic)["model"] == "claude-sonnet-4"


async def test_a_fallback_and_its_tier_show_on_the_reply_for_everyone_live_and_after_a_reload(web: Rig) -> None:
    web.openai.fail_status = 500
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, default_model_id="anthropic:claude-haiku-4")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    await alice.page.click(".route-button")
    await alice.page.click(".picker button.model[data-model='openai:gpt-4o-mini']")
    await alice.send("try the other one")
    for p in (alice, bob):
        ai = await p.last_ai_done("try the othe")
        assert await ai.locator(".model-chip").inner_text() == "AI • claude-haiku-4"
        assert await ai.locator(".fallback").inner_text() == "fallback from gpt-4o-mini"
        assert await ai.locator(".tier").get_attribute("data-tier") == "conversation"
        assert await ai.get_attribute("data-status") == "complete"
    # From history alone (no ai.start frames): the stored message says how it came to be.
    web.openai.fail_status = None
    for p in (alice, bob):
        await p.page.reload()
        await p.page.wait_for_function("window.chatApp.store.conn.state === 'online'")
        ai = await p.last_ai_done("try the othe")
        assert await ai.locator(".model-chip").inner_text() == "AI • claude-haiku-4"
        assert await ai.locator(".fallback").inner_text() == "fallback from gpt-4o-mini"
        assert await ai.locator(".tier").get_attribute("data-tier") == "conversation"
        assert await ai.locator(".tier").inner_text() == "room default"
        assert await ai.get_attribute("data-status") == "complete"
    # A reply routed for one message keeps its `message` tier in history too.
    await alice.page.click(".route-button")
    await alice.page.click(".picker button.model[data-model='openai:gpt-4o']")
    await alice.send("routed once")
    await alice.last_ai_done("routed once")
    await bob.page.reload()
    ai = await bob.last_ai_done("routed once")
    assert await ai.locator(".tier").get_attribute("data-tier") == "message"
    assert await ai.locator(".tier").inner_text() == "this message"
    assert await ai.locator(".fallback").count() == 0


async def test_models_are_grouped_by_provider_with_node_latency_and_unreachable_ones_disabled_with_the_servers_reason(
        web: Rig) -> None:
    async with FakeOllama(models=("llama3.1:8b", "qwen2.5:14b")) as studio, FakeOllama(models=("mistral:7b",)) as laptop:
        for name, fake in (("Mac Studio", studio), ("Old laptop", laptop)):
            r = await web.admin.call("POST", "/ai/nodes", {"name": name, "kind": "ollama", "base_url": fake.url})
            assert r.status == 201, r.body
        laptop_id = r.body["id"]
        laptop.fail_status = 500  # the next scheduled check finds it down
        alice = await web.person("alice", "Alice")
        conv = await alice.user.conversation(title="Models")
        await alice.open(conv["id"])
        await alice.page.wait_for_function(
            f"fetch('/ai/models', {{headers: {{Authorization: 'Bearer ' + localStorage.getItem('chat.token')}}}})"
            f".then(r => r.json()).then(b => b.providers.some(p => p.id === 'client:{laptop_id}' && !p.node.healthy))")
        await alice.page.evaluate("chatApp.actions.refreshModels(true)")
        await alice.page.click(".room-header .model-button")
        picker = alice.page.locator(".picker")
        groups = await picker.locator(".provider .provider-name").all_inner_texts()
        assert [g.lower() for g in groups[:3]] == ["echo (built-in)", "openai", "anthropic"]
        studio_group = picker.locator(f".provider[data-provider='client:{laptop_id - 1}']")
        assert "Mac Studio" in await studio_group.text_content() and " ms" in await studio_group.inner_text()
        assert await studio_group.locator(".health").inner_text() == "healthy"
        down = picker.locator(f"button.model[data-model='client:{laptop_id}:mistral:7b']")
        assert await down.is_disabled()
        # The reason is the server's, word for word.
        listed = (await alice.user.call("GET", "/ai/models")).body
        reason = next(m["reason"] for p in listed["providers"] for m in p["models"]
                      if m["id"] == f"client:{laptop_id}:mistral:7b")
        assert reason == "Old laptop did not answer its last health check"
        assert await down.locator(".reason").inner_text() == reason
        assert await down.get_attribute("title") == reason
        assert await picker.locator(f"button.model[data-model='client:{laptop_id - 1}:llama3.1:8b']").is_enabled()
        await alice.page.screenshot(path=shot_path("models"))
        await picker.locator("input.search").fill("qwen")
        assert await picker.locator("button.model").all_inner_texts() == [
            f"qwen2.5:14b\nclient:{laptop_id - 1}:qwen2.5:14b"]
        await picker.locator("input.search").press("Enter")  # picks the only match
        await alice.page.wait_for_selector(f".room-header .model-button[data-model='client:{laptop_id - 1}:qwen2.5:14b']")
        for node in (await web.admin.call("GET", "/ai/nodes")).body["nodes"]:
            await web.admin.call("DELETE", f"/ai/nodes/{node['id']}")


async def test_cloud_providers_show_their_last_health_check_and_latency_and_stay_selectable_when_unhealthy(
        web: Rig) -> None:
    web.openai.model_delay = 0.06  # a measurable round trip for the server's check
    web.anthropic.fail_status = 503  # its model list fails: the next check finds it unhealthy
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Cloud health")
    await alice.open(conv["id"])

    def state(pid: str) -> str:
        return (f"fetch('/ai/models', {{headers: {{Authorization: 'Bearer ' + localStorage.getItem('chat.token')}}}})"
                f".then(r => r.json()).then(b => b.providers.find(p => p.id === '{pid}').health)")

    await alice.page.wait_for_function(f"{state('openai')}.then(h => h && h.healthy && h.latency_ms >= 60)")
    await alice.page.wait_for_function(f"{state('anthropic')}.then(h => h && !h.healthy)")
    await alice.page.evaluate("chatApp.actions.refreshModels(true)")
    await alice.page.click(".room-header .model-button")
    picker = alice.page.locator(".picker")
    openai = picker.locator(".provider[data-provider='openai']")
    await openai.locator(".health.healthy").wait_for()
    assert await openai.locator(".health").inner_text() == "healthy"
    latency = await openai.locator(".latency").inner_text()
    assert latency.endswith(" ms") and int(latency.removesuffix(" ms")) >= 60, latency
    anthropic = picker.locator(".provider[data-provider='anthropic']")
    assert await anthropic.get_attribute("data-health") == "unhealthy"
    assert await anthropic.locator(".health").inner_text() == "check failed"
    assert "may still answer" in (await anthropic.locator(".health").get_attribute("title") or "")
    assert await anthropic.locator(".latency").count() == 0  # a failed check has no round trip
    # Not a node: its models are not disabled and carry no reason.
    for mid in ("anthropic:claude-sonnet-4", "anthropic:claude-haiku-4"):
        assert await picker.locator(f"button.model[data-model='{mid}']").is_enabled()
    assert await anthropic.locator(".reason").count() == 0
    # The built-in model is not checked: it says it is ready.
    assert await picker.locator(".provider[data-provider='echo'] .health").inner_text() == "ready"
    await alice.page.screenshot(path=shot_path("models-cloud-health"))
    await picker.locator("button.model[data-model='anthropic:claude-sonnet-4']").click()
    await alice.page.wait_for_selector(".room-header .model-button[data-model='anthropic:claude-sonnet-4']")


# -- 6. settings ---------------------------------------------------------------------------------


async def test_member_reads_settings_without_controls_and_a_forced_put_shows_403_inline(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Roadmap")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    await bob.page.click(".room-header [aria-label='Room settings']")
    panel = bob.page.locator(".settings")
    await panel.wait_for()
    assert await panel.get_attribute("data-role") == "member"
    assert await panel.locator("dd.title").inner_text() == "Roadmap"
    assert await panel.locator("dd.mode").text_content() == "group"
    assert await panel.locator("dd.with-ai").inner_text() == "On"
    assert "Server default (echo)" in await panel.locator("dd.default-model").inner_text()
    assert await panel.locator("input, select, button.remove, form.settings-form").count() == 0
    await bob.page.screenshot(path=shot_path("settings-member"))
    # Forcing the change through the app's own call: the server says 403, the panel says so inline.
    dialogs: list[str] = []
    bob.page.on("dialog", lambda d: dialogs.append(d.message))
    await bob.page.evaluate(f"chatApp.actions.updateConversation({conv['id']}, {{title: 'mine now'}})")
    await panel.locator(".form-error:text('Not allowed: only the owner may change settings')").wait_for()
    assert dialogs == []
    assert (await alice.user.call("GET", f"/conversations/{conv['id']}")).body["title"] == "Roadmap"

    # The owner edits; Bob's panel and header follow live (conversation.updated).
    await alice.page.click(".room-header [aria-label='Room settings']")
    owner_panel = alice.page.locator(".settings")
    assert await owner_panel.get_attribute("data-role") == "owner"
    await owner_panel.locator("input[name=title]").fill("Roadmap 2027")
    await owner_panel.locator("input[name=with_ai]").uncheck()
    await owner_panel.locator("button:text('Save changes')").click()
    await owner_panel.locator(".form-ok:text('Saved.')").wait_for()
    await alice.page.screenshot(path=shot_path("settings-owner"))
    await panel.locator("dd.title:text('Roadmap 2027')").wait_for()
    assert await panel.locator("dd.with-ai").inner_text() == "Off"
    await bob.page.wait_for_selector(".room-title:text('Roadmap 2027')")
    await bob.page.wait_for_selector(".room-header .model-button .off:text('AI off')")
    # An unknown model and a mode conflict are refused inline for the owner too.
    await alice.page.evaluate(f"chatApp.actions.updateConversation({conv['id']}, {{default_model_id: 'openai:gpt-nope'}})")
    await owner_panel.locator(".form-error:text('Unknown model openai:gpt-nope')").wait_for()
    await owner_panel.locator("select[name=mode]").select_option("solo")
    await owner_panel.locator("button:text('Save changes')").click()
    await owner_panel.locator(".form-error:text('solo conversation has no other participants')").wait_for()
    # Settings' model picker sets the default model.
    await owner_panel.locator("button.model-field").click()
    await alice.page.click(".picker button.model[data-model='openai:gpt-4o']")
    await panel.locator("dd.default-model[data-model='openai:gpt-4o']").wait_for()


# -- 6b. answering when addressed: @ai, @alias, instructions ------------------------------------------


async def test_in_a_mentions_only_group_a_plain_message_gets_no_ai_reply_and_an_at_ai_message_gets_one(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Mentions only", ai_answers="mentions")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    hint = alice.page.locator(".composer .composer-hint")
    await hint.locator("text=mention @ai to ask the AI").wait_for()
    assert await hint.get_attribute("data-state") == "none"
    await alice.send("lunch at noon?")  # Send works without a mention
    for p in (alice, bob):
        await p.page.wait_for_selector(".msg:not(.pending):not(.ai) .body:has-text('lunch at noon?')")
    await alice.page.locator(".composer .input").fill("@ai where should we eat?")
    await alice.page.locator(".composer .composer-hint[data-state=ai]:has-text('asks the AI (echo)')").wait_for()
    await alice.page.locator(".composer .input").press("Enter")
    for p in (alice, bob):
        ai = await p.last_ai_done("where should we eat")
        assert await ai.get_attribute("data-status") == "complete"
        assert await ai.locator(".body").inner_text() == "Alice: @ai where should we eat?"  # echo
        assert await p.page.locator(".msg.ai").count() == 1  # the plain message got none
    assert await hint.get_attribute("data-state") == "none"  # the sent draft no longer mentions
    stored = (await bob.user.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"]
    assert [m["role"] for m in stored] == ["user", "user", "assistant"]
    # A room whose AI answers every message shows no hint.
    every = await group(alice, bob, title="Every message")
    await alice.page.goto(web.srv.base_url + f"/#/c/{every['id']}")
    await alice.page.reload()
    await alice.page.wait_for_selector(f".conv.active[data-id='{every['id']}']")
    assert await alice.page.locator(".composer .composer-hint").is_hidden()


async def test_typing_at_cl_offers_claude_by_keyboard_and_its_reply_shows_the_mentioned_tier_with_the_alias(
        web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Ask a model", ai_answers="mentions")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    page = bob.page
    box = page.locator(".composer .input")
    menu = page.locator(".mention-menu")
    options = menu.locator(".mention-option")
    selected = menu.locator(".mention-option[aria-selected=true]")
    # "@" offers @ai and every alias, with its model; Up/Down move (wrapping), Esc closes only the menu.
    await box.press_sequentially("@")
    await menu.wait_for(state="visible")
    assert await options.all_inner_texts() == ["@ai\nthe AI · echo", "@claude\nclaude-sonnet-4", "@gpt\ngpt-4o"]
    assert await selected.get_attribute("data-name") == "ai"
    assert await box.get_attribute("aria-expanded") == "true"
    for key, name in (("ArrowDown", "claude"), ("ArrowDown", "gpt"), ("ArrowDown", "ai"), ("ArrowUp", "gpt")):
        await box.press(key)
        assert await selected.get_attribute("data-name") == name
    assert await box.get_attribute("aria-activedescendant") == "mention-gpt"
    await box.press("Tab")  # Tab completes too
    assert await box.input_value() == "@gpt "
    await box.fill("")
    await box.press_sequentially("@")
    await box.press("Escape")
    await menu.wait_for(state="hidden")
    assert await box.input_value() == "@"
    await box.fill("")
    # "@cl" narrows to @claude; Enter completes it (and does not send).
    await box.press_sequentially("what does @cl")
    await menu.locator(".mention-option[data-name=claude]").wait_for()
    assert await options.count() == 1
    await page.screenshot(path=shot_path("mention-menu"))
    await box.press("Enter")
    await menu.wait_for(state="hidden")
    assert await box.input_value() == "what does @claude "
    await page.locator(".composer .composer-hint[data-state=alias]:has-text('@claude asks claude-sonnet-4')").wait_for()
    await box.press_sequentially("think?")
    await box.press("Enter")
    for p in (alice, bob):
        ai = await p.last_ai_done("what does @claude think?")
        assert await ai.locator(".model-chip").inner_text() == "AI • claude-sonnet-4"
        tier = ai.locator(".tier")
        assert (await tier.get_attribute("data-tier"), await tier.inner_text()) == ("mention", "mentioned")
        assert await tier.get_attribute("data-alias") == "claude"
        assert await tier.get_attribute("title") == "Mentioned: @claude asked anthropic:claude-sonnet-4"
    assert last_chat(web.anthropic)["model"] == "claude-sonnet-4"
    await alice.page.screenshot(path=shot_path("mention-reply"))
    await alice.page.reload()  # from history alone: the same tier and alias
    ai = await alice.last_ai_done("what does @claude think?")
    assert await ai.locator(".tier").get_attribute("title") == "Mentioned: @claude asked anthropic:claude-sonnet-4"


async def test_owner_sets_answering_and_instructions_inline_a_member_reads_them_live_and_refusals_show_inline(
        web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="House rules", ai_answers="mentions")
    cid = conv["id"]
    await asyncio.gather(alice.open(cid), bob.open(cid))
    dialogs: list[str] = []
    for p in (alice, bob):
        p.page.on("dialog", lambda d: dialogs.append(d.message))
        await p.page.click(".room-header [aria-label='Room settings']")
    mine, theirs = alice.page.locator(".settings .ai-settings"), bob.page.locator(".settings .ai-settings")
    assert await theirs.locator("dd.ai-answers").inner_text() == "Only when mentioned (@ai)"
    assert await theirs.locator(".instructions-text").inner_text() == "None"
    assert await theirs.locator("input, textarea, button").count() == 0  # read-only
    assert await mine.locator("input[name=ai_answers][value=mentions]").is_checked()

    # Instructions: typed with a counter, saved inline, and Bob's panel follows live.
    text = "Answer in French.\nKeep it short."
    await mine.locator("textarea[name=instructions]").fill(text)
    assert await mine.locator(".counter").inner_text() == f"{len(text)} / 4,000"
    await mine.locator("button.save-instructions").click()
    await mine.locator(".form-ok:text('Saved.')").wait_for()
    await theirs.locator(".instructions-text:not(.none)").wait_for()
    assert await theirs.locator(".instructions-text").inner_text() == text
    # Answering applies at once; Bob's panel and composer hint follow.
    await mine.locator("input[name=ai_answers][value=all]").click()
    await theirs.locator("dd.ai-answers:text('Every message')").wait_for()
    await bob.page.locator(".composer .composer-hint").wait_for(state="hidden")
    stored = (await alice.user.call("GET", f"/conversations/{cid}")).body
    assert (stored["ai_answers"], stored["instructions"]) == ("all", text)
    await bob.page.screenshot(path=shot_path("settings-ai-member"))

    # Too long: the counter warns, the server's 422 shows inline, nothing changes.
    await mine.locator("textarea[name=instructions]").fill("x" * 4001)
    assert await mine.locator(".counter.over").inner_text() == "4,001 / 4,000"
    await mine.locator("button.save-instructions").click()
    await mine.locator(".form-error:text('instructions must be at most 4000 characters')").wait_for()
    await alice.page.screenshot(path=shot_path("settings-ai-owner-error"))
    assert (await alice.user.call("GET", f"/conversations/{cid}")).body["instructions"] == text
    # Clear sends null.
    await mine.locator("button.clear-instructions").click()
    await theirs.locator(".instructions-text.none:text('None')").wait_for()
    assert (await alice.user.call("GET", f"/conversations/{cid}")).body["instructions"] is None
    assert await mine.locator("textarea[name=instructions]").input_value() == ""

    # Bob forces a change through the app's own call: the 403 shows in the AI section.
    await bob.page.evaluate(f"chatApp.actions.updateAiSettings({cid}, {{instructions: 'mine now', ai_answers: 'mentions'}})")
    await theirs.locator(".form-error:text('Not allowed: only the owner may change settings')").wait_for()
    stored = (await alice.user.call("GET", f"/conversations/{cid}")).body
    assert (stored["ai_answers"], stored["instructions"]) == ("all", None)
    assert dialogs == []


async def test_the_new_group_form_answers_only_mentions_by_default_and_takes_optional_instructions(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    await alice.open()
    page = alice.page
    dialog = page.locator("dialog.create")
    answers = dialog.locator("fieldset.answers")
    created: list[dict[str, Any]] = []
    for title, choice, instructions in (("Quiet group", None, "Be brief."), ("Chatty group", "all", "")):
        await page.click(".new-conversation")
        await dialog.locator("input[name=title]").fill(title)
        await dialog.locator("input[value=solo]").check()
        assert await answers.is_hidden()  # solo answers everything
        await dialog.locator("input[value=group]").check()
        await answers.wait_for(state="visible")
        assert await answers.locator("input[value=mentions]").is_checked()
        await dialog.locator("input[name=people]").fill(bob.name)
        if choice:
            await answers.locator(f"input[value={choice}]").check()
        if instructions:
            await dialog.locator("summary:text('Instructions for the AI (optional)')").click()
            await dialog.locator("textarea[name=instructions]").fill(instructions)
            assert await dialog.locator(".counter").inner_text() == f"{len(instructions)} / 4,000"
            await page.screenshot(path=shot_path("create-group-ai"))
        await dialog.locator("button[type=submit]").click()
        await dialog.wait_for(state="hidden")
        await page.wait_for_selector(f".room-title:text('{title}')")
        cid = await page.evaluate("chatApp.store.activeId")
        created.append((await alice.user.call("GET", f"/conversations/{cid}")).body)
    assert [(c["ai_answers"], c["instructions"]) for c in created] == [("mentions", "Be brief."), ("all", None)]
    assert await page.locator(".composer .composer-hint").is_hidden()  # the chatty one answers everything


# -- 2. conversations -------------------------------------------------------------------------------


async def test_conversation_list_orders_by_activity_counts_unread_and_creates_leaves_and_edits_people(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    carol = await web.client.user("carol", display_name="Carol")
    first = await group(alice, bob, title="First room")
    second = await group(alice, bob, title="Second room")
    await bob.user.send(first["id"], "old news", ai=False)
    await alice.open(second["id"])
    titles = alice.page.locator(".conv .conv-title")
    await alice.page.wait_for_function("document.querySelector('.conv .conv-title').textContent === 'First room'")
    first_row = alice.page.locator(f".conv[data-id='{first['id']}']")
    assert await first_row.locator(".badge").inner_text() == "1"
    await bob.user.send(second["id"], "in the open room", ai=False)
    await bob.user.send(first["id"], "news 2", ai=False)
    await bob.user.send(first["id"], "news 3", ai=False)
    await first_row.locator(".badge:text('3')").wait_for()
    assert await alice.page.locator(f".conv[data-id='{second['id']}'] .badge").count() == 0
    await alice.page.wait_for_selector(".msg .body:has-text('in the open room')")
    await first_row.click()
    await alice.page.wait_for_selector(".msg .body:has-text('news 3')")
    assert await first_row.locator(".badge").count() == 0
    await alice.page.reload()
    await alice.page.wait_for_selector(".conv")
    assert await alice.page.locator(".conv .badge").count() == 0  # seen seqs survive a reload
    assert (await titles.all_inner_texts())[:2] == ["First room", "Second room"]

    # Create: a partner conversation with a name that does not exist is refused inline.
    await alice.page.click(".new-conversation")
    dialog = alice.page.locator("dialog.create")
    await dialog.locator("input[name=title]").fill("Just us")
    await dialog.locator("input[value=partner]").check()
    await dialog.locator("input[name=people]").fill("nobody_here_" + secrets.token_hex(2))
    await dialog.locator("button[type=submit]").click()
    await dialog.locator(".form-error:text('unknown user')").wait_for()
    await dialog.locator("input[name=people]").fill(bob.name)
    await dialog.locator("button[type=submit]").click()
    await dialog.wait_for(state="hidden")
    await alice.page.wait_for_selector(".room-title:text('Just us')")
    await alice.page.click(".new-conversation")
    await dialog.locator("input[name=title]").fill("Thinking alone")
    await dialog.locator("input[value=solo]").check()
    await dialog.locator("button[type=submit]").click()
    await alice.page.wait_for_selector(".room-title:text('Thinking alone')")
    await alice.page.wait_for_selector(".conv .conv-sub:text('You and the AI')")

    # The owner adds and removes people; Bob leaves; everyone's view follows.
    await bob.open(first["id"])
    await first_row.click()
    await alice.page.click(".room-header [aria-label='Room settings']")
    panel = alice.page.locator(".settings")
    await panel.locator("input[name=add]").fill(carol.username)
    await panel.locator("form.add-people button").click()
    await panel.locator(f".people li[data-user='{carol.id}']").wait_for()
    await bob.page.wait_for_selector(".room-sub:has-text('3 people')")
    await panel.locator(f".people li[data-user='{carol.id}'] button.remove").click()
    await panel.locator(f".people li[data-user='{carol.id}']").wait_for(state="detached")
    await bob.page.click(".room-header [aria-label='Room settings']")
    await bob.page.click(".settings button.leave")
    await bob.page.wait_for_selector(f".conv[data-id='{first['id']}']", state="detached")
    await panel.locator(f".people li[data-user='{bob.user.id}']").wait_for(state="detached")


# -- 3. safe Markdown ----------------------------------------------------------------------------------


async def test_script_and_event_handlers_in_user_and_ai_text_never_run_and_markdown_renders(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Solo")  # echo: the AI repeats the text as its own
    await alice.open(conv["id"])
    attacks = [
        '<img src=x onerror="window.__xss = 1">',
        "<script>window.__xss = 2</script>",
        '[click me](javascript:window.__xss=3) <svg onload="window.__xss=4"></svg>',
        '**<img src=y onerror="window.__xss=5">** `<b onmouseover="window.__xss=6">`',
    ]
    for text in attacks:
        await alice.send(text)
        await alice.page.wait_for_function(
            "t => [...document.querySelectorAll('.msg.ai[data-status=complete] .body')].some(b => b.textContent.includes(t))",
            arg=text.split(" ")[0].strip("*`["))
    await alice.page.mouse.move(400, 300)
    await asyncio.sleep(0.3)
    assert await alice.page.evaluate("window.__xss") is None
    inside = await alice.page.evaluate(
        "[...document.querySelectorAll('.messages img, .messages script, .messages svg, .messages [onerror],"
        " .messages [onload], .messages [onmouseover], .messages a[href^=javascript]')].length")
    assert inside == 0
    bodies = await alice.page.locator(".messages .msg .body").all_inner_texts()
    assert sum('<img src=x onerror="window.__xss = 1">' in b for b in bodies) == 2  # the user's and the AI's
    assert sum("<script>window.__xss = 2</script>" in b for b in bodies) == 2

    await alice.send("**bold** and *it* and `x < y`\n\n- one\n- two\n\n```py\nif a < b:\n    pass\n```\n"
                     "See [docs](https://example.com/a?b=1) or https://example.org.")
    ai = await alice.last_ai_done("and it and")
    assert await ai.locator(".body strong").inner_text() == "bold"
    assert await ai.locator(".body em").inner_text() == "it"
    assert await ai.locator(".body p code").inner_text() == "x < y"
    assert await ai.locator(".body li").all_inner_texts() == ["one", "two"]
    assert await ai.locator(".body pre code").inner_text() == "if a < b:\n    pass"
    links = ai.locator(".body a")
    assert await links.count() == 2
    assert await links.nth(0).get_attribute("href") == "https://example.com/a?b=1"
    assert await links.nth(0).get_attribute("target") == "_blank"
    assert "noopener" in (await links.nth(0).get_attribute("rel") or "")
    assert await links.nth(1).get_attribute("href") == "https://example.org"


# -- 7, 8. Stop, presence, typing, "AI is replying" -------------------------------------------------


async def test_stop_is_offered_to_the_author_and_owner_only_and_everyone_sees_who_cancelled(web: Rig) -> None:
    web.openai.tokens = ["Three things are left:\n\n", "1. **Pricing page** ", "copy\n", "2. The `v2` ",
                         "migration guide\n", "3. A final load test\n\n", "I'd start with pricing."]
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    carol = await web.person("carol", "Carol")
    conv = await group(alice, bob, carol, title="Launch plan", default_model_id="openai:gpt-4o-mini")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]), carol.open(conv["id"]))
    await carol.user.send(conv["id"], "Morning! Where are we with the launch?", ai=False)
    await alice.send("What's left before we can ship?")
    await alice.last_ai_done("left before we can ship")
    prose = ("Here is a first draft. Pick a plan, ship today. Every plan includes unlimited rooms, "
             "every model your team connects, and streaming replies that anyone in the room can stop. ")
    web.openai.tokens = [w + " " for w in (prose * 12).split()]
    web.openai.delay = 0.02
    await bob.send("Draft the pricing page copy, please")
    for p in (alice, bob, carol):
        await p.page.wait_for_selector(".msg.ai[data-status=streaming] .stream-text:has-text('every model')")
        await p.page.wait_for_selector(".live-status .ai-replying:has-text('AI is replying with gpt-4o-mini')")
    await alice.page.screenshot(path=shot_path("room-streaming"))
    assert await bob.page.inner_text(".composer .send") == "Stop"  # the author
    assert await alice.page.inner_text(".composer .send") == "Stop"  # the owner
    assert await carol.page.inner_text(".composer .send") == "Send"  # neither
    await bob.page.click(".composer .send")
    for p in (alice, bob, carol):
        ai = await p.last_ai_done("Draft the pr")
        assert await ai.get_attribute("data-status") == "cancelled"
        await p.page.wait_for_selector(".live-status .ai-replying", state="detached")
        assert await p.page.inner_text(".composer .send") == "Send"
    assert await bob.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by you"
    assert await carol.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by Bob"
    assert await alice.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by Bob"
    text = await carol.page.locator(".msg.ai .body").last.inner_text()
    stored = (await alice.user.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"][-1]
    assert stored["status"] == "cancelled" and 0 < len(stored["content"]) < len("".join(web.openai.tokens))
    assert text == stored["content"].strip()


async def test_a_member_who_did_not_press_stop_sees_cancelled_by_the_owner_live_and_after_a_reload(web: Rig) -> None:
    web.openai.tokens = [f"w{i} " for i in range(200)]
    web.openai.delay = 0.02
    alice = await web.person("alice", "Alice Owner")
    bob = await web.person("bob", "Bob")
    carol = await web.person("carol", "Carol")
    conv = await group(alice, bob, carol, title="Who stopped it", default_model_id="openai:gpt-4o-mini")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]), carol.open(conv["id"]))
    await bob.send("write a long answer")
    for p in (alice, bob, carol):
        await p.page.wait_for_selector(".msg.ai[data-status=streaming] .stream-text:has-text('w5 ')")
    await alice.page.click(".composer .send")  # the owner stops Bob's reply
    for p in (alice, bob, carol):
        ai = await p.last_ai_done("write a long")
        assert await ai.get_attribute("data-status") == "cancelled"
    assert await alice.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by you"
    for p in (bob, carol):  # Bob wrote the message, Carol only watched: neither pressed Stop
        assert await p.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by Alice Owner"
    stored = (await carol.user.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"][-1]
    assert stored["cancelled_by"]["id"] == alice.user.id
    # From history alone, for everyone, the one who pressed Stop included.
    for p in (alice, bob, carol):
        await p.page.reload()
        await p.page.wait_for_selector(".msg.ai[data-status=cancelled]")
    assert await alice.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by you"
    for p in (bob, carol):
        assert await p.page.locator(".msg.ai .status").last.inner_text() == "Cancelled by Alice Owner"


async def test_presence_and_typing_indicators_appear_and_expire(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    carol_user = await web.client.user("carol", display_name="Carol")
    conv = await group(alice, bob, title="Standup")
    await alice.user.call("POST", f"/conversations/{conv['id']}/participants", {"usernames": [carol_user.username]})
    await alice.open(conv["id"])
    await alice.page.wait_for_selector(".room-sub .present:has-text('1 here')")
    await bob.open(conv["id"])
    await alice.page.wait_for_selector(".room-sub .present:has-text('2 here')")
    await bob.page.locator(".composer .input").press_sequentially("hel")
    await alice.page.wait_for_selector(".live-status .typing:text('Bob is typing…')")
    await bob.page.locator(".composer .input").fill("")
    await bob.page.locator(".composer .input").press("Backspace")
    await alice.page.wait_for_selector(".live-status .typing", state="detached")
    # Someone who starts typing and vanishes: the indicator expires on its own.
    carol = await web.client.ws(carol_user.token)
    await carol.subscribe(conv["id"])
    await alice.page.wait_for_selector(".room-sub .present:has-text('3 here')")
    await carol.send({"type": "typing", "conversation_id": conv["id"], "state": True})
    await alice.page.wait_for_selector(".live-status .typing:text('Carol is typing…')")
    await alice.page.wait_for_selector(".live-status .typing", state="detached", timeout=15_000)
    await carol.close()
    await alice.page.wait_for_selector(".room-sub .present:has-text('2 here')")
    await bob.page.close()
    await alice.page.wait_for_selector(".room-sub .present:has-text('1 here')")


# -- 9. never loses anything --------------------------------------------------------------------------


async def test_socket_dropped_mid_reply_reconnects_and_the_reply_completes_without_duplicates(web: Rig) -> None:
    web.openai.tokens = [f"t{i} " for i in range(120)]
    web.openai.delay = 0.02
    expected = "".join(web.openai.tokens).strip()
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, default_model_id="openai:gpt-4o")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    await bob.send("stream a lot")
    await bob.page.wait_for_selector(".msg.ai[data-status=streaming] .stream-text:has-text('t10 ')")
    await bob.page.locator(".composer .input").fill("a draft that must survive")
    await bob.page.evaluate("chatApp.socket.drop()")
    await bob.page.wait_for_selector(".connection[data-state=reconnecting]:not([hidden])")
    await bob.page.wait_for_selector(".connection[data-state=online]", state="attached")
    assert await bob.page.locator(".connection").is_hidden()  # the state clears
    for p in (alice, bob):
        ai = await p.last_ai_done("stream a lot")
        assert await ai.get_attribute("data-status") == "complete"
        assert await ai.locator(".body").inner_text() == expected
    assert await bob.page.locator(".msg.ai").count() == 1
    assert await bob.page.input_value(".composer .input") == "a draft that must survive"

    # Offline: a send waits (shown as sending), then goes once, with its client_id, when back.
    await bob.context.set_offline(True)
    await bob.page.evaluate("chatApp.socket.drop()")
    await bob.page.wait_for_selector(".connection[data-state=reconnecting]:not([hidden])")
    await bob.send("sent while offline")
    await bob.page.wait_for_selector(".pending-list .msg.pending:has-text('sent while offline')")
    await asyncio.sleep(1.5)  # a reconnect attempt or two fail meanwhile
    await bob.context.set_offline(False)
    await bob.page.wait_for_selector(".pending-list .msg", state="detached", timeout=20_000)
    await alice.page.wait_for_selector(".msg .body:has-text('sent while offline')")
    stored = (await alice.user.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == ["stream a lot", "sent while offline"]
    assert await bob.page.locator(".messages .msg:not(.ai) .body:has-text('sent while offline')").count() == 1
    await bob.page.locator(".composer .input").fill("kept across a reload")
    await bob.page.reload()
    await bob.page.wait_for_selector(".room-title")
    assert await bob.page.input_value(".composer .input") == "kept across a reload"


async def test_missing_more_than_the_replay_cap_pages_history_over_rest(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Busy room")
    await bob.open(conv["id"])
    await bob.context.set_offline(True)
    await bob.page.evaluate("chatApp.socket.drop()")
    await bob.page.wait_for_selector(".connection[data-state=reconnecting]:not([hidden])")
    for i in range(45):  # more than the rig's replay_cap (20)
        await alice.user.send(conv["id"], f"missed {i}", ai=False)
    await bob.context.set_offline(False)
    await bob.page.wait_for_function("document.querySelectorAll('.messages .msg').length === 45", timeout=15_000)
    seqs = [int(s) for s in await bob.page.eval_on_selector_all(".messages .msg", "els => els.map(e => e.dataset.seq)")]
    assert seqs == list(range(1, 46))
    assert await bob.page.locator(".messages .msg .body").last.inner_text() == "missed 44"


# -- 10. comfortable: scrolling, keyboard, phone width, dark ---------------------------------------------


async def fill_room(user: User, cid: int, count: int, prefix: str = "message") -> None:
    for start in range(0, count, 50):
        await asyncio.gather(*(user.send(cid, f"{prefix} {i}", ai=False, client_id=f"{prefix}-{i}")
                               for i in range(start, min(count, start + 50))))


async def test_scrolling_up_loads_older_history_and_new_messages_show_a_pill_unless_at_the_bottom(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, title="Long room", with_ai=False)
    await fill_room(bob.user, conv["id"], 130)
    await alice.open(conv["id"])
    rows = alice.page.locator(".messages:not(.pending-list) .msg")
    await alice.page.wait_for_function("document.querySelectorAll('.messages .msg').length === 50")
    at_bottom = "(() => { const s = document.querySelector('.scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight < 48; })()"
    assert await alice.page.evaluate(at_bottom)
    # scroll to the top until everything is there: each time the top is reached, an older page loads
    await alice.page.wait_for_function("""() => {
        document.querySelector('.scroller').scrollTop = 0;
        return document.querySelectorAll('.messages:not(.pending-list) .msg').length === 130;
    }""", polling=150, timeout=15_000)
    assert await rows.count() == 130
    seqs = [int(s) for s in await alice.page.eval_on_selector_all(".messages .msg", "els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 130
    await alice.page.eval_on_selector(".scroller", "s => s.scrollTop = 200")
    top_before = await alice.page.eval_on_selector(".scroller", "s => s.scrollTop")
    await bob.user.send(conv["id"], "while you read", ai=False)
    await alice.page.wait_for_selector(".new-pill:not([hidden])")
    assert await alice.page.eval_on_selector(".scroller", "s => s.scrollTop") == top_before
    await alice.page.click(".new-pill")
    await alice.page.wait_for_selector(".new-pill", state="hidden")
    assert await alice.page.evaluate(at_bottom)
    await bob.user.send(conv["id"], "at the bottom now", ai=False)
    await alice.page.wait_for_selector(".msg .body:has-text('at the bottom now')")
    await alice.page.wait_for_function(at_bottom)
    assert await alice.page.locator(".new-pill").is_hidden()

    # Keyboard: Shift+Enter is a new line, Enter sends; Esc closes the picker and the settings panel.
    box = alice.page.locator(".composer .input")
    await box.press_sequentially("first line")
    await box.press("Shift+Enter")
    await box.press_sequentially("second line")
    assert await box.input_value() == "first line\nsecond line"
    await box.press("Enter")
    await alice.page.wait_for_selector(".msg:not(.pending) .body:has-text('second line')")
    assert await box.input_value() == ""
    assert await alice.page.locator(".msg .body p").last.inner_html() == "first line<br>second line"
    await alice.page.click(".route-button")
    await alice.page.wait_for_selector(".picker:not([hidden])")
    await alice.page.keyboard.press("Escape")
    await alice.page.wait_for_selector(".picker", state="hidden")
    await alice.page.click(".room-header [aria-label='Room settings']")
    await alice.page.keyboard.press("Escape")
    await alice.page.wait_for_selector(".settings", state="hidden")


async def test_phone_width_switches_between_list_and_room_and_dark_mode_is_dark(web: Rig) -> None:
    alice = await web.person("alice", "Alice", viewport={"width": 390, "height": 844}, color_scheme="dark")
    conv = await alice.user.conversation(title="Pocket")
    await alice.user.send(conv["id"], "**Hello** from a phone")
    await alice.open()
    page = alice.page
    assert await page.locator(".sidebar").is_visible()
    assert await page.locator(".room-pane").is_hidden()
    await page.click(f".conv[data-id='{conv['id']}']")
    await page.wait_for_selector(".msg.ai[data-status=complete]")
    assert await page.locator(".sidebar").is_hidden()
    assert await page.locator(".room-header .back").is_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing sticks out sideways
    composer = await page.locator(".composer").bounding_box()
    assert composer and composer["y"] + composer["height"] <= 844
    bg = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    r, g, b = (int(x) for x in bg[bg.index("(") + 1:bg.index(")")].split(",")[:3])
    assert r + g + b < 120, bg  # dark
    await page.screenshot(path=shot_path("phone-dark"))
    await page.click(".room-header .back")
    await page.wait_for_selector(".sidebar")
    assert await page.locator(".room-pane").is_hidden()


# -- performance -----------------------------------------------------------------------------------------

PERF_PROBE = """
window.__perf = { deltas: [], longtasks: [] };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__perf.longtasks.push({ start: e.startTime, duration: e.duration });
}).observe({ type: "longtask", buffered: true });
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    // Registered before the app's onmessage: t0 is when the frame reached the page.
    this.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string" || !ev.data.includes('"ai.delta"')) return;
      const f = JSON.parse(ev.data);
      const t0 = performance.now();
      requestAnimationFrame(() => {
        const row = [...document.querySelectorAll(".msg.ai")].pop();
        const text = row ? row.querySelector(".body").textContent : "";
        window.__perf.deltas.push({ index: f.index, t0, shown: performance.now() - t0, ok: text.endsWith(f.text) || text.includes(f.text) });
      });
    });
  }
};
"""


async def test_a_thousand_messages_and_a_100_tokens_per_second_stream_keep_the_page_responsive(web: Rig) -> None:
    web.openai.tokens = [f"tok{i} " for i in range(300)]
    web.openai.delay = 0.01  # ~100 tokens/s, one ai.delta each (the rig's coalesce window is 0)
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Big room", default_model_id="openai:gpt-4o-mini")
    await fill_room(alice.user, conv["id"], 1000)
    await alice.page.add_init_script(PERF_PROBE)
    await alice.open(conv["id"])
    await alice.page.wait_for_function("document.querySelectorAll('.messages .msg').length === 50")
    load_ms = await alice.page.evaluate(f"""async () => {{
        const t0 = performance.now();
        const room = chatApp.store.room({conv['id']});
        while (room.hasMoreBefore) await chatApp.actions.loadOlder({conv['id']});
        await new Promise(r => requestAnimationFrame(() => r()));
        return performance.now() - t0;
    }}""")
    assert await alice.page.locator(".messages .msg").count() == 1000
    started = await alice.page.evaluate("performance.now()")
    await alice.send("now stream fast")
    ai = await alice.last_ai_done("now stream f", timeout=20_000)
    assert await ai.locator(".body").inner_text() == "".join(web.openai.tokens).strip()
    await asyncio.sleep(0.2)
    perf = await alice.page.evaluate("window.__perf")
    deltas = perf["deltas"]
    during = [t["duration"] for t in perf["longtasks"] if t["start"] >= started]
    shown = sorted(d["shown"] for d in deltas)
    last = max(deltas, key=lambda d: d["index"])
    span_s = (deltas[-1]["t0"] - deltas[0]["t0"]) / 1000
    numbers = {
        "history_1000_load_and_render_ms": round(load_ms, 1),
        "deltas": len(deltas), "stream_seconds": round(span_s, 2),
        "deltas_per_second": round(len(deltas) / span_s, 1) if span_s else None,
        "delta_to_screen_ms_median": round(shown[len(shown) // 2], 1),
        "delta_to_screen_ms_p95": round(shown[int(len(shown) * 0.95)], 1),
        "delta_to_screen_ms_max": round(shown[-1], 1),
        "last_delta_to_screen_ms": round(last["shown"], 1),
        "long_tasks_while_streaming": len(during),
        "longest_task_while_streaming_ms": round(max(during, default=0), 1),
    }
    print("\nweb perf:", numbers)
    shot_path("perf").with_suffix(".json").write_text(repr(numbers))
    # one ai.delta per provider read: a loaded machine reads several tokens at once
    assert len(deltas) >= 100 and all(d["ok"] for d in deltas)
    # Responsiveness, not speed (speed is for benchmarks): bounds a shared, busy 2-core CI
    # machine meets, that a page re-rendering the room per delta would not. Measured figures
    # are printed and kept in perf.json; docs/client.md has them.
    assert all(d < 1000 for d in during), numbers  # no long task over a second while streaming
    assert numbers["last_delta_to_screen_ms"] < 1000, numbers
    assert numbers["delta_to_screen_ms_p95"] < 1000, numbers


async def test_a_provider_failing_mid_reply_ends_it_as_error_with_the_reason(web: Rig) -> None:
    web.openai.fail_after, web.openai.fail_mode = 2, "error_event"
    alice = await web.person("alice", "Alice")
    conv = await alice.user.conversation(title="Flaky", default_model_id="openai:gpt-4o-mini")
    await alice.open(conv["id"])
    await alice.send("go")
    ai = await alice.last_ai_done("go")
    assert await ai.get_attribute("data-status") == "error"
    assert (await ai.locator(".status").inner_text()).startswith("Error (")
    assert (await ai.locator(".error-note").inner_text()).startswith("The model failed: ")
    assert await ai.locator(".body").inner_text() == "Hello,"  # the partial text stays
    await alice.page.reload()  # from history (no frames): still marked as failed
    await alice.page.wait_for_selector(".msg.ai[data-status=error] .status:text('Error')")


# -- automatic routing, regenerate, side by side, templates ----------------------------------------


async def test_an_auto_reply_shows_an_auto_marker_and_why_the_model_was_chosen_in_the_chip_tooltip(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, default_model_id="auto")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    await alice.send("Why does this fail?\n```python\nprint(1/0)\n```")
    for p in (alice, bob):
        ai = await p.last_ai_done("Why does this fail?")
        assert await ai.locator(".model-chip").inner_text() == "AI • claude-sonnet-4"
        assert "auto: code" in await ai.locator(".model-chip").get_attribute("title")
        assert await ai.locator(".tag.auto").inner_text() == "auto"
        assert await ai.locator(".tag.auto").get_attribute("title") == "auto: code"
    await bob.send("hi all")
    ai = await alice.last_ai_done("hi all")
    assert await ai.locator(".model-chip").inner_text() == "AI • gpt-4o-mini"
    assert await ai.locator(".tag.auto").get_attribute("title") == "auto: chit-chat"
    # A reply whose model nobody chose automatically has no marker.
    await alice.page.click(".route-button")
    await alice.page.click(".picker button.model[data-model='openai:gpt-4o']")
    await alice.send("Routed by hand")
    ai = await alice.last_ai_done("Routed by hand")
    assert await ai.locator(".tag.auto").count() == 0


async def test_regenerate_adds_a_second_reply_below_for_everyone_and_with_a_picked_model_uses_that_model(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, default_model_id="anthropic:claude-sonnet-4")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    await alice.send("Name our project")
    first = await alice.last_ai_done("Name our project")
    first_id = await first.get_attribute("data-id")
    await first.locator("button.regenerate").click()
    for p in (alice, bob):
        await p.page.wait_for_function(
            "document.querySelectorAll('.msg.ai[data-status=complete]').length === 2")
        ais = p.page.locator(".messages:not(.pending-list) .msg.ai")
        assert await ais.nth(0).get_attribute("data-id") == first_id  # the first reply stays, above
        assert await ais.nth(1).locator(".model-chip").inner_text() == "AI • claude-sonnet-4"
        assert await ais.nth(1).locator(".body").inner_text() == "Hello, world!"
    # "with…" opens the model picker; the reply it asks for comes from the picked model.
    await bob.page.locator(".msg.ai").nth(1).locator("button.regenerate-with").click()
    await bob.page.click(".picker[data-purpose='regenerate'] button.model[data-model='openai:gpt-4o']")
    for p in (alice, bob):
        await p.page.wait_for_function(
            "document.querySelectorAll('.msg.ai[data-status=complete]').length === 3")
        third = p.page.locator(".messages:not(.pending-list) .msg.ai").nth(2)
        assert await third.locator(".model-chip").inner_text() == "AI • gpt-4o"
    assert last_chat(web.openai)["model"] == "gpt-4o"
    # Every reply answers the same message.
    msgs = (await alice.user.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"]
    ask = next(m for m in msgs if m["content"] == "Name our project")
    assert [m["reply_to"] for m in msgs if m["role"] == "assistant"] == [ask["id"]] * 3


async def test_regenerate_in_a_room_whose_ai_is_off_shows_the_servers_refusal_above_the_composer(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    conv = await group(alice)
    await alice.open(conv["id"])
    await alice.send("Hello there")
    ai = await alice.last_ai_done("Hello there")
    r = await alice.user.call("PUT", f"/conversations/{conv['id']}", {"with_ai": False})
    assert r.status == 200, r.body
    await ai.locator("button.regenerate").click()
    notice = alice.page.locator(".composer-notice")
    await notice.wait_for(state="visible")
    assert (await notice.inner_text()).strip() != ""
    assert await alice.page.locator(".msg.ai").count() == 1


async def test_compare_sends_two_models_and_their_replies_stream_at_once_as_separate_messages(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    conv = await group(alice, bob, default_model_id="anthropic:claude-sonnet-4")
    await asyncio.gather(alice.open(conv["id"]), bob.open(conv["id"]))
    web.openai.delay = web.anthropic.delay = 0.3  # slow enough to see both streaming at once
    await alice.page.click(".route-button")
    await alice.page.click(".picker .compare-toggle")
    assert await alice.page.locator(".picker .compare-apply").is_disabled()  # one model is not a comparison
    for model in ("openai:gpt-4o", "anthropic:claude-haiku-4", "openai:gpt-4o-mini"):
        await alice.page.click(f".picker button.model[data-model='{model}']")
    # Three is the most: the others are disabled until one is unpicked.
    assert await alice.page.locator(".picker button.model[data-model='anthropic:claude-sonnet-4']").is_disabled()
    await alice.page.click(".picker button.model[data-model='openai:gpt-4o-mini']")
    await alice.page.click(".picker .compare-apply")
    chip = alice.page.locator(".route-chip:not([hidden])")
    await chip.wait_for()
    assert await chip.get_attribute("data-compare") == "openai:gpt-4o,anthropic:claude-haiku-4"
    assert await chip.locator("strong").all_inner_texts() == ["gpt-4o", "claude-haiku-4"]
    assert "side by side" in await chip.inner_text()
    await alice.send("Pick a name")
    for p in (alice, bob):  # both stream at the same time, each its own row
        await p.page.wait_for_function(
            "document.querySelectorAll('.msg.ai[data-status=streaming]').length === 2", timeout=10_000)
    for p in (alice, bob):
        await p.page.wait_for_function("document.querySelectorAll('.msg.ai[data-status=complete]').length === 2")
        chips = await p.page.locator(".msg.ai .model-chip").all_inner_texts()
        assert sorted(chips) == ["AI • claude-haiku-4", "AI • gpt-4o"]
    assert await alice.page.locator(".route-chip").is_hidden()  # for one message only
    assert last_chat(web.openai)["model"] == "gpt-4o"
    assert last_chat(web.anthropic)["model"] == "claude-haiku-4"


async def test_a_picked_template_fills_the_new_conversation_form_keeps_explicit_edits_and_is_sent(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    bob = await web.person("bob", "Bob")
    await alice.open()
    page = alice.page
    dialog = page.locator("dialog.create")
    await page.click(".new-conversation")
    row = dialog.locator(".template-row")
    await row.wait_for(state="visible")
    assert await row.locator("option").all_inner_texts() == ["None", "Daily stand-up"]
    await dialog.locator("input[name=title]").fill("Monday")  # typed before picking: it stays
    await row.locator("select").select_option("standup")
    assert await dialog.locator("input[name=title]").input_value() == "Monday"
    assert await dialog.locator("input[name=mode][value=group]").is_checked()
    assert await dialog.locator("input[name=ai_answers][value=mentions]").is_checked()
    assert await dialog.locator("textarea[name=instructions]").input_value() == "Summarize blockers in one line each."
    assert "Stand-up: " in await row.locator(".template-note").inner_text()
    await dialog.locator("input[name=ai_answers][value=all]").check()  # an edit after picking wins too
    await dialog.locator("input[name=people]").fill(bob.name)
    await dialog.locator("button[type=submit]").click()
    await dialog.wait_for(state="hidden")
    await page.wait_for_selector(".room-title:text('Stand-up: Monday')")
    cid = await page.evaluate("chatApp.store.activeId")
    conv = (await alice.user.call("GET", f"/conversations/{cid}")).body
    assert (conv["title"], conv["mode"], conv["ai_answers"], conv["instructions"]) == (
        "Stand-up: Monday", "group", "all", "Summarize blockers in one line each.")


async def test_the_template_control_is_hidden_when_the_server_has_no_templates(web: Rig) -> None:
    alice = await web.person("alice", "Alice")
    await alice.page.route("**/templates", lambda route: route.fulfill(json={"templates": []}))
    await alice.open()
    await alice.page.click(".new-conversation")
    dialog = alice.page.locator("dialog.create")
    await dialog.wait_for(state="visible")
    await alice.page.wait_for_function("Array.isArray(chatApp.store.templates)")
    assert await dialog.locator(".template-row").is_hidden()
