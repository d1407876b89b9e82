"""Prefetch: a turn's provider request goes out while its user message is still being stored,
and is used only when it is exactly the request the stored history makes; otherwise it is
dropped and the turn asks again. One provider slot (concurrency 1), so a request that kept
its slot would stall every later turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from server.settings import ProviderConfig
from tests.conftest import Client, Running, fresh_database, running_server
from tests.fakes import FakeAnthropic, FakeOpenAI
from tests.test_metrics import samples, scrape

TOKENS = ["Hello", ",", " world", "!"]


class Rig:
    def __init__(self, srv: Running, client: Client, fake: FakeOpenAI, spare: FakeAnthropic, db: str,
                 admin: Any) -> None:
        self.srv, self.client, self.fake, self.spare, self.db, self.admin = srv, client, fake, spare, db, admin

    async def conversation(self, user: Any, **body: Any) -> int:
        """AI on, answered by the fake OpenAI (the system default, Anthropic, is the fallback)."""
        return (await user.conversation(with_ai=True, default_model_id="openai:house", **body))["id"]

    async def prefetches(self) -> dict[str, float]:
        m = samples((await scrape(self.client))[1])
        return {o: m.get(("chat_ai_prefetches_total", (("outcome", o),)), 0.0) for o in ("used", "missed", "unused")}

    async def sql(self, query: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.db)
        try:
            await conn.execute(query, *args)
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def rig(postgres_url: str, http: Any) -> AsyncIterator[Rig]:
    db = await fresh_database(postgres_url)
    async with FakeOpenAI(models=["house"]) as fake, FakeAnthropic(models=["spare"]) as spare:
        providers = (ProviderConfig("openai", "openai", "OpenAI", base_url=fake.base_url, models=("house",),
                                    concurrency=1),
                     ProviderConfig("anthropic", "anthropic", "Anthropic", base_url=spare.base_url, api_key="ak",
                                    models=("spare",)))
        # a small history window, so that guesses must cut and drop lines as start_reply does
        async with running_server(db, providers=providers, default_model="anthropic:spare", history_messages=4,
                                  history_chars=60) as srv:
            client = Client(http, srv.base_url, srv.ws_url)
            admin = await client.user("admin")
            yield Rig(srv, client, fake, spare, db, admin)


@pytest.fixture
def web(rig: Rig) -> Rig:
    rig.fake.tokens, rig.fake.delay, rig.fake.fail_status = list(TOKENS), 0.0, None
    return rig


async def ask(user: Any, cid: int, text: str, **extra: Any) -> dict[str, Any]:
    r = await user.call("POST", f"/conversations/{cid}/messages?wait=true", {"content": text, **extra})
    assert r.status == 201, r.body
    return r.body


def sent_lines(request: Any) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.json["messages"] if m["role"] != "system"]


async def requests_reach(fake: FakeOpenAI, count: int, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while len(fake.requests) < count:
            await asyncio.sleep(0.01)


async def held(web: Rig, cid: int, send: Any, requests: int) -> Any:
    """Run `send` while the conversation's row is locked (so its insert waits) until the fake
    has `requests` requests: the one sent ahead is in before the turn can judge it."""
    lock = await asyncpg.connect(web.db)
    try:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
        task = asyncio.create_task(send)
        await requests_reach(web.fake, requests)
        await tx.rollback()
    finally:
        await lock.close()
    return await task


async def test_the_provider_is_asked_while_the_message_waits_to_be_stored_and_that_request_is_used(web: Rig) -> None:
    u = await web.client.user()
    cid = await web.conversation(u)
    await ask(u, cid, "first")  # nothing seen of this conversation yet: asked after the history read
    before, asked = await web.prefetches(), len(web.fake.requests)
    lock = await asyncpg.connect(web.db)
    try:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)  # the insert waits
        send = asyncio.create_task(ask(u, cid, "second"))
        await requests_reach(web.fake, asked + 1)
        assert not send.done()  # the message is not stored, and the provider already has the turn
        await tx.rollback()
    finally:
        await lock.close()
    body = await send
    assert body["reply"]["content"] == "Hello, world!" and body["reply"]["status"] == "complete"
    assert len(web.fake.requests) == asked + 1  # that one request made the reply: not asked twice
    assert sent_lines(web.fake.requests[-1]) == [("user", "first"), ("assistant", "Hello, world!"),
                                                 ("user", "second")]
    after = await web.prefetches()
    assert after["used"] == before["used"] + 1 and after["missed"] == before["missed"]


async def test_a_guess_the_stored_history_contradicts_is_dropped_and_the_turn_asks_again(web: Rig) -> None:
    u = await web.client.user()
    cid = await web.conversation(u)
    await ask(u, cid, "one")
    # As another server process would: settings this one has not seen.
    await web.sql("UPDATE conversations SET instructions = 'Answer in French.' WHERE id = $1", cid)
    web.fake.delay = 0.5  # the guessed request is still streaming when it is found wrong
    before, asked, cut = await web.prefetches(), len(web.fake.requests), web.fake.disconnects
    body = await held(web, cid, ask(u, cid, "two"), asked + 1)
    assert body["reply"]["content"] == "Hello, world!"
    guessed, real = web.fake.requests[asked:]
    assert "Answer in French." not in str(guessed.json["messages"])
    assert "Answer in French." in str(real.json["messages"])
    assert await web.fake.wait_disconnects(cut + 1, timeout=5) == cut + 1  # the guess was closed, unread
    after = await web.prefetches()
    assert after["missed"] == before["missed"] + 1 and after["used"] == before["used"]
    web.fake.delay = 0.0
    assert (await ask(u, cid, "three"))["reply"]["status"] == "complete"  # its slot is free again


async def test_guesses_cut_the_history_as_the_database_does_and_name_speakers_in_rooms(web: Rig) -> None:
    alice, bob = await web.client.user("alice", "Alice"), await web.client.user("bob", "Bob")
    cid = await web.conversation(alice, mode="group", ai_answers="mentions", participant_usernames=[bob.username])
    await ask(alice, cid, "start", ai=True)
    before = await web.prefetches()
    # Longer than the 60-character window, across it, and lines with no turn in between.
    for author, text, ai in [(bob, "x" * 70, True), (alice, "plain line", None), (bob, "y" * 45, True),
                             (alice, "z" * 59, True), (bob, "short", None), (alice, "w" * 61, True),
                             (bob, "end", True)]:
        extra = {"ai": True} if ai else {}
        body = await ask(author, cid, text, **extra)
        assert (body.get("reply") is not None) == bool(ai)
    after = await web.prefetches()
    # five turns; Bob's first is not sent ahead: he has not been seen taking part yet
    assert after["used"] == before["used"] + 4 and after["missed"] == before["missed"]
    assert sent_lines(web.fake.requests[-1])[-1] == ("user", "Bob: end")


async def test_no_request_goes_ahead_of_a_budget_check(web: Rig) -> None:
    u = await web.client.user()
    cid = await web.conversation(u)
    await ask(u, cid, "first")
    r = await web.admin.call("PUT", f"/budgets/users/{u.id}", {"period": "day", "limit_usd": 5})
    assert r.status == 200
    asked = len(web.fake.requests)
    lock = await asyncpg.connect(web.db)
    try:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cid)
        send = asyncio.create_task(ask(u, cid, "second"))
        await asyncio.sleep(0.3)
        assert len(web.fake.requests) == asked  # nothing asked before the budget is reserved
        await tx.rollback()
    finally:
        await lock.close()
    assert (await send)["reply"]["status"] == "complete" and len(web.fake.requests) == asked + 1


async def test_a_guessed_turn_the_stored_message_does_not_start_frees_its_provider_slot(web: Rig) -> None:
    u = await web.client.user()
    cid = await web.conversation(u)
    await ask(u, cid, "first")
    await web.sql("UPDATE conversations SET with_ai = false WHERE id = $1", cid)  # unseen by the guess
    web.fake.delay = 0.5  # the guessed request is still streaming when the message is stored
    before, cut = await web.prefetches(), web.fake.disconnects
    body = await held(web, cid, ask(u, cid, "no AI now"), len(web.fake.requests) + 1)
    assert body.get("reply") is None
    assert await web.fake.wait_disconnects(cut + 1, timeout=5) == cut + 1
    assert (await web.prefetches())["unused"] == before["unused"] + 1
    web.fake.delay = 0.0
    other = await web.conversation(u)
    assert (await ask(u, other, "still served"))["reply"]["status"] == "complete"


async def test_no_request_goes_ahead_for_someone_outside_the_conversation(web: Rig) -> None:
    owner, stranger = await web.client.user(), await web.client.user()
    cid = await web.conversation(owner)
    await ask(owner, cid, "mine")
    before, asked = await web.prefetches(), len(web.fake.requests)
    r = await stranger.call("POST", f"/conversations/{cid}/messages?wait=true", {"content": "let me in"})
    assert r.status == 404
    assert await web.prefetches() == before and len(web.fake.requests) == asked  # no guess was even made


async def test_a_request_sent_ahead_that_fails_before_its_first_token_falls_back_like_any_other(web: Rig) -> None:
    u = await web.client.user()
    cid = await web.conversation(u)
    await ask(u, cid, "first")
    before, spare_asked = await web.prefetches(), len(web.spare.requests)
    web.fake.fail_status = 503
    reply = (await ask(u, cid, "second"))["reply"]
    assert reply["status"] == "complete" and reply["model_used"] == "anthropic:spare"
    assert reply["fallback_from"] == "openai:house" and len(web.spare.requests) == spare_asked + 1
    assert (await web.prefetches())["used"] == before["used"] + 1  # it was the turn's request, and it failed
    web.fake.fail_status = None
    other = await web.conversation(u)
    reply = (await ask(u, other, "third"))["reply"]
    assert reply["status"] == "complete" and reply["model_used"] == "openai:house"  # its one slot is free
