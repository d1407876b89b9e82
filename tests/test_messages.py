"""Messages REST: store with gap-free seq, idempotent client_id, pagination, input limits."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from server.records import User as UserRecord
from server.store import Store
from tests.conftest import Client


async def test_post_stores_message_with_next_seq(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation(with_ai=False)
    r = await u.send(conv["id"], "hello 👋")
    assert r.status == 201
    m = r.body["message"]
    assert r.body["ai"] is None
    assert (m["seq"], m["role"], m["content"], m["status"], m["model_used"]) == (1, "user", "hello 👋", "complete",
                                                                                  None)
    assert m["author"] == {"id": u.id, "username": u.username, "display_name": u.info["display_name"]}
    assert m["conversation_id"] == conv["id"] and m["reply_to"] is None and m["usage"] is None
    r2 = await u.send(conv["id"], "second")
    assert r2.body["message"]["seq"] == 2
    got = await u.call("GET", f"/conversations/{conv['id']}")
    assert got.body["last_seq"] == 2


async def test_same_client_id_twice_stores_once_and_returns_the_same_message(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation(with_ai=False)
    a = await u.send(conv["id"], "once", client_id="c-1")
    b = await u.send(conv["id"], "once (retry)", client_id="c-1")
    assert a.status == b.status == 201
    assert b.body["message"] == a.body["message"]
    assert b.body.get("duplicate") is True
    page = await u.call("GET", f"/conversations/{conv['id']}/messages")
    assert [m["content"] for m in page.body["messages"]] == ["once"]


async def test_concurrent_resends_of_one_client_id_store_one_row(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation(with_ai=False)
    replies = await asyncio.gather(*(u.send(conv["id"], "race", client_id="same") for _ in range(10)))
    assert {r.body["message"]["id"] for r in replies} == {replies[0].body["message"]["id"]}
    page = await u.call("GET", f"/conversations/{conv['id']}/messages")
    assert len(page.body["messages"]) == 1 and page.body["messages"][0]["seq"] == 1


async def test_client_ids_are_per_author(client: Client) -> None:
    a, b = await client.user(), await client.user()
    conv = await a.conversation(mode="partner", participant_usernames=[b.username], with_ai=False)
    ma = await a.send(conv["id"], "from a", client_id="x")
    mb = await b.send(conv["id"], "from b", client_id="x")
    assert ma.body["message"]["id"] != mb.body["message"]["id"]


async def test_pagination_by_seq(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation(with_ai=False)
    for i in range(1, 8):
        await u.send(conv["id"], f"m{i}")
    path = f"/conversations/{conv['id']}/messages"

    async def seqs(query: str) -> tuple[list[int], bool]:
        r = await u.call("GET", path + query)
        assert r.status == 200, r.body
        return [m["seq"] for m in r.body["messages"]], r.body["has_more"]

    assert await seqs("") == ([1, 2, 3, 4, 5, 6, 7], False)
    assert await seqs("?limit=3") == ([5, 6, 7], True)
    assert await seqs("?before=5&limit=3") == ([2, 3, 4], True)
    assert await seqs("?before=4&limit=3") == ([1, 2, 3], False)
    assert await seqs("?after=2&limit=3") == ([3, 4, 5], True)
    assert await seqs("?after=4&limit=3") == ([5, 6, 7], False)
    assert await seqs("?after=7") == ([], False)
    assert await seqs("?after=2&before=6") == ([3, 4, 5], False)
    assert await seqs("?after=0&limit=500") == ([1, 2, 3, 4, 5, 6, 7], False)
    for bad in ["?limit=0", "?limit=501", "?limit=x", "?after=-1", "?before=abc", "?after=1.5"]:
        r = await u.call("GET", path + bad)
        assert r.status == 422 and r.body["error"]["code"] == "invalid", bad


async def test_content_limits_and_bad_input_store_nothing(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation(with_ai=False)
    path = f"/conversations/{conv['id']}/messages"
    cases = [
        ({"content": ""}, 422), ({"content": "   "}, 422), ({"content": "x" * 16_001}, 422),
        ({"content": 5}, 422), ({"content": None}, 422), ({}, 422), ({"content": "a\x00b"}, 422),
        ({"content": "ok", "client_id": "c" * 65}, 422), ({"content": "ok", "client_id": 7}, 422),
        ({"content": "ok", "ai": "no"}, 422), ({"content": "ok", "model": 1}, 422),
        ({"content": "ok", "model": "nope:nope"}, 422),
    ]
    for body, status in cases:
        r = await u.call("POST", path, body)
        assert r.status == status, (body, r.body)
    for raw in [b"{", b"[1,2]", b"\"str\"", b"", b"\xff\xfe", b'{"content": "\\ud800"}',
                b'{"content": 1e999999}']:
        r = await u.call("POST", path, data=raw, headers={"Content-Type": "application/json"})
        assert r.status == 400 and r.body["error"]["code"] == "bad_request", (raw, r.body)
    r = await u.call("POST", path, data=b'{"content": "' + b"x" * 300_000 + b'"}')
    assert r.status == 413 and r.body["error"]["code"] == "too_large"
    page = await u.call("GET", path)
    assert page.body["messages"] == []
    ok = await u.send(conv["id"], "x" * 16_000)
    assert ok.status == 201 and ok.body["message"]["seq"] == 1


async def test_unicode_round_trips(client: Client) -> None:
    u = await client.user()
    conv = await u.conversation(with_ai=False)
    text = "emoji 👩‍👩‍👧 RTL مرحبا עברית combining é zero-width \u200b tab\t newline\n end"
    r = await u.send(conv["id"], text)
    assert r.body["message"]["content"] == text
    page = await u.call("GET", f"/conversations/{conv['id']}/messages")
    assert page.body["messages"][0]["content"] == text


async def test_unknown_routes_and_methods_use_the_error_shape(client: Client) -> None:
    u = await client.user()
    r = await u.call("GET", "/nope")
    assert r.status == 404 and r.body["error"]["code"] == "not_found"
    r = await u.call("DELETE", "/me")
    assert r.status == 405 and "error" in r.body


async def test_commit_order_equals_seq_order_under_concurrent_writers(database_url: str) -> None:
    """Readers never see seq N committed while an earlier seq is still missing."""
    store = await Store.connect(database_url, min_size=2, max_size=12)
    try:
        owner = await store.create_user("seqw_" + secrets.token_hex(4), "writer", "not-a-hash")
        assert owner is not None
        conv = await store.create_conversation(owner.id, "race", "solo", False, None, [])
        author = UserRecord(owner.id, owner.username, owner.display_name)
        done = asyncio.Event()
        violations: list[list[int]] = []

        async def reader() -> None:
            con = await asyncpg.connect(database_url)
            try:
                while not done.is_set():
                    seqs = await con.fetchval(
                        "SELECT coalesce(array_agg(seq ORDER BY seq), '{}') FROM messages WHERE conversation_id = $1",
                        conv.id)
                    if list(seqs) != list(range(1, len(seqs) + 1)):
                        violations.append(list(seqs))
            finally:
                await con.close()

        async def writer(w: int) -> None:
            for i in range(20):
                await store.messages.insert_user(conv.id, author, f"w{w} m{i}", None)

        readers = [asyncio.ensure_future(reader()) for _ in range(2)]
        await asyncio.gather(*(writer(w) for w in range(10)))
        done.set()
        await asyncio.gather(*readers)
        assert violations == []
        seqs = await store.db.fetchval(
            "SELECT array_agg(seq ORDER BY seq) FROM messages WHERE conversation_id = $1", conv.id)
        assert list(seqs) == list(range(1, 201))
    finally:
        await store.close()
