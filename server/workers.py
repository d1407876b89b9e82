"""Workers: `run.py --workers N` runs N server processes on one port as one server.

The parent owns what they share — the embedded database (and its data-dir lock) and, unless
a Redis URL is given, a private `redis-server` on loopback with its data in the data
directory — and supervises the workers: it starts them, announces the URL once all of them
listen, restarts one that dies, and on SIGTERM/SIGINT stops them and then what they share.
Each worker binds the port with SO_REUSEPORT (the kernel spreads connections over them)
and is its own node: `CHAT_NODE_ID` ends in its index, so its next start marks its own
unfinished replies `interrupted`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("chat.workers")

WORKER_ENV = "CHAT_WORKER_INDEX"  # set in a worker: which one it is
READY_ENV = "CHAT_READY_FD"  # a pipe a worker writes one byte to once it listens


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket several processes can bind to the same address (each accepts its own share)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def tell_ready() -> None:
    """In a worker: tell the parent this one listens."""
    fd = os.environ.get(READY_ENV)
    if fd:
        os.write(int(fd), b"1")


class PrivateRedis:
    """A redis-server of the parent's own: loopback only, a free port, its files in data_dir/redis."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir.resolve() / "redis"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self, timeout: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        self.url = f"redis://127.0.0.1:{port}/0"
                        return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


class Workers:
    """Start, watch and stop N copies of `run.py` (same arguments) as workers."""

    def __init__(self, count: int, argv: list[str], env: dict[str, str], node_id: str) -> None:
        self.count = count
        self.argv = argv
        self.env = env
        self.node_id = node_id
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._stopping = False

    def _spawn(self, index: int, ready_fd: int) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.env, WORKER_ENV: str(index), READY_ENV: str(ready_fd),
               "CHAT_NODE_ID": f"{self.node_id}:{index}"}
        return subprocess.Popen([sys.executable, *self.argv], env=env, pass_fds=(ready_fd,))

    def run(self, announce: Any, ready_timeout: float = 60.0) -> int:
        """Until SIGTERM/SIGINT: all workers up, the URL announced, dead ones restarted."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        read_end, write_end = os.pipe()
        try:
            for i in range(self.count):
                self.procs[i] = self._spawn(i, write_end)
            deadline = time.monotonic() + ready_timeout
            ready = 0
            os.set_blocking(read_end, False)
            while ready < self.count and not self._stopping:
                if time.monotonic() > deadline or any(p is not None and p.poll() is not None for p in self.procs):
                    log.error("not every worker started; stopping")
                    return 1
                try:
                    ready += len(os.read(read_end, 64))
                except BlockingIOError:
                    time.sleep(0.05)
            if not self._stopping:
                announce()
            while not self._stopping:
                time.sleep(0.25)
                for i, proc in enumerate(self.procs):
                    if proc is not None and proc.poll() is not None and not self._stopping:
                        log.error("worker %d exited with %s; starting it again", i, proc.returncode)
                        self.procs[i] = self._spawn(i, write_end)
            return 0
        finally:
            self._shutdown()
            os.close(read_end)
            os.close(write_end)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _shutdown(self, timeout: float = 15.0) -> None:
        """SIGTERM each worker (it closes its sockets with 1001 and stores partial replies), then wait."""
        self._stopping = True
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
