"""Two servers sharing one PostgreSQL and one Redis, and what they do while Redis is down.

The fan-out test runs when Redis answers at TEST_REDIS_URL (default
redis://127.0.0.1:6379/15); the others start a redis-server of their own (conftest's
`private_redis`). Each is skipped, saying so, on a machine without Redis.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.conftest import Client, PrivateRedis, redis_up, running_server

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def test_fan_out_crosses_servers_in_seq_order(database_url: str, http: Any) -> None:
    if not await redis_up(REDIS_URL):
        pytest.skip(f"no Redis at {REDIS_URL}")
    async with running_server(database_url, redis_url=REDIS_URL, node_id="node-a") as a, \
            running_server(database_url, redis_url=REDIS_URL, node_id="node-b") as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        alice, bob = await ca.user(), await ca.user()
        conv = await alice.conversation(mode="group", ai_answers="all", participant_usernames=[bob.username])
        cid = conv["id"]
        on_a = await alice.ws()
        on_b = await cb.ws(bob.token)  # bob is connected to the other server
        await on_a.subscribe(cid)
        await on_b.subscribe(cid)
        joined = await on_a.until("presence")
        assert joined["user"]["id"] == bob.id
        # Both servers store and publish at once; every subscriber sees one seq order.
        sends = [alice.send(cid, f"a{i}", ai=False) for i in range(10)]
        sends += [cb.call("POST", f"/conversations/{cid}/messages", bob.token, {"content": f"b{i}", "ai": False})
                  for i in range(10)]
        await asyncio.gather(*sends)
        for sock in (on_a, on_b):
            frames = await sock.collect({"message"}, lambda f: f["message"]["seq"] == 20)
            assert [f["message"]["seq"] for f in frames] == list(range(1, 21))
        # An AI turn run by server A streams to the subscriber on server B.
        r = await alice.send(cid, "hello from a")
        frames = await on_b.collect({"ai.start", "ai.delta", "ai.done"}, lambda f: f["type"] == "ai.done")
        assert frames[0]["reply_id"] == r.body["ai"]["reply_id"]
        assert "".join(f["text"] for f in frames if f["type"] == "ai.delta").endswith(": hello from a")
        await on_b.send({"type": "typing", "conversation_id": cid, "state": True})
        assert (await on_a.until("typing"))["user"]["id"] == bob.id
        await on_a.close()
        await on_b.close()


async def test_while_redis_is_down_each_server_serves_its_own_and_all_catch_up_when_it_is_back(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    async with running_server(database_url, redis_url=url, node_id="outage-a") as a, \
            running_server(database_url, redis_url=url, node_id="outage-b") as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        alice, bob = await ca.user(), await ca.user()
        conv = await alice.conversation(mode="group", ai_answers="all", participant_usernames=[bob.username])
        other = await alice.conversation(title="later", with_ai=False)
        cid = conv["id"]
        on_a, on_b = await alice.ws(), await cb.ws(bob.token)
        await on_a.subscribe(cid)
        await on_b.subscribe(cid)
        await alice.send(cid, "before", ai=False)
        for sock in (on_a, on_b):
            assert (await sock.until("message"))["message"]["content"] == "before"

        private_redis.stop()
        # Each server still delivers to its own subscribers: messages and a whole AI turn.
        r = await alice.send(cid, "during, from a")
        assert r.status == 201
        frames = await on_a.collect({"message", "ai.done"}, lambda f: f["type"] == "ai.done", timeout=5)
        assert frames[0]["message"]["content"] == "during, from a" and frames[-1]["type"] == "ai.done"
        r = await cb.call("POST", f"/conversations/{cid}/messages", bob.token, {"content": "during, from b",
                                                                                "ai": False})
        assert r.status == 201
        # B's own message: after what A stored meanwhile, which B's hub reads from the database
        # to keep seq order (a gap it cannot hear about from A while Redis is down).
        got = await on_b.collect({"message"}, lambda f: f["message"]["content"] == "during, from b", timeout=5)
        mine = got[-1]
        assert [f["message"]["seq"] for f in got] == list(range(2, mine["message"]["seq"] + 1))
        _, sub = await on_a.subscribe(other["id"])  # a conversation A was not listening to yet
        assert sub["type"] == "subscribed"

        await private_redis.start()
        # Back without a restart: a new message from A reaches B again...
        async with asyncio.timeout(15):
            while True:
                await alice.send(cid, "after", ai=False)
                try:
                    seen = await on_b.until("message", timeout=1)
                except TimeoutError:
                    continue
                if seen["message"]["content"] == "after":
                    break
        # ...and B's subscriber, resuming from the last seq it saw, misses nothing.
        last = mine["message"]["seq"]
        fresh = await cb.ws(bob.token)
        replay, sub = await fresh.subscribe(cid, after=0)
        seqs = [f["message"]["seq"] for f in replay]
        assert sub["recovered"] is True and seqs == list(range(1, sub["last_seq"] + 1)) and last in seqs
        for sock in (on_a, on_b, fresh):
            await sock.close()


async def test_ai_cancel_reaches_the_process_running_the_reply(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    async with running_server(database_url, redis_url=url, node_id="cancel-a", echo_delay=0.05) as a, \
            running_server(database_url, redis_url=url, node_id="cancel-b") as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        owner, member, stranger = await ca.user(), await ca.user(), await ca.user()
        conv = await owner.conversation(mode="group", ai_answers="all", participant_usernames=[member.username])
        cid = conv["id"]
        words = " ".join(f"w{i}" for i in range(200))
        r = await ca.call("POST", f"/conversations/{cid}/messages", owner.token, {"content": words})
        reply_id = r.body["ai"]["reply_id"]  # its turn runs on server A
        on_b = await cb.ws(owner.token)
        await on_b.subscribe(cid)
        await on_b.until("ai.delta")
        for who, code in ((stranger, "not_found"), (member, "forbidden")):
            sock = await cb.ws(who.token)
            await sock.send({"type": "ai.cancel", "reply_id": reply_id, "ref": "x"})
            assert (await sock.until("error", ref="x"))["code"] == code
            await sock.close()
        await on_b.send({"type": "ai.cancel", "reply_id": reply_id, "ref": "stop"})  # asked on B
        assert (await on_b.until("ack", ref="stop"))["reply_id"] == reply_id
        done = await on_b.until("ai.done", timeout=5)
        assert done["message"]["status"] == "cancelled" and done["message"]["cancelled_by"]["id"] == owner.id
        assert len(done["message"]["content"]) < len(words)
        await on_b.close()


async def test_a_late_subscriber_on_another_process_gets_the_text_so_far_and_then_exactly_the_rest(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    async with running_server(database_url, redis_url=url, node_id="snap-a", echo_delay=0.03) as a, \
            running_server(database_url, redis_url=url, node_id="snap-b") as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        u = await ca.user()
        conv = await u.conversation()
        on_a = await u.ws()
        await on_a.subscribe(conv["id"])
        words = " ".join(f"w{i}" for i in range(120))
        r = await u.send(conv["id"], words)  # its turn runs on A
        for _ in range(10):
            await on_a.until("ai.delta")
        late = await cb.ws(u.token)
        _, sub = await late.subscribe(conv["id"])
        live = [s for s in sub["streaming"] if s["reply_id"] == r.body["ai"]["reply_id"]]
        assert len(live) == 1 and live[0]["text"] and live[0]["model"] == "echo:echo"
        frames = await late.collect({"ai.delta", "ai.done"}, lambda f: f["type"] == "ai.done", timeout=10)
        final = frames[-1]["message"]["content"]
        assert live[0]["text"] + "".join(f["text"] for f in frames if f["type"] == "ai.delta") == final
        assert final.endswith(words)
        for sock in (on_a, late):
            await sock.close()


async def test_a_burst_published_faster_than_redis_answers_arrives_whole_and_in_order(
        private_redis: PrivateRedis) -> None:
    from server.broker import RedisBroker
    from server.events import Event

    got: list[tuple[int, int | None]] = []
    sender, receiver = RedisBroker(private_redis.url), RedisBroker(private_redis.url)
    await sender.start(lambda cid, ev: None)
    await receiver.start(lambda cid, ev: got.append((cid, ev.seq)))
    try:
        await receiver.subscribe(7)
        await receiver.subscribe(8)
        for seq in range(1, 2001):  # no await between them: they queue up behind the first round trip
            sender.publish(7 if seq % 3 else 8, Event(f"frame {seq}", seq=seq))
        async with asyncio.timeout(20):
            while len(got) < 2000:
                await asyncio.sleep(0.02)
        assert [seq for cid, seq in got if cid == 7] == [s for s in range(1, 2001) if s % 3]
        assert [seq for cid, seq in got if cid == 8] == [s for s in range(1, 2001) if not s % 3]
    finally:
        await sender.close()
        await receiver.close()
