"""run.py as an operator runs it: real processes, the embedded database in a data directory,
kill -9, a second server on the same directory, and when the URL is announced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import urllib.request

from tests.conftest import free_port

RUN = Path(__file__).resolve().parent.parent / "run.py"


class Proc:
    """run.py in its own process, started in an empty working directory (no chat.toml)."""

    def __init__(self, data_dir: Path, cwd: Path) -> None:
        self.port = free_port()
        self.popen = subprocess.Popen(
            [sys.executable, str(RUN), "--data-dir", str(data_dir), "--port", str(self.port), "--log-level", "warning"],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CHAT_CONFIG", "REDIS_URL")})
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
