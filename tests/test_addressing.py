"""AI that answers when addressed: per-conversation `ai_answers`, @ai and @alias mentions,
`ai: true/false` overrides, and the owner's instructions sent with every turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.settings import ProviderConfig
from tests.conftest import Client, Running, running_server
from tests.fakes import FakeAnthropic, FakeOpenAI


class Rig:
    def __init__(self, srv: Running, client: Client, openai: FakeOpenAI, anthropic: FakeAnthropic) -> None:
        self.srv, self.client, self.openai, self.anthropic = srv, client, openai, anthropic


@pytest.fixture(scope="module")
async def rig(database_url: str, http: Any) -> AsyncIterator[Rig]:
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        providers = (
            ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, models=("gpt-a",)),
            ProviderConfig("anthropic", "anthropic", "Anthropic", base_url=an.base_url, api_key="k",
                           models=("claude-x",)),
        )
        aliases = {"claude": "anthropic:claude-x", "gpt": "openai:gpt-a"}
        async with running_server(database_url, providers=providers, aliases=aliases,
                                  default_model="openai:gpt-a") as srv:
            yield Rig(srv, Client(http, srv.base_url, srv.ws_url), oa, an)


async def send(user: Any, cid: int, text: str, **extra: Any) -> dict[str, Any]:
    r = await user.send(cid, text, **extra)
    assert r.status == 201, r.body
    return r.body


async def test_a_group_set_to_mentions_answers_only_when_mentioned_and_rooms_answer_everything_by_default(
        rig: Rig) -> None:
    alice, bob = await rig.client.user(), await rig.client.user()
    default = await alice.conversation(mode="group", participant_usernames=[bob.username])
    assert default["ai_answers"] == "all"  # as the contract says: a message starts a turn
    group = await alice.conversation(mode="group", ai_answers="mentions", participant_usernames=[bob.username])
    assert group["ai_answers"] == "mentions"
    assert (await send(bob, group["id"], "lunch at noon?"))["ai"] is None
    mentioned = (await send(bob, group["id"], "@ai where should we eat?"))["ai"]
    assert mentioned["model"] == "openai:gpt-a" and mentioned["tier"] == "system"
    assert (await send(bob, group["id"], "no mention, but asked", ai=True))["ai"] is not None
    assert (await send(bob, group["id"], "@ai never mind", ai=False))["ai"] is None
    solo = await alice.conversation()
    assert solo["ai_answers"] == "all" and (await send(alice, solo["id"], "hi"))["ai"] is not None


async def test_an_alias_mention_routes_that_message_to_its_model_as_the_mention_tier(rig: Rig) -> None:
    alice, bob = await rig.client.user(), await rig.client.user()
    conv = await alice.conversation(mode="group", ai_answers="mentions", participant_usernames=[bob.username])
    r = await bob.call("POST", f"/conversations/{conv['id']}/messages?wait=true", {"content": "@claude your view?"})
    assert r.body["ai"] == {"reply_id": r.body["ai"]["reply_id"], "model": "anthropic:claude-x", "tier": "mention"}
    assert r.body["reply"]["model_used"] == "anthropic:claude-x" and r.body["reply"]["tier"] == "mention"
    # The next message goes back to the room's chain; an explicit model beats a mention.
    assert (await send(bob, conv["id"], "@ai and now?"))["ai"]["model"] == "openai:gpt-a"
    explicit = await send(bob, conv["id"], "@claude but on gpt", model="openai:gpt-a")
    assert (explicit["ai"]["model"], explicit["ai"]["tier"]) == ("openai:gpt-a", "message")
    models = (await bob.call("GET", "/ai/models")).body
    assert models["aliases"] == {"claude": "anthropic:claude-x", "gpt": "openai:gpt-a"}


async def test_the_owner_sets_answering_and_instructions_which_reach_the_model_and_members_cannot(rig: Rig) -> None:
    alice, bob = await rig.client.user(), await rig.client.user()
    conv = await alice.conversation(mode="group", ai_answers="mentions", participant_usernames=[bob.username])
    cid = conv["id"]
    body = {"ai_answers": "all", "instructions": "Answer in French."}
    assert (await bob.call("PUT", f"/conversations/{cid}", body)).status == 403
    for bad in ({"ai_answers": "sometimes"}, {"instructions": "x" * 4001}, {"instructions": 5}):
        assert (await alice.call("PUT", f"/conversations/{cid}", bad)).status == 422, bad
    updated = (await alice.call("PUT", f"/conversations/{cid}", body)).body
    assert (updated["ai_answers"], updated["instructions"]) == ("all", "Answer in French.")
    r = await bob.call("POST", f"/conversations/{cid}/messages?wait=true", {"content": "no mention needed now"})
    assert r.body["reply"]["status"] == "complete"
    system = [m["content"] for m in rig.openai.requests[-1].json["messages"] if m["role"] == "system"]
    assert len(system) == 2 and system[1].endswith("Answer in French.")
    cleared = (await alice.call("PUT", f"/conversations/{cid}", {"instructions": None})).body
    assert cleared["instructions"] is None


async def test_templates_are_listed_and_a_conversation_made_from_one_takes_its_settings_unless_told_otherwise(
        database_url: str, http: Any) -> None:
    templates = {"standup": {"label": "Daily stand-up", "title_prefix": "Stand-up: ", "mode": "group",
                             "ai_answers": "mentions", "instructions": "Keep it short.",
                             "default_model_id": "echo:echo"}}
    async with running_server(database_url, templates=templates) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        alice, bob = await c.user(), await c.user()
        listed = (await alice.call("GET", "/templates")).body["templates"]
        assert listed == [{"name": "standup", **templates["standup"]}]
        conv = await alice.conversation(template="standup", title="Monday", participant_usernames=[bob.username])
        assert conv["title"] == "Stand-up: Monday" and conv["mode"] == "group"
        assert (conv["ai_answers"], conv["instructions"], conv["default_model_id"]) == (
            "mentions", "Keep it short.", "echo:echo")
        mine = await alice.conversation(template="standup", title="Tue", ai_answers="all", mode="solo")
        assert (mine["ai_answers"], mine["mode"]) == ("all", "solo")  # explicit fields win
        r = await alice.call("POST", "/conversations", {"template": "nope", "title": "x"})
        assert r.status == 422 and r.body["error"]["details"]["field"] == "template"
        for bad in ({"template": "standup", "title": 5}, {"template": 7, "title": "x"}):
            r = await alice.call("POST", "/conversations", bad)
            assert r.status == 422, (bad, r.body)
        untitled = await alice.call("POST", "/conversations", {"template": "standup"})
        assert untitled.status == 201 and untitled.body["title"] == "Stand-up: Daily stand-up"


async def test_an_auto_room_sends_code_to_one_model_and_chat_to_another_with_the_reason(
        database_url: str, http: Any) -> None:
    async with FakeOpenAI() as oa, FakeAnthropic() as an:
        providers = (
            ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, models=("gpt-a",)),
            ProviderConfig("anthropic", "anthropic", "Anthropic", base_url=an.base_url, api_key="k",
                           models=("claude-x",)),
        )
        routing = {"default": [{"model": "anthropic:claude-x", "contains_code": True, "reason": "code"},
                               {"model": "openai:gpt-a", "reason": "chit-chat"}]}
        async with running_server(database_url, providers=providers, routing=routing) as srv:
            u = await Client(http, srv.base_url, srv.ws_url).user()
            assert (await u.call("POST", "/conversations", {"title": "x", "default_model_id": "auto:nope"})).status == 422
            conv = await u.conversation(default_model_id="auto")
            sock = await u.ws()
            await sock.subscribe(conv["id"])
            code = (await send(u, conv["id"], "fix this:\n```py\nprint(1/0)\n```"))["ai"]
            assert (code["model"], code["tier"], code["route_reason"]) == ("anthropic:claude-x", "conversation", "code")
            start = await sock.until("ai.start")
            assert start["model"] == "anthropic:claude-x" and start["route_reason"] == "code"
            await sock.until("ai.done")
            chat = (await send(u, conv["id"], "how was your weekend?"))["ai"]
            assert (chat["model"], chat["route_reason"]) == ("openai:gpt-a", "chit-chat")
            page = (await u.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"]
            assert [m["route_reason"] for m in page if m["role"] == "assistant"][0] == "code"  # kept with the reply
            await sock.close()
