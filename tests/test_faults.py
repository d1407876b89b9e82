"""Faults with real parts: a private PostgreSQL stopped (fast and immediate), restarted and
frozen under a live server; a reader that never reads; revoked tokens; error texts that
must name no internal address. Each test asserts that every caller is answered in time
with the contract's code, every turn ends for its subscribers, and nothing acknowledged
is lost or stored twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from server.database import Database
from server.errors import Unavailable
from server.runner import EmbeddedPostgres
from server.settings import ProviderConfig
from tests.conftest import Client, fresh_database, running_server
from tests.fakes import FakeOpenAI, closed_port

DEADLINE = 1.0  # the servers' database deadline in these tests


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this module's own, to stop, restart and freeze."""
    pg = EmbeddedPostgres(Path(tmp_path_factory.mktemp("faults")))
    pg.start()
    try:
        yield pg
    finally:
        pg.thaw()
        pg.stop("immediate")


@pytest.fixture
async def db(cluster: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh database on the cluster, which is running (and not frozen) before and after."""
    url = await fresh_database(cluster.start())
    yield url
    cluster.thaw()
    cluster.start()


async def answered_within(seconds: float, call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        result = await call
    return result, time.monotonic() - started


async def test_a_frozen_database_costs_callers_the_deadline_and_an_unavailable_never_a_hang(
        db: str, http: Any, cluster: EmbeddedPostgres) -> None:
    async with running_server(db, db_timeout=DEADLINE) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        conv = await u.conversation(with_ai=False)
        sock = await u.ws()
        cluster.freeze()
        try:
            # REST, the socket's send, and readiness: each answered `unavailable` within ~3 deadlines.
            r, took = await answered_within(4 * DEADLINE + 2, u.send(conv["id"], "frozen", client_id="f1"))
            assert r.status == 503 and r.body["error"]["code"] == "unavailable", r.body
            ready, _ = await answered_within(4 * DEADLINE + 2, c.call("GET", "/readyz"))
            assert ready.status == 503
            await sock.send({"type": "message.send", "conversation_id": conv["id"], "content": "ws frozen",
                             "client_id": "f2", "ref": "f2"})
            err, _ = await answered_within(4 * DEADLINE + 2, sock.until("error", ref="f2"))
            assert err["code"] == "unavailable"
            # A new socket cannot have its token checked: told so, and closed 1013 (try again later).
            raw = await websockets.connect(srv.ws_url, additional_headers={"Authorization": f"Bearer {u.token}"})
            frame = await asyncio.wait_for(raw.recv(), 4 * DEADLINE + 2)
            assert '"unavailable"' in frame
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(raw.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        finally:
            cluster.thaw()
        # Back: the resends with the same client_ids are stored once each, whatever the frozen
        # statements did meanwhile.
        for _ in range(50):
            if (await c.call("GET", "/readyz")).status == 200:
                break
            await asyncio.sleep(0.2)
        for cid_ in ("f1", "f2"):
            again = await u.send(conv["id"], "resend", client_id=cid_)
            assert again.status == 201
        page = (await u.call("GET", f"/conversations/{conv['id']}/messages")).body["messages"]
        assert sorted(m["client_id"] for m in page) == ["f1", "f2"]
        assert [m["seq"] for m in page] == [1, 2]
        await sock.close()


async def test_a_pool_busy_past_the_deadline_makes_callers_wait_in_line_while_the_database_answers(
        database_url: str) -> None:
    database = await Database.connect(database_url, min_size=2, max_size=2, deadline=0.5)
    try:
        # 10 statements of 0.2 s on 2 connections: the last ones wait ~0.8 s for a connection,
        # past the 0.5 s deadline, while the others keep completing.
        results = await asyncio.gather(*(database.fetchval("SELECT $1::int FROM pg_sleep(0.2)", i)
                                         for i in range(10)))
        assert results == list(range(10))
        assert await database.fetchval("SELECT 1") == 1  # every connection came back to the pool
    finally:
        await database.close()


async def test_a_pool_whose_statements_all_hang_answers_unavailable_within_two_deadlines(
        db: str, cluster: EmbeddedPostgres) -> None:
    database = await Database.connect(db, min_size=2, max_size=2, deadline=0.5)
    try:
        await database.fetchval("SELECT 1")
        cluster.freeze()
        started = time.monotonic()
        results = await asyncio.gather(*(database.fetchval("SELECT 1") for _ in range(6)), return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results), results
        assert time.monotonic() - started < 4 * 0.5 + 1
    finally:
        cluster.thaw()
        await database.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_reply_streaming_when_the_database_stops_ends_and_is_stored_once_it_is_back(
        db: str, http: Any, cluster: EmbeddedPostgres, mode: str) -> None:
    async with FakeOpenAI() as oa:
        oa.tokens = [f"t{i} " for i in range(40)]
        oa.delay = 0.05
        cfg = ProviderConfig("openai", "openai", "OpenAI", base_url=oa.base_url, models=("gpt-a",))
        async with running_server(db, providers=(cfg,), default_model="openai:gpt-a", db_timeout=DEADLINE) as srv:
            c = Client(http, srv.base_url, srv.ws_url)
            u = await c.user()
            conv = await u.conversation()
            sock = await u.ws()
            await sock.subscribe(conv["id"])
            r = await u.send(conv["id"], "talk for a while")
            reply_id = r.body["ai"]["reply_id"]
            await sock.until("ai.delta")
            cluster.stop(mode)
            frames, _ = await answered_within(10, sock.collect({"ai.delta", "ai.done", "ai.error"},
                                                                lambda f: f["type"] in ("ai.done", "ai.error")))
            end = frames[-1]
            assert end["type"] == "ai.error" and end["code"] == "unavailable" and end["reply_id"] == reply_id
            text = "".join(t for t in oa.tokens)
            assert end["message_obj"]["content"] == text and end["message_obj"]["status"] == "error"
            # A late subscriber is not told it is still streaming.
            assert all(live["reply_id"] != reply_id for turn in [srv.node.turns.streaming(conv["id"])]
                       for live in turn)
            cluster.start()
            async with asyncio.timeout(20):
                while True:
                    page = await u.call("GET", f"/conversations/{conv['id']}/messages")
                    if page.status == 200:
                        stored = [m for m in page.body["messages"] if m["role"] == "assistant"]
                        if stored and stored[0]["status"] == "error":
                            break
                    await asyncio.sleep(0.3)
            assert stored[0]["content"] == text
            await sock.close()


async def test_a_socket_opened_while_the_database_is_down_gets_unavailable_and_1013(
        db: str, http: Any, cluster: EmbeddedPostgres) -> None:
    async with running_server(db, db_timeout=DEADLINE) as srv:
        u = await Client(http, srv.base_url, srv.ws_url).user()
        cluster.stop("fast")
        raw = await websockets.connect(srv.ws_url + f"?token={u.token}")
        frame, _ = await answered_within(4 * DEADLINE + 2, raw.recv())
        assert '"code":"unavailable"' in frame
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(raw.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_logout_closes_that_tokens_sockets_at_once_and_other_revocations_within_the_interval(
        database_url: str, http: Any) -> None:
    async with running_server(database_url, ws_token_check_interval=0.3) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        other = await c.call("POST", "/auth/token", json={"username": u.username, "password": "correct horse"})
        second_token = other.body["token"]
        first, second = await u.ws(), await c.ws(second_token)
        assert (await u.call("POST", "/auth/logout")).status == 204
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(first.conn.recv(), 2)
        assert closed.value.rcvd.code == 4401
        await second.send({"type": "ping", "ref": 1})
        assert (await second.until("pong"))["ref"] == 1  # another token of the same user stays
        # Revoked by another process (here: straight in the database): closed on the next check.
        await srv.node.store.db.execute("UPDATE auth_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
                                        " AND user_id = $1", u.id)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(second.conn.recv(), 3)
        assert closed.value.rcvd.code == 4401


async def test_rate_limited_frames_are_answered_with_their_ref(database_url: str, http: Any) -> None:
    async with running_server(database_url, ws_rate_per_second=1, ws_rate_burst=5, ws_rate_strikes=100) as srv:
        u = await Client(http, srv.base_url, srv.ws_url).user()
        sock = await u.ws()
        for i in range(20):
            await sock.send({"type": "ping", "ref": f"p{i}"})
        answers = [await sock.recv() for _ in range(20)]
        limited = [a for a in answers if a["type"] == "error"]
        assert limited and all(a["code"] == "rate_limited" and a["retry_after"] > 0 for a in limited)
        assert sorted(a["ref"] for a in answers) == sorted(f"p{i}" for i in range(20))
        await sock.close()


async def test_an_idle_http_connection_is_kept_for_http_keep_alive_then_closed_by_the_server(
        database_url: str) -> None:
    """A balancer in front reuses idle connections: the server must not close them sooner than it is told."""
    async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
        return head.split(b"\r\n")[0]

    async with running_server(database_url, http_keep_alive=2.0) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.settings.port)
        assert await get(reader, writer) == b"HTTP/1.1 200 OK"
        await asyncio.sleep(0.5)
        assert await get(reader, writer) == b"HTTP/1.1 200 OK"  # the same connection, still open
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server, idle
        assert 1.2 < time.monotonic() - started < 6.0
        writer.close()


async def test_node_addresses_are_for_admins_only_and_never_show_a_password(postgres_url: str, http: Any) -> None:
    dead = f"http://bob:hunter2@127.0.0.1:{closed_port()}/v1"
    async with running_server(await fresh_database(postgres_url)) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        admin, plain = await c.user("admin"), await c.user("plain")
        assert admin.info["is_admin"]
        assert (await admin.call("POST", "/ai/nodes", {"name": "Box", "kind": "openai", "base_url": dead})).status == 201
        seen_by_admin = (await admin.call("GET", "/ai/nodes")).body["nodes"]
        seen_by_user = (await plain.call("GET", "/ai/nodes")).body["nodes"]
        assert seen_by_admin[0]["base_url"].startswith("http://bob:***@127.0.0.1:")
        assert "hunter2" not in str(seen_by_admin)
        assert [n["name"] for n in seen_by_user] == ["Box"] and "base_url" not in seen_by_user[0]


async def test_errors_from_an_unreachable_provider_name_no_address(database_url: str, http: Any) -> None:
    port = closed_port()
    cfg = ProviderConfig("openai", "openai", "OpenAI", base_url=f"http://127.0.0.1:{port}/v1", models=("a",))
    async with running_server(database_url, providers=(cfg,), default_model="openai:a") as srv:
        u = await Client(http, srv.base_url, srv.ws_url).user()
        conv = await u.conversation()
        sock = await u.ws()
        await sock.subscribe(conv["id"])
        await u.send(conv["id"], "anyone there?")
        end = await sock.until("ai.error", timeout=10)
        assert end["code"] == "unavailable" and "could not connect" in end["message"]
        assert "127.0.0.1" not in end["message"] and str(port) not in end["message"]
        await sock.close()


async def test_a_reply_whose_server_died_is_ended_by_a_survivor_within_three_heartbeats(
        database_url: str, http: Any, tmp_path: Path) -> None:
    from tests.test_runner import Proc

    env = {"CHAT_ECHO_DELAY": "0.1", "CHAT_HEARTBEAT_INTERVAL": "0.3", "CHAT_REPLY_CHECKPOINT_INTERVAL": "0.2"}
    doomed = Proc(tmp_path / "unused", tmp_path, env, args=("--database-url", database_url, "--log-level", "warning"))
    try:
        doomed.wait_for("Chat open at")
        async with running_server(database_url, heartbeat_interval=0.3) as survivor:
            on_doomed = Client(http, f"http://127.0.0.1:{doomed.port}", f"ws://127.0.0.1:{doomed.port}/ws")
            u = await on_doomed.user()
            conv = await u.conversation()
            watcher = await Client(http, survivor.base_url, survivor.ws_url).ws(u.token)
            await watcher.subscribe(conv["id"])
            sock = await on_doomed.ws(u.token)
            await sock.subscribe(conv["id"])
            words = " ".join(f"w{i}" for i in range(100))
            await u.send(conv["id"], words)
            await sock.until("ai.delta", timeout=10)
            await asyncio.sleep(0.6)  # past a checkpoint or two
            os.kill(doomed.popen.pid, signal.SIGKILL)
            started = time.monotonic()
            done = await watcher.until("ai.done", timeout=10)
            # three heartbeats and the survivor's next round (a second or two), well before the default 15 s
            assert time.monotonic() - started < 3 * 0.3 + 4
            reply = done["message"]
            assert reply["status"] == "interrupted" and reply["content"] and words.startswith(reply["content"])
            await watcher.close()
    finally:
        if doomed.popen.poll() is None:
            doomed.popen.kill()
