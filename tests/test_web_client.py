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

    async def last_ai_done(self, timeout: float = 10_000) -> Any:
        await self.page.wait_for_function(
            "() => { const r = [...document.querySelectorAll('.msg.ai')].pop();"
            " return r && r.dataset.status !== 'streaming'; }", timeout=timeout)
        return self.page.locator(".msg.ai").last


class Rig:
    def __init__(self, srv: Running, client: Client, browser: Any, openai: FakeOpenAI,
                 anthropic: FakeAnthropic, admin: User) -> None:
        self.srv, self.client, self.browser = srv, client, browser
        self.openai, self.anthropic, self.admin = openai, anthropic, admin
        self.people: list[Person] = []

    def reset(self) -> None:
        for fake in (self.openai, self.anthropic):
            fake.fail_status = fake.fail_after = None
            fake.delay = 0.0
            fake.tokens = list(TOKENS)

    async def person(self, prefix: str, display: str | None = None, *, viewport: dict[str, int] | None = None,
                     color_scheme: str = "light", signed_in: bool = True) -> Person:
        user = await self.client.user(prefix, display_name=display)
        state = {"cookies": [], "origins": [{"origin": self.srv.base_url,
                                             "localStorage": [{"name": "chat.token", "value": user.token}]}]}
        ctx = await self.browser.new_context(storage_state=state if signed_in else None,
                                             viewport=viewport or {"width": 1280, "height": 800},
                                             color_scheme=color_scheme)
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
            async with running_server(database, providers=providers, provider_timeout_idle=2.0,
                                      provider_timeout_first_token=2.0, echo_delay=0.01,
                                      node_check_interval=0.5, replay_cap=20) as srv:
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


async def group(owner: Person, *members: Person, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "Design review")
    body.setdefault("mode", "group")
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
