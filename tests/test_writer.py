"""Group commit on a real PostgreSQL: batches keep seq gap-free per conversation, refuse
non-participants item by item, and survive a resent client_id in the batch."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest

from server.app import SCHEMA
from server.errors import NotFound
from server.records import User
from server.store import Store
from server.writer import MessageWriter


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await Store.connect(database_url, min_size=1, max_size=4)
    await s.apply_schema(SCHEMA.read_text())
    yield s
    await s.close()


async def person(store: Store) -> User:
    u = await store.create_user("w_" + secrets.token_hex(4), "writer", "not-a-hash")
    assert u is not None
    return u


async def test_concurrent_sends_share_commits_and_keep_seq_order(store: Store) -> None:
    a, b = await person(store), await person(store)
    c1 = await store.create_conversation(a.id, "one", "group", False, None, [b.id])
    c2 = await store.create_conversation(b.id, "two", "solo", False, None, [])
    writer = MessageWriter(store.messages, max_batch=16)
    jobs = [(c1.id, a, f"a{i}") for i in range(20)] + [(c1.id, b, f"b{i}") for i in range(20)] + \
           [(c2.id, b, f"c{i}") for i in range(20)]
    results = await asyncio.gather(*(writer.insert(cid, who, text, None) for cid, who, text in jobs))
    by_conv: dict[int, list[int]] = {}
    for (cid, who, text), (msg, room) in zip(jobs, results, strict=True):
        assert msg.content == text and msg.author is not None and msg.author.id == who.id
        assert room is not None and room.id == cid
        by_conv.setdefault(cid, []).append(msg.seq)
    assert sorted(by_conv[c1.id]) == list(range(1, 41))
    assert sorted(by_conv[c2.id]) == list(range(1, 21))
    # one author's sends keep their order within a conversation
    a_seqs = [m.seq for (cid, who, _), (m, _) in zip(jobs, results, strict=True) if who.id == a.id]
    assert a_seqs == sorted(a_seqs)
    stored = await store.db.fetchval("SELECT last_seq FROM conversations WHERE id = $1", c1.id)
    assert stored == 40


async def test_a_stranger_in_a_batch_gets_not_found_and_the_rest_are_stored(store: Store) -> None:
    a, stranger = await person(store), await person(store)
    conv = await store.create_conversation(a.id, "mine", "solo", False, None, [])
    writer = MessageWriter(store.messages)
    outcome = await asyncio.gather(writer.insert(conv.id, a, "one", None), writer.insert(conv.id, stranger, "x", None),
                                   writer.insert(conv.id, a, "two", None), return_exceptions=True)
    assert isinstance(outcome[1], NotFound)
    assert [o[0].seq for o in (outcome[0], outcome[2])] == [1, 2]  # type: ignore[index]


async def test_a_resent_client_id_in_a_batch_returns_the_stored_message(store: Store) -> None:
    a = await person(store)
    conv = await store.create_conversation(a.id, "dup", "solo", False, None, [])
    first, _ = await store.messages.insert_user(conv.id, a, "original", "k1")
    writer = MessageWriter(store.messages)
    out = await asyncio.gather(writer.insert(conv.id, a, "new", "k2"), writer.insert(conv.id, a, "again", "k1"),
                               writer.insert(conv.id, a, "newer", None))
    assert out[1][0].id == first.id and out[1][1] is None  # the duplicate, as stored
    assert [out[0][0].seq, out[2][0].seq] == [2, 3]
    seqs = await store.db.fetchval("SELECT array_agg(seq ORDER BY seq) FROM messages WHERE conversation_id = $1",
                                     conv.id)
    assert list(seqs) == [1, 2, 3]


async def test_a_sender_cancelled_while_queued_keeps_its_place_and_its_message_is_stored(store: Store) -> None:
    a = await person(store)
    conv = await store.create_conversation(a.id, "cancel", "solo", False, None, [])
    writer = MessageWriter(store.messages)
    first = asyncio.ensure_future(writer.insert(conv.id, a, "one", None))  # written at once; the rest queue
    await asyncio.sleep(0)
    second = asyncio.ensure_future(writer.insert(conv.id, a, "two", None))
    third = asyncio.ensure_future(writer.insert(conv.id, a, "three", None))
    await asyncio.sleep(0)
    second.cancel()
    (m1, _), (m3, _) = await first, await third
    with pytest.raises(asyncio.CancelledError):
        await second
    rows = await store.db.fetch("SELECT seq, content FROM messages WHERE conversation_id = $1 ORDER BY seq", conv.id)
    assert [(r["seq"], r["content"]) for r in rows] == [(1, "one"), (2, "two"), (3, "three")]
    assert (m1.seq, m3.seq) == (1, 3)
