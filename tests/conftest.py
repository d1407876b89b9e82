"""Test harness: a real PostgreSQL (embedded, or TEST_DATABASE_URL), real uvicorn servers on
127.0.0.1, and small HTTP / WebSocket clients that speak the contract."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import websockets

from server.app import create_app
from server.runner import ChatServer, embedded_database, uvicorn_config
from server.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Any:
    """A PostgreSQL server for the whole run: TEST_DATABASE_URL, else an embedded one."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="chat-test-") as tmp:
        url, stop = embedded_database(Path(tmp))
        try:
            yield url
        finally:
            stop()


async def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; returns its URL."""
    name = "chat_test_" + secrets.token_hex(6)
    con = await asyncpg.connect(server_url)
    try:
        await con.execute(f"CREATE DATABASE {name}")
    finally:
        await con.close()
    return _with_database(server_url, name)


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
async def database_url(postgres_url: str) -> str:
    return await fresh_database(postgres_url)


@dataclass
class Running:
    """A live server under test."""

    settings: Settings
    base_url: str
    ws_url: str
    app: Any
    server: ChatServer

    @property
    def node(self) -> Any:
        """The server's Node (the lifespan's state), for tests that look inside."""
        return self.server.lifespan.state["node"]


@contextlib.asynccontextmanager
async def running_server(database_url: str, **overrides: Any) -> AsyncIterator[Running]:
    port = free_port()
    base = dict(port=port, database_url=database_url, node_id=f"test-{port}", echo_delay=0.0,
                coalesce_ms=0.0, pool_min_size=1, pool_max_size=8, node_check_interval=3600,
                auth_rate_per_second=10_000, auth_rate_burst=10_000, send_rate_per_second=10_000,
                send_rate_burst=10_000)
    settings = Settings(**{**base, **overrides})
    app = create_app(settings)
    server = ChatServer(uvicorn_config(app, settings, loop="none"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited during startup")
        await asyncio.sleep(0.01)
    try:
        yield Running(settings, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[Running]:
    async with running_server(database_url) as running:
        yield running


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


class Client:
    """A contract-speaking HTTP client bound to one server (and optionally one user)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, ws_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.ws_url = ws_url

    async def call(self, method: str, path: str, token: str | None = None, json: Any = None,
                   data: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if json is not None:
            data = orjson.dumps(json)
            h.setdefault("Content-Type", "application/json")
        async with self.http.request(method, self.base_url + path, data=data, headers=h) as r:
            raw = await r.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = raw
            return Reply(r.status, body, r.headers)

    async def user(self, prefix: str = "u", display_name: str | None = None) -> User:
        name = f"{prefix}_{secrets.token_hex(4)}"
        body: dict[str, Any] = {"username": name, "password": "correct horse"}
        if display_name:
            body["display_name"] = display_name
        r = await self.call("POST", "/auth/register", json=body)
        assert r.status == 201, r.body
        return User(self, r.body["token"], r.body["user"])

    async def ws(self, token: str, **kwargs: Any) -> Socket:
        # An unbounded client queue: a test that leaves frames unread can still close promptly.
        kwargs.setdefault("max_queue", None)
        conn = await websockets.connect(self.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                                        **kwargs)
        sock = Socket(conn)
        hello = await sock.recv()
        assert hello["type"] == "hello", hello
        return sock

    async def ws_when_free(self, token: str, timeout: float = 5.0) -> Socket:
        """A socket for a user at the connection cap, once a freed slot has been counted (a
        close reaches the count after the client's close returns): refused ones are retried."""
        async with asyncio.timeout(timeout):
            while True:
                conn = await websockets.connect(self.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                                                max_queue=None)
                first = orjson.loads(await conn.recv())
                if first["type"] == "hello":
                    return Socket(conn)
                assert first["type"] == "error" and first["code"] == "rate_limited", first
                await conn.close()
                await asyncio.sleep(0.05)


class User:
    def __init__(self, client: Client, token: str, user: dict[str, Any]) -> None:
        self.client = client
        self.token = token
        self.info = user
        self.id: int = user["id"]
        self.username: str = user["username"]

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.client.call(method, path, self.token, json, **kw)

    async def conversation(self, **body: Any) -> dict[str, Any]:
        body.setdefault("title", "test room")
        r = await self.call("POST", "/conversations", body)
        assert r.status == 201, r.body
        return r.body

    async def send(self, cid: int, content: str, **extra: Any) -> Reply:
        return await self.call("POST", f"/conversations/{cid}/messages", {"content": content, **extra})

    async def ws(self, **kwargs: Any) -> Socket:
        return await self.client.ws(self.token, **kwargs)


class Socket:
    """A websockets client connection that speaks JSON frames."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.send(orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return orjson.loads(await asyncio.wait_for(self.conn.recv(), timeout))

    async def until(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Skip frames until one of this type (and matching fields) arrives."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
                    return frame

    async def collect(self, kinds: set[str], stop: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Frames of these types until `stop(frame)` is true (inclusive)."""
        out = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] in kinds:
                    out.append(frame)
                    if stop(frame):
                        return out

    async def quiet(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """Whatever arrives within `seconds` (to check that nothing does)."""
        out = []
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    out.append(orjson.loads(await self.conn.recv()))
        return out

    async def subscribe(self, cid: int, after: int | None = None, ref: Any = "s") -> tuple[list[dict], dict]:
        """Subscribe; returns (replayed message frames, the subscribed frame)."""
        frame: dict[str, Any] = {"type": "subscribe", "conversation_id": cid, "ref": ref}
        if after is not None:
            frame["after"] = after
        await self.send(frame)
        replay = []
        while True:
            f = await self.recv()
            if f["type"] == "subscribed":
                return replay, f
            if f["type"] == "error":
                raise AssertionError(f)
            if f["type"] == "message":
                replay.append(f)

    async def close(self) -> None:
        await self.conn.close()


async def redis_up(url: str) -> bool:
    import redis.asyncio as redis

    client = redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if await redis_up(self.url):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("SKIPPED LOUDLY: redis-server is not on the PATH (apt-get install redis-server)")
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def client(server: Running, http: aiohttp.ClientSession) -> Client:
    return Client(http, server.base_url, server.ws_url)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say loudly when the browser tests were skipped for want of a Chromium."""
    from tests.browser import SKIP_REASON

    skipped = [r for r in terminalreporter.stats.get("skipped", []) if SKIP_REASON in str(r.longrepr)]
    if skipped:
        bar = "!" * 78
        terminalreporter.write_line(bar, yellow=True, bold=True)
        terminalreporter.write_line(f"  {len(skipped)} BROWSER TESTS SKIPPED: {SKIP_REASON}", yellow=True, bold=True)
        terminalreporter.write_line(bar, yellow=True, bold=True)
