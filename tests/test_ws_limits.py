"""Socket limits over real sockets: slow readers cut with 1013, per-user and per-socket caps, the
per-user send budget, allowed origins, and 1001 on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import orjson
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import Client, running_server


async def lazy_reader(srv: Any, token: str, cid: int) -> tuple[socket.socket, ClientProtocol]:
    """A client that never reads: a raw socket that does the handshake, subscribes, then only waits."""
    proto = ClientProtocol(parse_uri(srv.ws_url + f"?token={token}"))
    raw = socket.socket()
    # A fixed receive buffer (set before connect, larger than loopback's 64 KiB segments so the
    # window never stalls) keeps the kernel from buffering megabytes on the laggard's behalf.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    raw.connect(("127.0.0.1", srv.settings.port))
    proto.send_request(proto.connect())
    raw.sendall(b"".join(proto.data_to_send()))
    while proto.state is not State.OPEN:
        proto.receive_data(await asyncio.get_running_loop().run_in_executor(None, raw.recv, 4096))
    proto.send_text(orjson.dumps({"type": "subscribe", "conversation_id": cid}))
    raw.sendall(b"".join(proto.data_to_send()))
    return raw, proto


async def flood_until_cut(srv: Any, owner: Any, reader: Any, lazy_id: int, cid: int) -> None:
    """Send big messages until the server gives up on the lazy reader; the reader keeps up."""
    endpoint = srv.app.state.endpoint
    big = "x" * 15_000
    sent = 0
    while sent < 2000 and not any(conn.user.id == lazy_id and conn.closing for conn in endpoint.connections):
        r = await owner.send(cid, f"{sent} {big}")
        assert r.status == 201
        sent += 1
        frame = await reader.until("message")
        assert frame["message"]["seq"] == sent  # the reader never waits for the laggard
    assert sent < 2000


async def test_a_client_that_stops_reading_is_cut_with_1013_and_the_room_goes_on(database_url: str, http) -> None:
    async with running_server(database_url, ws_queue_frames=16, ws_close_timeout=10) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        owner, lazy = await c.user(), await c.user()
        conv = await owner.conversation(mode="group", with_ai=False, participant_usernames=[lazy.username])
        cid = conv["id"]
        reader = await owner.ws()
        await reader.subscribe(cid)
        raw, proto = await lazy_reader(srv, lazy.token, cid)
        await flood_until_cut(srv, owner, reader, lazy.id, cid)
        # Now read what the server sent the laggard: it ends with a close frame, code 1013.
        raw.setblocking(False)
        loop = asyncio.get_running_loop()
        code = None
        async with asyncio.timeout(10):
            while code is None:
                data = await loop.sock_recv(raw, 1 << 20)
                if not data:
                    break
                proto.receive_data(data)
                for event in proto.events_received():
                    if getattr(event, "opcode", None) is Opcode.CLOSE:
                        code = Close.parse(event.data).code
        raw.close()
        assert code == 1013
        await owner.send(cid, "still flowing")
        assert (await reader.until("message"))["message"]["content"] == "still flowing"
        await reader.close()


async def test_a_client_that_never_takes_its_close_frame_is_dropped_after_the_close_timeout(
        database_url: str, http) -> None:
    async with running_server(database_url, ws_queue_frames=16, ws_close_timeout=0.5) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        owner, lazy = await c.user(), await c.user()
        conv = await owner.conversation(mode="group", with_ai=False, participant_usernames=[lazy.username])
        reader = await owner.ws()
        await reader.subscribe(conv["id"])
        raw, _ = await lazy_reader(srv, lazy.token, conv["id"])
        await flood_until_cut(srv, owner, reader, lazy.id, conv["id"])
        endpoint = srv.app.state.endpoint
        async with asyncio.timeout(3):  # the close timeout, then the transport is aborted
            while any(conn.user.id == lazy.id for conn in endpoint.connections):
                await asyncio.sleep(0.05)
        # What the server and its kernel buffered for the laggard is gone with the connection:
        # reading now gets what its own receive buffer already held, then a reset.
        raw.setblocking(False)
        loop = asyncio.get_running_loop()
        received = 0
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(5):
                while data := await loop.sock_recv(raw, 1 << 20):
                    received += len(data)
        raw.close()
        assert received < 1_000_000
        await reader.close()


async def test_connections_per_user_are_capped(database_url: str, http) -> None:
    async with running_server(database_url, ws_max_connections_per_user=2) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        a, b = await u.ws(), await u.ws()
        async with websockets.connect(srv.ws_url, additional_headers={"Authorization": f"Bearer {u.token}"}) as ws:
            err = orjson.loads(await ws.recv())
            assert err["code"] == "rate_limited"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1008
        await a.close()
        again = await c.ws_when_free(u.token)  # a slot freed up
        await again.close()
        await b.close()


async def test_a_users_sends_share_one_budget_over_all_their_sockets_and_rest(database_url: str, http) -> None:
    async with running_server(database_url, send_rate_per_second=0.05, send_rate_burst=6) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u, other = await c.user(), await c.user()
        cid = (await u.conversation(with_ai=False))["id"]
        socks = [await u.ws() for _ in range(3)]
        answers = []
        for i in range(9):
            sock = socks[i % 3]
            await sock.send({"type": "message.send", "conversation_id": cid, "content": f"m{i}", "ref": i})
            answers.append((await sock.recv())["type"])
        assert answers == ["message.ack"] * 6 + ["error"] * 3
        assert (await u.send(cid, "by rest")).status == 429
        other_cid = (await other.conversation(with_ai=False))["id"]
        assert (await other.send(other_cid, "another user's budget")).status == 201
        for sock in socks:
            await sock.close()


async def test_subscriptions_per_socket_are_capped(database_url: str, http) -> None:
    async with running_server(database_url, ws_max_subscriptions=2) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        convs = [await u.conversation(with_ai=False) for _ in range(3)]
        s = await u.ws()
        await s.subscribe(convs[0]["id"])
        await s.subscribe(convs[1]["id"])
        await s.subscribe(convs[1]["id"])  # re-subscribing is not a new one
        await s.send({"type": "subscribe", "conversation_id": convs[2]["id"], "ref": 3})
        err = await s.recv()
        assert err["code"] == "invalid" and err["ref"] == 3
        await s.send({"type": "unsubscribe", "conversation_id": convs[0]["id"], "ref": 4})
        assert (await s.recv())["type"] == "unsubscribed"
        await s.subscribe(convs[2]["id"])
        await s.close()


async def test_origins_outside_the_allowed_list_are_refused(database_url: str, http) -> None:
    async with running_server(database_url, ws_allowed_origins=("https://chat.example",)) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(srv.ws_url, origin="https://evil.example",
                                     additional_headers={"Authorization": f"Bearer {u.token}"})
        assert refused.value.response.status_code == 403
        ok = await websockets.connect(srv.ws_url, origin="https://chat.example",
                                      additional_headers={"Authorization": f"Bearer {u.token}"})
        assert orjson.loads(await ok.recv())["type"] == "hello"
        await ok.close()


async def test_shutdown_closes_sockets_with_1001(database_url: str, http) -> None:
    async with running_server(database_url) as srv:
        c = Client(http, srv.base_url, srv.ws_url)
        u = await c.user()
        s = await u.ws()
        srv.server.should_exit = True
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await s.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
