"""The /ws endpoint over real sockets: auth, fan-out order, resume, idempotency, typing, presence."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import Client, Running, Socket, running_server


async def test_auth_by_header_query_and_first_frame(client: Client) -> None:
    u = await client.user()
    s = await u.ws()
    await s.close()
    async with websockets.connect(f"{client.ws_url}?token={u.token}") as ws:
        hello = orjson.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["user"]["id"] == u.id and hello["server_time"].endswith("Z")
    async with websockets.connect(client.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": u.token}).decode())
        assert orjson.loads(await ws.recv())["type"] == "hello"


@pytest.mark.parametrize("first", [{"type": "auth", "token": "bogus"}, {"type": "ping"}, "not json"])
async def test_failed_auth_closes_4401(client: Client, first: object) -> None:
    async with websockets.connect(client.ws_url) as ws:
        await ws.send(first if isinstance(first, str) else orjson.dumps(first).decode())
        err = orjson.loads(await ws.recv())
        assert err["type"] == "error" and err["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4401


async def test_bad_header_token_closes_4401(client: Client) -> None:
    async with websockets.connect(client.ws_url, additional_headers={"Authorization": "Bearer nope"}) as ws:
        assert orjson.loads(await ws.recv())["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4401


async def test_no_auth_frame_within_timeout_closes_4401(database_url: str, http) -> None:
    async with running_server(database_url, ws_auth_timeout=0.3) as srv:
        async with websockets.connect(srv.ws_url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 3)
            assert closed.value.rcvd.code == 4401


async def group(client: Client, n: int) -> tuple[list, dict]:
    users = [await client.user(f"g{i}") for i in range(n)]
    conv = await users[0].conversation(mode="group", with_ai=False,
                                       participant_usernames=[u.username for u in users[1:]])
    return users, conv


async def test_fan_out_reaches_every_member_in_seq_order_without_duplicates(client: Client) -> None:
    users, conv = await group(client, 5)
    cid = conv["id"]
    socks = [await u.ws() for u in users]
    for s in socks:
        await s.subscribe(cid)

    async def sender(s: Socket, who: int) -> None:
        for i in range(15):
            await s.send({"type": "message.send", "conversation_id": cid, "content": f"{who}:{i}", "ref": i})

    await asyncio.gather(*(sender(socks[i], i) for i in range(3)))
    for n, s in enumerate(socks):
        got = await s.collect({"message", "message.ack"}, lambda f: f["type"] == "message"
                              and f["message"]["seq"] == 45)
        got += [f for f in await s.quiet(0.3) if f["type"] == "message.ack"]
        frames = [f for f in got if f["type"] == "message"]
        assert [f["message"]["seq"] for f in frames] == list(range(1, 46))
        # Sends are stored while the next frames are read, yet each sender's order holds.
        for who in range(3):
            mine = [f["message"]["content"] for f in frames if f["message"]["content"].startswith(f"{who}:")]
            assert mine == [f"{who}:{i}" for i in range(15)]
        acks = [f["ref"] for f in got if f["type"] == "message.ack"]
        assert acks == (list(range(15)) if n < 3 else [])
    for s in socks:
        await s.close()


async def test_sockets_on_uvicorn_get_fan_out_framed_once_and_written_straight_to_the_transport(
        server: Running, client: Client) -> None:
    """uvicorn's websockets-sansio protocol still has what connection.Direct relies on: if an
    upgrade took that away, every frame would silently fall back to per-socket framing."""
    users, conv = await group(client, 2)
    socks = [await u.ws() for u in users]
    for s in socks:
        await s.subscribe(conv["id"])
    await socks[0].send({"type": "message.send", "conversation_id": conv["id"], "content": "framed once", "ref": 1})
    for s in socks:
        assert (await s.until("message"))["message"]["content"] == "framed once"
    mine = [c for c in server.node.hub.connections() if c.user.id in {u.id for u in users}]
    assert len(mine) == 2 and all(c.direct for c in mine)
    for s in socks:
        await s.close()


async def test_ack_and_fan_out_carry_the_same_stored_message(client: Client) -> None:
    users, conv = await group(client, 2)
    a, b = await users[0].ws(), await users[1].ws()
    await b.subscribe(conv["id"])
    await a.send({"type": "message.send", "conversation_id": conv["id"], "content": "hi", "client_id": "k1",
                  "ref": 42})
    ack = await a.until("message.ack")
    assert ack["ref"] == 42 and ack["client_id"] == "k1" and ack["ai"] is None
    seen = await b.until("message")
    assert seen["message"] == ack["message"]
    assert ack["message"]["seq"] == 1
    await a.close()
    await b.close()


async def test_other_conversations_receive_nothing(client: Client) -> None:
    users, conv = await group(client, 2)
    outsider = await client.user()
    other = await outsider.conversation(with_ai=False)
    o = await outsider.ws()
    await o.subscribe(other["id"])
    await users[0].send(conv["id"], "private")
    assert await o.quiet(0.3) == []
    await o.close()


async def test_subscribe_to_foreign_or_missing_conversation_is_not_found(client: Client) -> None:
    users, conv = await group(client, 1)
    stranger = await client.user()
    s = await stranger.ws()
    await s.send({"type": "subscribe", "conversation_id": conv["id"], "ref": "x"})
    err = await s.recv()
    assert (err["type"], err["code"], err["ref"]) == ("error", "not_found", "x")
    await s.send({"type": "subscribe", "conversation_id": 10**12, "ref": "y"})
    assert (await s.recv())["code"] == "not_found"
    await users[0].send(conv["id"], "secret")
    assert await s.quiet(0.2) == []
    await s.close()


async def test_resume_with_after_replays_exactly_the_missed_messages(client: Client) -> None:
    users, conv = await group(client, 2)
    cid = conv["id"]
    for i in range(3):
        await users[0].send(cid, f"before {i}")
    s = await users[1].ws()
    _, sub = await s.subscribe(cid, after=3)
    assert sub["last_seq"] == 3 and sub["recovered"] is True
    await s.close()
    for i in range(4):
        await users[0].send(cid, f"missed {i}")
    s = await users[1].ws()
    replay, sub = await s.subscribe(cid, after=3)
    assert [f["message"]["seq"] for f in replay] == [4, 5, 6, 7]
    assert [f["message"]["content"] for f in replay] == [f"missed {i}" for i in range(4)]
    assert sub["recovered"] is True and sub["last_seq"] == 7
    await users[0].send(cid, "live")
    live = await s.until("message")
    assert live["message"]["seq"] == 8
    assert await s.quiet(0.2) == []
    await s.close()


async def test_replay_beyond_the_cap_sends_nothing_and_says_not_recovered(database_url: str, http) -> None:
    async with running_server(database_url, replay_cap=3) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        conv = await u.conversation(with_ai=False)
        for i in range(5):
            await u.send(conv["id"], f"m{i}")
        s = await u.ws()
        replay, sub = await s.subscribe(conv["id"], after=1)
        assert replay == [] and sub["recovered"] is False and sub["last_seq"] == 5
        replay, sub = await s.subscribe(conv["id"], after=2)
        assert [f["message"]["seq"] for f in replay] == [3, 4, 5] and sub["recovered"] is True
        await s.close()


async def test_message_stored_during_the_replay_arrives_once_after_it(client: Client, server: Running,
                                                                      database_url: str) -> None:
    users, conv = await group(client, 2)
    cid = conv["id"]
    await users[0].send(cid, "m1")
    reader, writer = await users[1].ws(), await users[0].ws()
    blocker = await asyncpg.connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    # Readers and writers of `messages` now wait: the send's insert and the replay's query queue up.
    await blocker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
    await writer.send({"type": "message.send", "conversation_id": cid, "content": "during", "ref": "w"})
    await asyncio.sleep(0.2)
    await reader.send({"type": "subscribe", "conversation_id": cid, "after": 0, "ref": "r"})
    await asyncio.sleep(0.2)
    assert await writer.quiet(0.1) == []  # the send is really blocked
    await tx.rollback()
    await blocker.close()
    frames = await reader.collect({"message", "subscribed"}, lambda f: f["type"] == "message"
                                  and f["message"]["seq"] == 2)
    seqs = [f["message"]["seq"] for f in frames if f["type"] == "message"]
    assert seqs == [1, 2]
    assert any(f["type"] == "subscribed" for f in frames)
    assert [f for f in await reader.quiet(0.3) if f["type"] == "message"] == []
    await reader.close()
    await writer.close()


async def test_idempotent_resend_over_a_reconnect(client: Client) -> None:
    users, conv = await group(client, 2)
    cid = conv["id"]
    watcher = await users[1].ws()
    await watcher.subscribe(cid)
    s = await users[0].ws()
    await s.send({"type": "message.send", "conversation_id": cid, "content": "flaky", "client_id": "net-1"})
    await s.close()  # gone before reading the ack
    s = await users[0].ws()
    await s.send({"type": "message.send", "conversation_id": cid, "content": "flaky", "client_id": "net-1",
                  "ref": 2})
    ack = await s.until("message.ack")
    assert ack["duplicate"] is True and ack["message"]["seq"] == 1
    first = await watcher.until("message")
    assert first["message"]["id"] == ack["message"]["id"]
    assert await watcher.quiet(0.3) == []
    await s.close()
    await watcher.close()


async def test_rest_sends_are_seen_by_ws_subscribers(client: Client) -> None:
    users, conv = await group(client, 2)
    s = await users[1].ws()
    await s.subscribe(conv["id"])
    r = await users[0].send(conv["id"], "from REST")
    frame = await s.until("message")
    assert frame["message"] == r.body["message"]
    await s.close()


async def test_typing_goes_to_others_and_presence_tracks_first_and_last_connection(client: Client) -> None:
    users, conv = await group(client, 2)
    cid = conv["id"]
    a, b = await users[0].ws(), await users[1].ws()
    _, sub = await a.subscribe(cid)
    assert [p["id"] for p in sub["present"]] == [users[0].id]
    _, sub = await b.subscribe(cid)
    assert {p["id"] for p in sub["present"]} == {users[0].id, users[1].id}
    joined = await a.until("presence")
    assert joined["state"] == "joined" and joined["user"]["id"] == users[1].id
    await b.send({"type": "typing", "conversation_id": cid, "state": True})
    t = await a.until("typing")
    assert t["user"]["id"] == users[1].id and t["state"] is True and t["conversation_id"] == cid
    assert [f for f in await b.quiet(0.2) if f["type"] == "typing"] == []
    b2 = await users[1].ws()
    await b2.subscribe(cid)
    await b.close()  # b2 still there: no "left"
    assert [f for f in await a.quiet(0.3) if f["type"] == "presence"] == []
    await b2.close()
    left = await a.until("presence")
    assert left["state"] == "left" and left["user"]["id"] == users[1].id
    await a.close()


async def test_typing_requires_a_subscription_and_a_boolean(client: Client) -> None:
    users, conv = await group(client, 1)
    s = await users[0].ws()
    await s.send({"type": "typing", "conversation_id": conv["id"], "state": True, "ref": 1})
    assert (await s.recv())["code"] == "invalid"
    await s.subscribe(conv["id"])
    await s.send({"type": "typing", "conversation_id": conv["id"], "state": "yes", "ref": 2})
    err = await s.recv()
    assert err["code"] == "invalid" and err["details"]["field"] == "state" and err["ref"] == 2
    await s.close()


async def test_settings_change_is_pushed_and_removal_stops_delivery(client: Client) -> None:
    users, conv = await group(client, 3)
    cid = conv["id"]
    b, c = await users[1].ws(), await users[2].ws()
    await b.subscribe(cid)
    await c.subscribe(cid)
    await users[0].call("PUT", f"/conversations/{cid}", {"title": "New title"})
    for s in (b, c):
        upd = await s.until("conversation.updated")
        assert upd["conversation"]["title"] == "New title"
    await users[0].call("DELETE", f"/conversations/{cid}/participants/{users[2].id}")
    gone = await c.until("conversation.updated")
    assert users[2].id not in [p["id"] for p in gone["conversation"]["participants"]]
    await users[0].send(cid, "after removal")
    assert (await b.until("message"))["message"]["content"] == "after removal"
    assert [f for f in await c.quiet(0.3) if f["type"] == "message"] == []
    await c.send({"type": "subscribe", "conversation_id": cid, "ref": 1})
    assert (await c.recv())["code"] == "not_found"
    await b.close()
    await c.close()


async def test_bad_frames_get_errors_and_the_socket_keeps_serving(client: Client) -> None:
    users, conv = await group(client, 1)
    s = await users[0].ws()
    cases = [
        ("not json", "bad_request", None),
        ("[1, 2]", "bad_request", None),
        (orjson.dumps({"type": "nope", "ref": "a"}).decode(), "invalid", "a"),
        (orjson.dumps({"ref": "b"}).decode(), "invalid", "b"),
        (orjson.dumps({"type": "subscribe", "conversation_id": "1", "ref": "c"}).decode(), "invalid", "c"),
        (orjson.dumps({"type": "subscribe", "conversation_id": conv["id"], "after": -1, "ref": "d"}).decode(),
         "invalid", "d"),
        (orjson.dumps({"type": "message.send", "conversation_id": conv["id"], "content": 5, "ref": "e"}).decode(),
         "invalid", "e"),
        (orjson.dumps({"type": "message.send", "conversation_id": conv["id"], "content": "x",
                       "model": "no:such", "ref": "f"}).decode(), "unknown_model", "f"),
        (orjson.dumps({"type": "ai.cancel", "reply_id": "nope", "ref": "g"}).decode(), "not_found", "g"),
        (orjson.dumps({"type": "ping", "ref": {"obj": 1}}).decode(), "invalid", None),
    ]
    for raw, code, ref in cases:
        await s.conn.send(raw)
        err = await s.recv()
        assert err["type"] == "error" and err["code"] == code, (raw, err)
        assert err.get("ref") == ref
    await s.send({"type": "ping", "ref": 9})
    assert await s.recv() == {"type": "pong", "ref": 9}
    page = await users[0].call("GET", f"/conversations/{conv['id']}/messages")
    assert page.body["messages"] == []
    await s.close()


async def test_oversize_frame_gets_too_large_then_1009(client: Client) -> None:
    u = await client.user()
    s = await u.ws()
    await s.conn.send("x" * (64 * 1024 + 1))
    err = await s.recv()
    assert err["code"] == "too_large"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await s.recv()
    assert closed.value.rcvd.code == 1009
    other = await u.ws()  # the server is fine
    await other.send({"type": "ping"})
    assert (await other.recv())["type"] == "pong"
    await other.close()


async def test_flood_is_rate_limited_then_closed_1008(database_url: str, http) -> None:
    async with running_server(database_url, ws_rate_per_second=5, ws_rate_burst=5, ws_rate_strikes=10) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        s = await u.ws()
        for i in range(40):
            try:
                await s.send({"type": "ping", "ref": i})
            except websockets.ConnectionClosed:
                break
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(await s.recv())
        assert closed.value.rcvd.code == 1008
        assert sum(f["type"] == "pong" for f in frames) == 5
        limited = [f for f in frames if f["type"] == "error"]
        assert limited and all(f["code"] == "rate_limited" and f["retry_after"] > 0 for f in limited)
        fine = await u.ws()  # another connection is served
        await fine.send({"type": "ping"})
        assert (await fine.recv())["type"] == "pong"
        await fine.close()


async def test_query_tokens_never_reach_the_logs(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    u = await client.user()
    with caplog.at_level("DEBUG"):
        async with websockets.connect(f"{client.ws_url}?token={u.token}") as ws:
            assert orjson.loads(await ws.recv())["type"] == "hello"
    server_lines = [r.getMessage() for r in caplog.records if r.name.startswith(("uvicorn", "chat"))]
    assert any("/ws" in line for line in server_lines)
    assert not any(u.token in line for line in server_lines)


async def test_invalid_utf8_closes_1007_and_logs_one_info_line_not_an_error(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    u = await client.user()
    proto = ClientProtocol(parse_uri(f"{client.ws_url}?token={u.token}"))
    host, port = client.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    with caplog.at_level("INFO"):
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))
        while proto.state is not State.OPEN:
            proto.receive_data(await reader.read(4096))
        proto.send_frame(Frame(Opcode.TEXT, b"\xff\xfe not utf-8"))
        writer.write(b"".join(proto.data_to_send()))
        code = None
        async with asyncio.timeout(5):
            while code is None and (data := await reader.read(4096)):
                proto.receive_data(data)
                for event in proto.events_received():
                    if getattr(event, "opcode", None) is Opcode.CLOSE:
                        code = Close.parse(event.data).code
        writer.close()
    assert code == 1007
    utf8 = [r for r in caplog.records if "Invalid UTF-8" in r.getMessage()]
    assert len(utf8) == 1 and utf8[0].levelname == "INFO" and utf8[0].exc_info is None
