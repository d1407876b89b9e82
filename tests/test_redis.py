"""Two server processes' worth of hubs sharing one PostgreSQL and one Redis.

Runs when Redis answers at TEST_REDIS_URL (default redis://127.0.0.1:6379/15); skipped
on a machine without Redis.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.conftest import Client, running_server

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def redis_up() -> bool:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def test_fan_out_crosses_servers_in_seq_order(database_url: str, http: Any) -> None:
    if not await redis_up():
        pytest.skip(f"no Redis at {REDIS_URL}")
    async with running_server(database_url, redis_url=REDIS_URL, node_id="node-a") as a, \
            running_server(database_url, redis_url=REDIS_URL, node_id="node-b") as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        alice, bob = await ca.user(), await ca.user()
        conv = await alice.conversation(mode="group", participant_usernames=[bob.username])
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
