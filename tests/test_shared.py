"""What several server processes share through Redis besides events: presence, the per-user
connection cap, the send and auth rate limits; and how each falls back to its own process
while Redis is down. Every test has a private redis-server (skipped, loudly, without one)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets

from tests.conftest import Client, PrivateRedis, Socket, running_server

FAST = 0.5  # presence_refresh_interval where expiry is tested: entries expire after 1.5 s


def names(users: list[dict[str, Any]]) -> list[str]:
    return sorted(u["username"] for u in users)


async def presence_frames(sock: Socket, seconds: float = 0.4) -> list[tuple[str, str]]:
    return [(f["user"]["username"], f["state"]) for f in await sock.quiet(seconds) if f["type"] == "presence"]


async def presence_news(sock: Socket, count: int) -> list[tuple[str, str]]:
    """`count` presence frames however long they take to cross processes, then any more that
    come within a quiet while (a duplicate would)."""
    news = []
    for _ in range(count):
        f = await sock.until("presence", timeout=10)
        news.append((f["user"]["username"], f["state"]))
    return news + await presence_frames(sock)


async def refused(client: Client, token: str) -> int:
    """Open a socket expected to be refused as over the cap: the close code after its error frame."""
    async with websockets.connect(client.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as conn:
        frame = orjson.loads(await asyncio.wait_for(conn.recv(), 5))
        assert frame["type"] == "error" and frame["code"] == "rate_limited", frame
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv(), 5)
        return closed.value.rcvd.code


async def test_clients_on_three_processes_see_one_presence_list_and_each_join_and_leave_once(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    async with running_server(database_url, redis_url=url) as a, running_server(database_url, redis_url=url) as b, \
            running_server(database_url, redis_url=url) as c:
        ca, cb, cc = (Client(http, s.base_url, s.ws_url) for s in (a, b, c))
        ann, bob, cat = await ca.user("ann"), await ca.user("bob"), await ca.user("cat")
        conv = await ann.conversation(mode="group", participant_usernames=[bob.username, cat.username])
        cid = conv["id"]
        on_a = await ca.ws(ann.token)
        _, sub = await on_a.subscribe(cid)
        assert names(sub["present"]) == [ann.username]
        on_b = await cb.ws(bob.token)
        _, sub = await on_b.subscribe(cid)
        assert names(sub["present"]) == sorted([ann.username, bob.username])
        on_c = await cc.ws(cat.token)
        _, sub = await on_c.subscribe(cid)
        assert names(sub["present"]) == sorted([ann.username, bob.username, cat.username])
        assert await presence_news(on_a, 2) == [(bob.username, "joined"), (cat.username, "joined")]
        assert await presence_news(on_b, 1) == [(cat.username, "joined")]

        # Bob's second socket, on another process: no news; his first one closing: none either.
        bob_on_c = await cc.ws(bob.token)
        await bob_on_c.subscribe(cid)
        await on_b.close()
        assert await presence_frames(on_a) == [] and await presence_frames(on_c, 0.1) == []
        late = await cb.ws(cat.token)
        _, sub = await late.subscribe(cid)  # on the process bob just left: he is still present
        assert names(sub["present"]) == sorted([ann.username, bob.username, cat.username])
        # His last socket anywhere closing is news, once, on every process.
        await bob_on_c.close()
        assert await presence_news(on_a, 1) == [(bob.username, "left")]
        assert await presence_news(on_c, 1) == [(bob.username, "left")]
        _, sub = await (await ca.ws(ann.token)).subscribe(cid)
        assert names(sub["present"]) == sorted([ann.username, cat.username])
        for sock in (on_a, on_c, late):
            await sock.close()


async def test_a_killed_processs_users_leave_presence_and_free_their_connections_within_four_intervals(
        database_url: str, http: Any, private_redis: PrivateRedis, tmp_path: Path) -> None:
    from tests.test_runner import Proc

    env = {"CHAT_PRESENCE_REFRESH_INTERVAL": str(FAST), "CHAT_WS_MAX_CONNECTIONS_PER_USER": "1"}
    doomed = Proc(tmp_path / "unused", tmp_path, env, args=("--database-url", database_url, "--redis-url",
                                                            private_redis.url, "--log-level", "warning"))
    try:
        doomed.wait_for("Chat open at")
        async with running_server(database_url, redis_url=private_redis.url, presence_refresh_interval=FAST,
                                  ws_max_connections_per_user=1) as survivor:
            on_doomed = Client(http, f"http://127.0.0.1:{doomed.port}", f"ws://127.0.0.1:{doomed.port}/ws")
            on_survivor = Client(http, survivor.base_url, survivor.ws_url)
            watcher, gone = await on_survivor.user("watcher"), await on_survivor.user("gone")
            conv = await watcher.conversation(mode="group", participant_usernames=[gone.username])
            cid = conv["id"]
            watching = await watcher.ws()
            await watching.subscribe(cid)
            sock = await on_doomed.ws(gone.token)
            _, sub = await sock.subscribe(cid)
            assert names(sub["present"]) == sorted([watcher.username, gone.username])
            assert (await watching.until("presence"))["state"] == "joined"
            # Its one allowed socket is on the doomed process: the survivor refuses a second.
            assert await refused(on_survivor, gone.token) == 1008

            os.kill(doomed.popen.pid, signal.SIGKILL)
            started = time.monotonic()
            left = await watching.until("presence", timeout=10)
            # Expired three intervals after its last refresh at most, swept at the next round.
            assert left["state"] == "left" and left["user"]["id"] == gone.id
            assert time.monotonic() - started < 4 * FAST + 2.0
            await watching.send({"type": "unsubscribe", "conversation_id": cid, "ref": "u"})
            await watching.until("unsubscribed", ref="u")
            _, sub = await watching.subscribe(cid)  # (its one allowed socket: subscribe afresh)
            assert names(sub["present"]) == [watcher.username]
            back = await on_survivor.ws(gone.token)  # the dead process's socket no longer counts
            await back.send({"type": "ping", "ref": 1})
            assert (await back.until("pong"))["ref"] == 1
            for s in (watching, back):
                await s.close()
    finally:
        if doomed.popen.poll() is None:
            doomed.popen.kill()


async def test_the_connection_cap_counts_a_users_sockets_on_every_process(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    async with running_server(database_url, redis_url=url, ws_max_connections_per_user=3) as a, \
            running_server(database_url, redis_url=url, ws_max_connections_per_user=3) as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        u = await ca.user()
        first, second = await ca.ws(u.token), await ca.ws(u.token)
        third = await cb.ws(u.token)
        assert await refused(cb, u.token) == 1008
        assert await refused(ca, u.token) == 1008
        await first.close()
        again = await cb.ws_when_free(u.token)  # once the close has reached Redis's count
        await again.send({"type": "ping", "ref": 1})
        assert (await again.until("pong"))["ref"] == 1
        other = await ca.user()  # the cap is per user
        await (await cb.ws(other.token)).close()
        for sock in (second, third, again):
            await sock.close()


async def test_the_send_and_auth_rate_limits_hold_across_processes(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url
    limits = dict(send_rate_per_second=0.05, send_rate_burst=10, auth_rate_per_second=0.05, auth_rate_burst=6)
    async with running_server(database_url, redis_url=url, **limits) as a, \
            running_server(database_url, redis_url=url, **limits) as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        u = await ca.user()
        conv = await u.conversation(with_ai=False)
        cid = conv["id"]
        # One burst of 10 sends for the user, whichever process and transport they go through.
        socks = [await ca.ws(u.token), await cb.ws(u.token)]
        statuses = []
        for i in range(6):
            sock = socks[i % 2]
            await sock.send({"type": "message.send", "conversation_id": cid, "content": f"s{i}", "ref": i})
            statuses.append(201 if await sock.until("message.ack", ref=i) else 0)
        for i in range(6, 14):
            r = await (ca if i % 2 else cb).call("POST", f"/conversations/{cid}/messages", u.token,
                                                {"content": f"r{i}"})
            statuses.append(r.status)
            if r.status == 429:
                assert r.body["error"]["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        assert statuses == [201] * 10 + [429] * 4
        await socks[1].send({"type": "message.send", "conversation_id": cid, "content": "over", "ref": "x"})
        assert (await socks[1].until("error", ref="x"))["code"] == "rate_limited"
        # Registrations from one address: one budget of 6 over both processes (one was spent above).
        codes = [(await (ca if i % 2 else cb).call("POST", "/auth/register",
                                                   json={"username": f"r{i}_{cid}", "password": "correct horse"}
                                                   )).status for i in range(8)]
        assert codes == [201] * 5 + [429] * 3
        for sock in socks:
            await sock.close()


async def test_with_redis_stopped_presence_and_limits_fall_back_to_each_process_and_service_goes_on(
        database_url: str, http: Any, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    url = private_redis.url
    settings = dict(redis_url=url, presence_refresh_interval=FAST, ws_max_connections_per_user=2,
                    send_rate_per_second=0.05, send_rate_burst=5)
    async with running_server(database_url, **settings) as a, running_server(database_url, **settings) as b:
        ca, cb = Client(http, a.base_url, a.ws_url), Client(http, b.base_url, b.ws_url)
        ann, bob = await ca.user("ann"), await ca.user("bob")
        conv = await ann.conversation(mode="group", with_ai=False, participant_usernames=[bob.username])
        cid = conv["id"]
        on_b = await cb.ws(bob.token)
        await on_b.subscribe(cid)

        caplog.set_level(logging.WARNING, logger="chat.shared")
        private_redis.stop()
        # Presence: this process's own subscribers, and news of them to this process's room.
        on_a = await ca.ws(ann.token)
        _, sub = await on_a.subscribe(cid)
        assert names(sub["present"]) == [ann.username]
        bob_on_a = await ca.ws(bob.token)
        await bob_on_a.subscribe(cid)
        assert await presence_news(on_a, 1) == [(bob.username, "joined")]
        assert "per process until it is back" in caplog.text
        # Limits: each process's own. Sends: a burst of 5 on A (and service goes on).
        codes = [(await ann.send(cid, f"m{i}")).status for i in range(7)]
        assert codes == [201] * 5 + [429] * 2
        assert (await cb.call("POST", f"/conversations/{cid}/messages", ann.token, {"content": "b"})).status == 201
        extra = await ca.ws(bob.token)  # bob's second socket: A counts only its own
        assert await refused(ca, bob.token) == 1008
        assert (await ca.call("POST", "/auth/register", json={"username": f"x_{cid}",
                                                               "password": "correct horse"})).status == 201

        await private_redis.start()
        # Within a refresh interval or two the processes share again: B's new subscriber sees A's users.
        async with asyncio.timeout(10):
            while True:
                await asyncio.sleep(FAST)
                probe = await cb.ws(ann.token)
                _, sub = await probe.subscribe(cid)
                await probe.close()
                if names(sub["present"]) == sorted([ann.username, bob.username]):
                    break
        assert "shared again" in caplog.text
        for sock in (on_a, on_b, bob_on_a, extra):
            await sock.close()


async def test_a_process_shutting_down_makes_its_users_leave_at_once_not_after_the_expiry(
        database_url: str, http: Any, private_redis: PrivateRedis) -> None:
    url = private_redis.url  # the default refresh interval: entries would expire after 15 s
    async with running_server(database_url, redis_url=url, ws_max_connections_per_user=1) as a:
        ca = Client(http, a.base_url, a.ws_url)
        watcher, leaving = await ca.user("watcher"), await ca.user("leaving")
        conv = await watcher.conversation(mode="group", participant_usernames=[leaving.username])
        watching = await watcher.ws()
        await watching.subscribe(conv["id"])
        async with running_server(database_url, redis_url=url, ws_max_connections_per_user=1) as b:
            sock = await Client(http, b.base_url, b.ws_url).ws(leaving.token)
            await sock.subscribe(conv["id"])
            assert (await watching.until("presence"))["state"] == "joined"
            started = time.monotonic()  # B shuts down now
        left = await watching.until("presence", timeout=5)
        assert left["state"] == "left" and time.monotonic() - started < 5
        back = await ca.ws_when_free(leaving.token)  # B's socket no longer counts against the cap of 1
        await back.close()
        await watching.close()


def test_a_slow_redis_call_falls_back_alone_and_only_a_lost_connection_makes_every_feature_local() -> None:
    from server.shared import Shared

    shared = Shared(redis=None)
    shared.failed("the send rate limit", TimeoutError())
    assert not shared.down  # presence, caps and limits keep asking Redis
    shared.failed("presence", ConnectionError("connection refused"))
    assert shared.down
    shared.ok()
    assert not shared.down
