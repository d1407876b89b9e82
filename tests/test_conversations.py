"""Conversations REST: create with mode rules, list, get, owner-only settings, participants."""

from __future__ import annotations

from tests.conftest import Client


async def test_create_group_with_two_others_lists_participants_in_order(client: Client) -> None:
    owner, a, b = await client.user("own"), await client.user("a"), await client.user("b")
    conv = await owner.conversation(title="Planning", mode="group", participant_usernames=[a.username, b.username])
    assert conv["mode"] == "group" and conv["with_ai"] is True and conv["default_model_id"] is None
    assert conv["owner_id"] == owner.id and conv["last_seq"] == 0
    assert [(p["id"], p["role"]) for p in conv["participants"]] == [(owner.id, "owner"), (a.id, "member"),
                                                                     (b.id, "member")]
    assert conv["created_at"].endswith("Z")
    for u in (owner, a, b):
        r = await u.call("GET", f"/conversations/{conv['id']}")
        assert r.status == 200 and r.body["id"] == conv["id"]


async def test_defaults_are_solo_with_ai_and_system_model(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation()
    assert (conv["mode"], conv["with_ai"], conv["default_model_id"]) == ("solo", True, None)
    assert len(conv["participants"]) == 1


async def test_mode_rules_at_creation(client: Client) -> None:
    owner, a, b = await client.user(), await client.user(), await client.user()
    bad = [
        {"mode": "solo", "participant_usernames": [a.username]},
        {"mode": "partner", "participant_usernames": []},
        {"mode": "partner", "participant_usernames": [a.username, b.username]},
        {"mode": "crowd"},
        {"mode": "group", "participant_usernames": ["no_such_user_xyz"]},
        {"mode": "group", "participant_usernames": "notalist"},
    ]
    for body in bad:
        r = await owner.call("POST", "/conversations", {"title": "t", **body})
        assert r.status == 422, (body, r.body)
        assert r.body["error"]["code"] == "invalid"
    assert (await owner.call("GET", "/conversations")).body["conversations"] == []
    ok = await owner.call("POST", "/conversations", {"title": "t", "mode": "partner",
                                                     "participant_usernames": [a.username.upper()]})
    assert ok.status == 201 and [p["id"] for p in ok.body["participants"]] == [owner.id, a.id]


async def test_title_limits_and_types(client: Client) -> None:
    u = await client.user()
    for body in [{}, {"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": 7}, {"title": "a\x00b"},
                 {"title": "t", "with_ai": "yes"}, {"title": "t", "default_model_id": 5}]:
        r = await u.call("POST", "/conversations", body)
        assert r.status == 422, body
    r = await u.call("POST", "/conversations", {"title": "مرحبا 👋 שלום"})
    assert r.status == 201 and r.body["title"] == "مرحبا 👋 שלום"


async def test_non_participants_get_not_found(client: Client) -> None:
    owner, stranger = await client.user(), await client.user()
    conv = await owner.conversation()
    for method, path, body in [("GET", "", None), ("PUT", "", {"title": "x"}), ("GET", "/messages", None),
                               ("POST", "/messages", {"content": "hi"}),
                               ("POST", "/participants", {"usernames": [stranger.username]})]:
        r = await stranger.call(method, f"/conversations/{conv['id']}{path}", body)
        assert r.status == 404 and r.body["error"]["code"] == "not_found", (method, path)
    assert (await owner.call("GET", "/conversations/999999999")).status == 404
    assert (await owner.call("GET", "/conversations/abc")).status == 422
    assert (await owner.call("GET", "/conversations/99999999999999999999999")).status == 422


async def test_only_the_owner_changes_settings(client: Client) -> None:
    owner, member = await client.user(), await client.user()
    conv = await owner.conversation(mode="group", participant_usernames=[member.username])
    path = f"/conversations/{conv['id']}"
    r = await member.call("PUT", path, {"title": "mine now"})
    assert r.status == 403 and r.body["error"]["code"] == "forbidden"
    r = await owner.call("PUT", path, {"title": "Renamed", "with_ai": False})
    assert r.status == 200 and r.body["title"] == "Renamed" and r.body["with_ai"] is False
    r = await owner.call("PATCH", path + "/", {"default_model_id": "echo:echo"})
    assert r.status == 200 and r.body["default_model_id"] == "echo:echo" and r.body["title"] == "Renamed"
    r = await owner.call("PUT", path, {"default_model_id": None})
    assert r.status == 200 and r.body["default_model_id"] is None


async def test_unknown_model_is_rejected_when_set(client: Client) -> None:
    owner = await client.user()
    r = await owner.call("POST", "/conversations", {"title": "t", "default_model_id": "openai:gpt-nope"})
    assert r.status == 422 and r.body["error"]["code"] == "unknown_model"
    assert r.body["error"]["details"]["model"] == "openai:gpt-nope"
    conv = await owner.conversation()
    r = await owner.call("PUT", f"/conversations/{conv['id']}", {"default_model_id": "echo:nope"})
    assert r.status == 422 and r.body["error"]["code"] == "unknown_model"
    r = await owner.call("GET", f"/conversations/{conv['id']}")
    assert r.body["default_model_id"] is None


async def test_mode_changes_respect_participant_counts(client: Client) -> None:
    owner, a, b = await client.user(), await client.user(), await client.user()
    conv = await owner.conversation(mode="group", participant_usernames=[a.username, b.username])
    path = f"/conversations/{conv['id']}"
    assert (await owner.call("PUT", path, {"mode": "partner"})).status == 409
    assert (await owner.call("PUT", path, {"mode": "solo"})).status == 409
    assert (await owner.call("PUT", path, {"mode": "bogus"})).status == 422


async def test_participants_add_and_remove(client: Client) -> None:
    owner, a, b = await client.user(), await client.user(), await client.user()
    conv = await owner.conversation(mode="group")
    path = f"/conversations/{conv['id']}/participants"
    r = await owner.call("POST", path, {"usernames": [a.username, b.username, a.username]})
    assert r.status == 200 and {p["id"] for p in r.body["participants"]} == {owner.id, a.id, b.id}
    r = await a.call("POST", path, {"usernames": [owner.username]})
    assert r.status == 403
    r = await a.call("DELETE", f"{path}/{b.id}")
    assert r.status == 403  # members can't remove others
    r = await a.call("DELETE", f"{path}/{a.id}")  # but may leave
    assert r.status == 200 and a.id not in {p["id"] for p in r.body["participants"]}
    assert (await a.call("GET", f"/conversations/{conv['id']}")).status == 404
    r = await owner.call("DELETE", f"{path}/{b.id}")
    assert r.status == 200 and [p["id"] for p in r.body["participants"]] == [owner.id]
    assert (await owner.call("DELETE", f"{path}/{owner.id}")).status == 409


async def test_adding_to_solo_or_full_partner_conflicts(client: Client) -> None:
    owner, a, b = await client.user(), await client.user(), await client.user()
    solo = await owner.conversation()
    r = await owner.call("POST", f"/conversations/{solo['id']}/participants", {"usernames": [a.username]})
    assert r.status == 409
    pair = await owner.conversation(mode="partner", participant_usernames=[a.username])
    r = await owner.call("POST", f"/conversations/{pair['id']}/participants", {"usernames": [b.username]})
    assert r.status == 409


async def test_list_is_most_recent_activity_first(client: Client) -> None:
    u = await client.user()
    first = await u.conversation(title="first")
    second = await u.conversation(title="second")
    ids = [c["id"] for c in (await u.call("GET", "/conversations")).body["conversations"]]
    assert ids == [second["id"], first["id"]]
    assert (await u.send(first["id"], "bump", ai=False)).status == 201
    ids = [c["id"] for c in (await u.call("GET", "/conversations/")).body["conversations"]]
    assert ids == [first["id"], second["id"]]


async def test_browsers_on_other_origins_may_call_the_api(client: Client) -> None:
    pre = await client.call("OPTIONS", "/conversations", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status == 200
    assert pre.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
    u = await client.user()
    r = await u.call("GET", "/me", headers={"Origin": "https://app.example"})
    assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")
