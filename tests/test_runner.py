"""run.py as an operator runs it: real processes, the embedded database in a data directory,
kill -9 (mid-burst, mid-reply, with and without the database), a second server on the
same directory, and when the URL is announced."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import urllib.request

import aiohttp
import psutil
import pytest

from tests.conftest import Client, free_port

RUN = Path(__file__).resolve().parent.parent / "run.py"


class Proc:
    """run.py in its own process, started in an empty working directory (no chat.toml)."""

    def __init__(self, data_dir: Path, cwd: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ("--log-level", "warning")) -> None:
        self.port = free_port()
        self.popen = subprocess.Popen(
            [sys.executable, str(RUN), "--data-dir", str(data_dir), "--port", str(self.port), *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHAT_CONFIG", "REDIS_URL")},
                 **(env or {})})
        self.output: list[str] = []

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """Read output lines until one contains `text`; fails if the process ends first."""
        deadline = time.monotonic() + timeout
        assert self.popen.stdout is not None
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline()
            if not line:
                raise AssertionError(f"run.py ended ({self.popen.poll()}) before {text!r}: {''.join(self.output)}")
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout}s: {''.join(self.output)}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(30)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    yield data, cwd
    pid_file = data / "postgres" / "postmaster.pid"
    if pid_file.exists():  # whatever a test left running
        try:
            psutil.Process(int(pid_file.read_text().split()[0])).kill()
        except (psutil.Error, ValueError):
            pass


def test_the_url_is_announced_once_the_server_answers_and_a_second_server_on_its_data_dir_refuses(
        dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    first = Proc(data, cwd)
    try:
        line = first.wait_for("Chat open at")
        assert f"http://localhost:{first.port}/" in line
        assert first.get("/readyz")[0] == 200  # announced only once it listens
        assert b"<html" in first.get("/")[1]
        second = Proc(data, cwd)
        assert second.popen.wait(30) == 1
        assert second.popen.stdout is not None
        said = second.popen.stdout.read()
        assert "another chat server" in said and str(data) in said and "--data-dir" in said
        assert first.get("/readyz")[0] == 200  # its database was left alone
    finally:
        first.stop()


def test_after_kill_9_of_the_server_and_its_database_the_next_start_serves_the_stored_data(
        dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    first = Proc(data, cwd)
    first.wait_for("Chat open at")
    req = urllib.request.Request(f"http://127.0.0.1:{first.port}/auth/register", method="POST",
                                 data=b'{"username": "kept", "password": "correct horse"}',
                                 headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=5).status == 201
    postmaster = psutil.Process(int((data / "postgres" / "postmaster.pid").read_text().split()[0]))
    os.kill(first.popen.pid, signal.SIGKILL)
    postmaster.kill()  # the whole machine went down: server and database together
    first.popen.wait(10)
    postmaster.wait(10)
    assert (data / "postgres" / "postmaster.pid").exists()  # what the crash left behind
    again = Proc(data, cwd)
    try:
        again.wait_for("Chat open at")
        req = urllib.request.Request(f"http://127.0.0.1:{again.port}/auth/token", method="POST",
                                     data=b'{"username": "kept", "password": "correct horse"}',
                                     headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=5).status == 200
    finally:
        again.stop()


def test_kill_9_mid_burst_and_mid_reply_loses_nothing_acknowledged_and_the_reply_ends_interrupted(
        dirs: tuple[Path, Path]) -> None:
    asyncio.run(_kill_mid_burst(*dirs))


async def _kill_mid_burst(data: Path, cwd: Path) -> None:
    env = {"CHAT_ECHO_DELAY": "0.05", "CHAT_REPLY_CHECKPOINT_INTERVAL": "0.3",
           "CHAT_WS_RATE_PER_SECOND": "100000", "CHAT_WS_RATE_BURST": "100000",
           "CHAT_SEND_RATE_PER_SECOND": "100000", "CHAT_SEND_RATE_BURST": "100000"}
    first = Proc(data, cwd, env)
    first.wait_for("Chat open at")
    base = f"http://127.0.0.1:{first.port}"
    async with aiohttp.ClientSession() as http:
        c = Client(http, base, f"ws://127.0.0.1:{first.port}/ws")
        u = await c.user()
        conv = await u.conversation()
        cid = conv["id"]
        sock = await u.ws()
        await sock.subscribe(cid)
        words = " ".join(f"w{i}" for i in range(200))  # echo streams it back for ~10 s
        await sock.send({"type": "message.send", "conversation_id": cid, "content": words, "client_id": "ai",
                         "ref": "ai"})
        sends = [f"m{i}" for i in range(300)]
        for name in sends:
            await sock.send({"type": "message.send", "conversation_id": cid, "content": name, "client_id": name,
                             "ai": False, "ref": name})
        acked: set[str] = set()
        deltas = 0
        async with asyncio.timeout(20):
            while len(acked) < 100 or deltas < 20:  # past a checkpoint or two
                frame = await sock.recv()
                if frame["type"] == "message.ack":
                    acked.add(frame["client_id"])
                deltas += frame["type"] == "ai.delta"
        os.kill(first.popen.pid, signal.SIGKILL)  # mid-burst and mid-reply
        first.popen.wait(10)
    again = Proc(data, cwd, env)
    try:
        again.wait_for("Chat open at")
        async with aiohttp.ClientSession() as http:
            c = Client(http, f"http://127.0.0.1:{again.port}", f"ws://127.0.0.1:{again.port}/ws")
            sock = await c.ws(u.token)
            # The client resends whatever was not acknowledged, with the same client_ids.
            for name in [s for s in sends if s not in acked]:
                await sock.send({"type": "message.send", "conversation_id": cid, "content": name,
                                 "client_id": name, "ai": False, "ref": name})
            async with asyncio.timeout(20):
                while len(acked) < len(sends) + 1:
                    frame = await sock.recv()
                    if frame["type"] == "message.ack":
                        acked.add(frame["client_id"])
            replay, sub = await sock.subscribe(cid, after=0)
            stored = [f["message"] for f in replay]
            assert sub["recovered"] is True
            assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))  # gap-free
            user_ids = [m["client_id"] for m in stored if m["role"] == "user"]
            assert sorted(user_ids) == sorted(["ai", *sends])  # every one exactly once
            replies = [m for m in stored if m["role"] == "assistant"]
            assert len(replies) == 1 and replies[0]["status"] == "interrupted"
            assert replies[0]["content"] and words.startswith(replies[0]["content"])  # its text, up to a checkpoint
            await sock.close()
    finally:
        again.stop()


def test_json_logs_are_one_object_per_line_naming_the_request_and_never_a_token(dirs: tuple[Path, Path]) -> None:
    data, cwd = dirs
    proc = Proc(data, cwd, args=("--log-format", "json"))
    try:
        proc.wait_for("Chat open at")
        req = urllib.request.Request(f"http://127.0.0.1:{proc.port}/auth/register", method="POST",
                                     data=b'{"username": "jay", "password": "correct horse"}',
                                     headers={"Content-Type": "application/json"})
        token = json.loads(urllib.request.urlopen(req, timeout=5).read())["token"]
        status, _ = proc.get(f"/me?token={token}")  # a token in a query string must not reach the log
        assert status == 401
        line = proc.wait_for("path=/me")
    finally:
        proc.stop()
    assert proc.popen.stdout is not None
    rest = proc.popen.stdout.read()
    lines = [ln for ln in "".join(proc.output).splitlines() + rest.splitlines() if ln.startswith("{")]
    objects = [json.loads(ln) for ln in lines]
    assert all({"time", "level", "logger", "message"} <= o.keys() for o in objects)
    access = json.loads(line)
    assert access["logger"] == "chat.access" and len(access["request"]) == 12
    assert token not in "".join(proc.output) + rest and "password" not in rest


def test_workers_serve_one_port_as_one_server_and_stop_with_everything_they_started(
        dirs: tuple[Path, Path]) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("SKIPPED LOUDLY: --workers needs redis-server on the PATH (apt-get install redis-server)")
    data, cwd = dirs
    parent = Proc(data, cwd, args=("--workers", "2", "--log-level", "warning"))
    try:
        assert "2 worker processes" in parent.wait_for("Chat open at")
        workers = {json.loads(parent.get("/healthz")[1])["worker"] for _ in range(40)}
        assert workers == {0, 1}  # SO_REUSEPORT spreads new connections over both
        asyncio.run(_one_room_over_two_workers(parent.port))
        children = psutil.Process(parent.popen.pid).children()
        postmaster = psutil.Process(int((data / "postgres" / "postmaster.pid").read_text().split()[0]))
        assert len([c for c in children if "redis-server" in c.name()]) == 1
    finally:
        parent.stop()
    assert parent.popen.returncode == 0
    for proc in [*children, postmaster]:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


async def _one_room_over_two_workers(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        c = Client(http, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws")
        owner = await c.user()
        conv = await owner.conversation(with_ai=False, mode="group")
        socks = [await owner.ws() for _ in range(6)]  # over both workers, almost surely (2^-5)
        for sock in socks:
            await sock.subscribe(conv["id"])
        for i in range(5):
            assert (await owner.send(conv["id"], f"m{i}", ai=False)).status == 201
        for sock in socks:
            frames = await sock.collect({"message"}, lambda f: f["message"]["seq"] == 5, timeout=10)
            assert [f["message"]["content"] for f in frames] == [f"m{i}" for i in range(5)]
            await sock.close()
